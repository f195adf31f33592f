//! Liveness as this node judges it: the heartbeat table and its
//! phi-accrual verdicts ([`liveness`](super::liveness), pure), this node's
//! own last call to each peer, and the signal that a node came back.
//!
//! The detector keeps time as milliseconds since the process started, on
//! tokio's clock, which the simulation drives. The gossip that fills the
//! table is [`Cluster::beat_once`](super::Cluster::beat_once).

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::liveness::{Beat, Heartbeats, Verdict};
use crate::error::{Error, Result};

/// Most entries a heartbeat table from a peer may hold.
const MAX_BEATS: usize = 1 << 16;

/// How a node sees another, for `/cluster` and for ordering replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Down,
    Unknown,
}

pub struct FailureDetector {
    heartbeats: Mutex<Heartbeats>,
    /// Per node: whether this node's own last call to it worked, and why
    /// not when it failed.
    calls: Mutex<HashMap<String, Result<(), String>>>,
    /// The verdicts at the last gossip round, to see changes.
    verdicts: Mutex<HashMap<String, Verdict>>,
    /// Signalled when a node the detector held down beats again.
    returned: tokio::sync::Notify,
    started: Instant,
}

impl FailureDetector {
    /// `generation` is this process's start (ms since the epoch), so a
    /// restarted node's beats outrank those of its previous life.
    pub fn new(me: &str, generation: u64, gossip_ms: u64, phi_threshold: f64) -> FailureDetector {
        FailureDetector {
            heartbeats: Mutex::new(Heartbeats::new(me, generation, gossip_ms, phi_threshold)),
            calls: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(HashMap::new()),
            returned: tokio::sync::Notify::new(),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records whether `node` answered this node's call, and the error
    /// when it did not (what a request it holds down is told).
    pub fn observe<T>(&self, node: &str, reply: &Result<T>) {
        let seen = reply.as_ref().map(|_| ()).map_err(Error::to_string);
        self.calls.lock().insert(node.to_string(), seen);
    }

    /// Why this node's last call to `node` failed, if it did.
    pub fn last_failure(&self, node: &str) -> Option<String> {
        self.calls.lock().get(node)?.clone().err()
    }

    /// Whether `node` is up, as the failure detector judges its
    /// heartbeats; before any heartbeat is heard, as this node's own last
    /// call to it went.
    pub fn liveness(&self, node: &str) -> Liveness {
        match self.heartbeats.lock().verdict(node, self.now_ms()) {
            Verdict::Up => return Liveness::Up,
            Verdict::Down => return Liveness::Down,
            Verdict::Unknown => {}
        }
        match self.calls.lock().get(node) {
            Some(Ok(())) => Liveness::Up,
            Some(Err(_)) => Liveness::Down,
            None => Liveness::Unknown,
        }
    }

    /// The suspicion of `node` now (none before a heartbeat).
    pub fn phi(&self, node: &str) -> Option<f64> {
        self.heartbeats.lock().phi(node, self.now_ms())
    }

    /// Resolves when a node the detector held down beats again, or a node
    /// is heard in a new process (its first beat here, or a restart,
    /// however brief); at once if either happened since the last call.
    /// Hints wait for this.
    pub async fn returned(&self) {
        self.returned.notified().await;
    }

    /// Raises this node's heartbeat; the table to gossip.
    pub fn tick(&self) -> Vec<Beat> {
        let mut table = self.heartbeats.lock();
        table.tick();
        table.beats()
    }

    /// Merges a peer's heartbeat table, keeping only `peers`; answers with
    /// this node's.
    pub fn heard(&self, beats: &[Beat], peers: &[String]) -> Result<Vec<Beat>> {
        if beats.len() > MAX_BEATS {
            return Err(Error::Protocol(format!(
                "a heartbeat table of {} entries; at most {MAX_BEATS}",
                beats.len()
            )));
        }
        let now = self.now_ms();
        let mut table = self.heartbeats.lock();
        let merged = table.merge(beats, now, |node| peers.iter().any(|p| p == node));
        for node in &merged.new_lives {
            tracing::debug!(%node, "heard a new process (first beat or a restart)");
        }
        if !merged.new_lives.is_empty() {
            self.returned.notify_one();
        }
        Ok(table.beats())
    }

    /// Logs every peer whose verdict changed since the last round, and
    /// wakes what waits for a return.
    pub fn note_changes(&self, peers: Vec<String>) {
        let now = self.now_ms();
        let table = self.heartbeats.lock();
        let mut verdicts = self.verdicts.lock();
        verdicts.retain(|node, _| peers.contains(node));
        for peer in peers {
            let verdict = table.verdict(&peer, now);
            let before = verdicts.insert(peer.clone(), verdict);
            match (before, verdict) {
                (Some(Verdict::Down), Verdict::Up) => {
                    tracing::info!(node = %peer, "is up again (heartbeats resumed)");
                    self.returned.notify_one();
                }
                (Some(Verdict::Up), Verdict::Down) => {
                    let phi = table.phi(&peer, now).unwrap_or_default();
                    tracing::warn!(node = %peer, phi, "is down (no heartbeat; phi over ring.phi_threshold)");
                }
                _ => {}
            }
        }
    }

    /// Forgets the heartbeats of nodes no longer in the ring.
    pub fn retain(&self, peers: &[String]) {
        self.heartbeats
            .lock()
            .retain(|node| peers.iter().any(|p| p == node));
    }
}
