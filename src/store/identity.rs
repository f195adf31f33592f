//! The node's actor and its dot counter.
//!
//! # Why every life is a new actor
//!
//! A dot names one write forever. If a node ever minted a dot it had
//! minted before, the second write would look already seen wherever the
//! first one is (dropped there, acknowledged or not), or its context would
//! cover and delete a sibling it never saw. That is Riak's kv679. A counter
//! kept on disk cannot prevent it: a disk restored from a backup or a VM
//! snapshot, a data directory copied back, a file system that loses its
//! unsynced tail, all bring back a counter below dots other replicas
//! already hold, and nothing on the node can tell such a disk from a
//! current one (a copy of a cleanly stopped node looks exactly like it).
//!
//! So the counter is never trusted across a restart: every start of the
//! node is a new *incarnation*, a random 64-bit number, and the actor that
//! mints is (node id, incarnation) with a counter that starts at zero and
//! lives only in memory. Whatever the disk holds, no dot of this life can
//! equal a dot of another (two lives would have to draw the same 64-bit
//! number). Nothing on the write path touches the disk for it.
//!
//! The price is one version-vector entry per life of a node that
//! coordinated a write to a key (docs/consistency.md works out the sizes).
//! Riak's per-key epochs (a new actor when the local copy of a key is
//! missing, asking the replicas for the node's highest dot) exist because
//! Riak's counters are per key and taken from the local copy; a node-wide
//! counter that restarts with every life needs neither.
//!
//! `<data_dir>/identity.json` keeps the node id the directory belongs to
//! (a node refuses another node's directory) and its recent lives, for
//! operators: `{"node": "n1", "incarnation": <this life>, "started_ms": …,
//! "lives": [<earlier incarnations, newest first>]}`. A record written by an
//! older chorus (`{"node", "incarnation", "lease"}`) is read the same way.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::version::{Actor, Dot, VersionVector};

const FILE: &str = "identity.json";
/// Earlier lives kept in the record (it is for reading, not for safety).
const LIVES_KEPT: usize = 32;

#[derive(Serialize, Deserialize)]
struct Record {
    node: String,
    incarnation: u64,
    #[serde(default)]
    started_ms: u64,
    #[serde(default)]
    lives: Vec<u64>,
}

/// Mints this node's dots. One per node, shared by every key.
pub struct Identity {
    actor: Actor,
    counter: AtomicU64,
}

impl Identity {
    /// The identity of a new life of the node whose data directory is
    /// `dir`: a fresh incarnation, recorded in the directory (which must be
    /// this node's, or new).
    pub fn load(dir: &Path, node: &str) -> Result<Identity> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join(FILE);
        let mut lives = match std::fs::read(&file) {
            Ok(bytes) => {
                let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Storage(format!(
                        "{} is corrupt ({e}); restore it or wipe the data directory",
                        file.display()
                    ))
                })?;
                if record.node != node {
                    return Err(Error::config(
                        "--node",
                        format!(
                            "{} belongs to node `{}`, not `{node}`; each node needs its own data_dir",
                            dir.display(),
                            record.node
                        ),
                    ));
                }
                let mut lives = record.lives;
                lives.insert(0, record.incarnation);
                lives.truncate(LIVES_KEPT);
                lives
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let incarnation = fresh_incarnation(&lives);
        let record = Record {
            node: node.to_string(),
            incarnation,
            started_ms: crate::clock::system_ms(),
            lives: std::mem::take(&mut lives),
        };
        super::write_json_synced(&file, &record)?;
        tracing::info!(
            node,
            incarnation = format_args!("{incarnation:x}"),
            earlier_lives = record.lives.len(),
            "a new incarnation for this life"
        );
        Ok(Identity::in_memory(node, incarnation))
    }

    /// An identity that lives only in memory (the in-memory engine): a new
    /// incarnation every time.
    pub fn ephemeral(node: &str) -> Identity {
        Identity::in_memory(node, fresh_incarnation(&[]))
    }

    /// An identity in memory with a chosen incarnation (the simulation
    /// derives it from its seed).
    pub fn in_memory(node: &str, incarnation: u64) -> Identity {
        Identity {
            actor: Actor::new(node, incarnation),
            counter: AtomicU64::new(0),
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// A dot never handed out before, with a counter of at least `floor`.
    pub fn mint(&self, floor: u64) -> Dot {
        let next = |c: u64| c.saturating_add(1).max(floor);
        // The closure never refuses, so the update always succeeds.
        let previous = self
            .counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| Some(next(c)))
            .unwrap_or_else(|c| c);
        Dot::new(self.actor.clone(), next(previous))
    }

    /// Raises the counter to what `vv` has seen of this actor. A set that
    /// arrives holding a dot of this life above the counter means the node
    /// forgot what it minted (no disk can do that to an in-memory counter;
    /// a process image restored from a snapshot could): minting from above
    /// it keeps every later dot new. Returns whether the counter moved.
    pub fn witness(&self, vv: &VersionVector) -> bool {
        let seen = vv.get(&self.actor);
        let before = self.counter.fetch_max(seen, Ordering::SeqCst);
        if seen > before {
            metrics::counter!(crate::metrics::DOT_COUNTER_RAISED_TOTAL).increment(1);
            tracing::error!(
                actor = %self.actor,
                counter = before,
                seen,
                "a replica holds a dot of this life that it never minted as far as it knows; minting from above it"
            );
            true
        } else {
            false
        }
    }
}

/// A random incarnation that is none of `earlier` (only the 64-bit draw
/// decides; the check makes the one-in-2^64 case impossible for the lives
/// this directory remembers).
fn fresh_incarnation(earlier: &[u64]) -> u64 {
    loop {
        let candidate: u64 = rand::random();
        if candidate != 0 && !earlier.contains(&candidate) {
            return candidate;
        }
    }
}
