//! Membership: who is in the ring, how a node finds a key's replicas, and
//! how data follows ownership when the ring changes.
//!
//! A [`Cluster`] is a node's view of the ring, shared by every task:
//!
//! - the [members document](crate::ring::Members), persisted in
//!   `data_dir/members.json`, spread by gossip (one random peer every
//!   `ring.gossip_ms`, and every member at once after a local change) and
//!   merged with its CRDT merge, so all nodes converge on one document;
//! - the placement derived from it ([`Cluster::preference_list`]);
//! - the Chord router, driven over the peer transport ([`routing`]), which
//!   finds a replica for a request that reached a node outside the key's
//!   preference list, with a lookup cache for the steady state;
//! - liveness ([`liveness`]): a heartbeat table gossiped to
//!   `ring.gossip_fanout` random peers every `ring.gossip_ms`, and a
//!   phi-accrual failure detector per member ([`Cluster::liveness`]);
//! - ownership handoff ([`handoff`]): after a change, each node pushes the
//!   ranges it holds to their new owners and, once they confirm, drops what
//!   it no longer owns.
//!
//! Changes are intents: [`Cluster::admit`] (a join through this node),
//! [`Cluster::set_status`] (leave, remove). A node that stops answering is
//! not removed: routing goes around it and it keeps its ranges.

pub mod handoff;
pub mod leave;
pub mod liveness;
pub mod routing;
pub mod rpc;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::peer::{Transport, http::Addresses};
use crate::ring::{
    ChordConfig, LookupCache, Member, Members, Position, Ring, Router, Status, Vnode, position,
};
use liveness::{Beat, Heartbeats, Verdict};

/// Most entries a heartbeat table from a peer may hold.
const MAX_BEATS: usize = 1 << 16;

/// Ranges the lookup cache holds before it starts over.
const CACHE_RANGES: usize = 65_536;

pub struct Cluster {
    me: String,
    n: usize,
    tokens: usize,
    chord: ChordConfig,
    state: RwLock<State>,
    addresses: Addresses,
    router: Mutex<Router<String>>,
    cache: Mutex<LookupCache<String>>,
    /// Per node: whether this node's own last call to it worked, and why
    /// not when it failed.
    liveness: Mutex<HashMap<String, Result<(), String>>>,
    heartbeats: Mutex<Heartbeats>,
    /// The detector's verdicts at the last gossip round, to see changes.
    verdicts: Mutex<HashMap<String, Verdict>>,
    /// Signalled when a node the detector held down beats again.
    returned: tokio::sync::Notify,
    fanout: usize,
    /// The detector's clock: ms since this process started (tokio's clock,
    /// which the simulation drives).
    started: Instant,
    /// Every random choice: seeded by the simulation, else by the OS.
    rng: Mutex<SmallRng>,
    transport: Arc<dyn Transport>,
    persist: Option<PathBuf>,
    /// Bumped on every change of the members document.
    changes: watch::Sender<u64>,
    /// The members document as last logged, to log what each change changed.
    logged: Mutex<Members>,
    /// This node's wall clock.
    clock: Clock,
}

struct State {
    members: Members,
    ring: Arc<Ring>,
}

/// How a node sees another, for `/cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Down,
    Unknown,
}

impl Cluster {
    /// The members this node starts with: its saved document, else the
    /// config's initial nodes (`None` when it will join and has none yet).
    pub fn load_members(config: &Config, persist: Option<&PathBuf>) -> Result<Members> {
        if let Some(path) = persist
            && path.exists()
        {
            let text = std::fs::read_to_string(path)?;
            let members: Members = serde_json::from_str(&text)
                .map_err(|e| Error::Storage(format!("{} is corrupt: {e}", path.display())))?;
            return Ok(members);
        }
        let initial = config.nodes.iter().filter(|n| n.initial);
        Ok(Members::initial(
            initial.map(|n| {
                (
                    n.id.as_str(),
                    n.listen.as_str(),
                    n.zone.as_deref(),
                    n.weight,
                )
            }),
            config.ring.tokens,
        ))
    }

    /// `seed` seeds the random choices (the simulation's replay); `clock`
    /// is this node's wall clock.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: &str,
        config: &Config,
        members: Members,
        transport: Arc<dyn Transport>,
        addresses: Addresses,
        persist: Option<PathBuf>,
        seed: Option<u64>,
        clock: Clock,
    ) -> Arc<Cluster> {
        let chord = ChordConfig {
            successors: config.ring.successors,
            fingers_per_tick: config.ring.fingers_per_tick,
        };
        let logged = Mutex::new(members.clone());
        let cluster = Cluster {
            me: me.to_string(),
            n: config.cluster.n,
            tokens: config.ring.tokens,
            chord,
            state: RwLock::new(State {
                ring: Arc::new(members.ring()),
                members,
            }),
            addresses,
            router: Mutex::new(Router::new(me.to_string(), &[], chord)),
            cache: Mutex::new(LookupCache::new(CACHE_RANGES)),
            liveness: Mutex::new(HashMap::new()),
            heartbeats: Mutex::new(Heartbeats::new(
                me,
                // The generation: this process's start, so a restarted
                // node's beats outrank those of its previous life.
                clock.generation(),
                config.ring.gossip_ms,
                config.ring.phi_threshold,
            )),
            verdicts: Mutex::new(HashMap::new()),
            returned: tokio::sync::Notify::new(),
            fanout: config.ring.gossip_fanout,
            started: Instant::now(),
            rng: Mutex::new(seed.map_or_else(
                || SmallRng::from_rng(&mut rand::rng()),
                SmallRng::seed_from_u64,
            )),
            transport,
            persist,
            changes: watch::channel(0).0,
            logged,
            clock,
        };
        cluster.refresh();
        Arc::new(cluster)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// This node's wall clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    pub fn members(&self) -> Members {
        self.state.read().members.clone()
    }

    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.state.read().ring)
    }

    /// The nodes that hold `key`, in preference order.
    pub fn preference_list(&self, key: &str) -> Vec<String> {
        let ring = self.ring();
        ring.preference_list(position(key.as_bytes()), self.n)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The nodes after `key`'s preference list along the ring, in order,
    /// those the failure detector holds down last: where its writes go
    /// when a primary cannot be reached.
    pub fn fallbacks(&self, key: &str) -> Vec<String> {
        let ring = self.ring();
        let all = ring.preference_list(position(key.as_bytes()), ring.owners().len());
        let mut fallbacks: Vec<String> = all.into_iter().skip(self.n).map(str::to_string).collect();
        fallbacks.sort_by_key(|node| self.liveness(node) == Liveness::Down);
        fallbacks
    }

    /// Resolves when a node the failure detector held down beats again, or
    /// a node is heard in a new process (its first beat here, or a
    /// restart, however brief); at once if either happened since the last
    /// call. Hints wait for this.
    pub async fn returned(&self) {
        self.returned.notified().await;
    }

    /// Changes of the members document, for the tasks that follow them.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Merges a members document from a peer; true if ours changed.
    pub fn apply(&self, incoming: &Members) -> Result<bool> {
        incoming.check()?;
        let changed = self.state.write().members.merge(incoming);
        if changed {
            self.changed()?;
        }
        Ok(changed)
    }

    /// Admits a node joining through this one and tells every member.
    pub fn admit(&self, id: &str, addr: &str, zone: Option<&str>, weight: u32) -> Result<Members> {
        validate_join(id, addr, weight)?;
        let changed = {
            let mut state = self.state.write();
            let before = state.members.get(id).map(|m| (m.version, m.status));
            if let Some((_, Status::Leaving)) = before {
                return Err(Error::Membership(format!(
                    "`{id}` is leaving; let it finish, then join again"
                )));
            }
            let after = state.members.admit(id, addr, zone, weight, self.tokens);
            before != Some((after.version, after.status))
        };
        if changed {
            self.changed()?;
            self.push_to_all();
        }
        Ok(self.members())
    }

    /// Moves a member to `status` (leave, remove) and tells every member.
    pub fn set_status(&self, id: &str, status: Status) -> Result<bool> {
        let changed = {
            let mut state = self.state.write();
            if state.members.get(id).is_none() {
                return Err(Error::UnknownNode(id.to_string()));
            }
            state.members.set_status(id, status)
        };
        if changed {
            self.changed()?;
            self.push_to_all();
        }
        Ok(changed)
    }

    /// Records this node's own address (it may have moved since it joined).
    pub fn set_own_addr(&self, addr: &str) -> Result<()> {
        let changed = self.state.write().members.set_addr(&self.me, addr);
        if changed {
            self.changed()?;
            self.push_to_all();
        }
        Ok(())
    }

    /// Writes the members document to disk (at first start).
    pub fn save(&self) -> Result<()> {
        if let Some(path) = &self.persist {
            crate::store::write_json_synced(path, &self.members())?;
        }
        Ok(())
    }

    /// Records whether `node` answered this node's call, and the error
    /// when it did not (what a request it holds down is told).
    pub fn observe<T>(&self, node: &str, reply: &Result<T>) {
        let seen = reply.as_ref().map(|_| ()).map_err(Error::to_string);
        self.liveness.lock().insert(node.to_string(), seen);
    }

    /// Why this node's last call to `node` failed, if it did.
    pub fn last_failure(&self, node: &str) -> Option<String> {
        self.liveness.lock().get(node)?.clone().err()
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
        match self.liveness.lock().get(node) {
            Some(Ok(())) => Liveness::Up,
            Some(Err(_)) => Liveness::Down,
            None => Liveness::Unknown,
        }
    }

    /// The detector's suspicion of `node` now (none before a heartbeat).
    pub fn phi(&self, node: &str) -> Option<f64> {
        self.heartbeats.lock().phi(node, self.now_ms())
    }

    /// The node's random choices (peers to gossip and exchange with).
    pub fn rng(&self) -> parking_lot::MutexGuard<'_, SmallRng> {
        self.rng.lock()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Merges a peer's heartbeat table; answers with this node's.
    pub fn heard(&self, beats: &[Beat]) -> Result<Vec<Beat>> {
        if beats.len() > MAX_BEATS {
            return Err(Error::Protocol(format!(
                "a heartbeat table of {} entries; at most {MAX_BEATS}",
                beats.len()
            )));
        }
        let peers = self.peers();
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

    /// One round of liveness gossip: raise the heartbeat, push-pull the
    /// table with `ring.gossip_fanout` random peers.
    pub async fn beat_once(&self) {
        let beats = {
            let mut table = self.heartbeats.lock();
            table.tick();
            table.beats()
        };
        let peers: Vec<String> = self
            .peers()
            .choose_multiple(&mut *self.rng(), self.fanout)
            .cloned()
            .collect();
        let calls = peers.iter().map(|peer| {
            let call = self.transport.rpc(peer, rpc::Beats(beats.clone()));
            async move { (peer, call.await) }
        });
        for (peer, reply) in futures_util::future::join_all(calls).await {
            match reply {
                Ok(rpc::Beats(theirs)) => {
                    if let Err(e) = self.heard(&theirs) {
                        tracing::warn!(%peer, error = %e, "a heartbeat table was refused");
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "heartbeat gossip failed"),
            }
        }
        self.note_changes();
    }

    /// Logs every member whose verdict changed since the last round, and
    /// wakes what waits for a return.
    fn note_changes(&self) {
        let now = self.now_ms();
        let peers = self.peers();
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

    /// One round of gossip with a random other member.
    pub async fn gossip_once(&self) {
        let peers = self.peers();
        let Some(peer) = peers.choose(&mut *self.rng()).cloned() else {
            return;
        };
        self.gossip_with(&peer).await;
    }

    /// Sends our document to every other member, in the background.
    pub fn push_to_all(&self) {
        for peer in self.peers() {
            let call = self.transport.rpc(&peer, rpc::Gossip(self.members()));
            tokio::spawn(async move {
                let _ = call.await;
            });
        }
    }

    /// Sends our document to every other member and waits (for a leaving
    /// node's last word).
    pub async fn push_to_all_and_wait(&self) {
        let calls: Vec<_> = self
            .peers()
            .into_iter()
            .map(|peer| self.transport.rpc(&peer, rpc::Gossip(self.members())))
            .collect();
        for call in calls {
            let _ = call.await;
        }
    }

    async fn gossip_with(&self, peer: &str) {
        let reply = self.transport.rpc(peer, rpc::Gossip(self.members())).await;
        self.observe(peer, &reply);
        match reply {
            Ok(theirs) => {
                if let Err(e) = self.apply(&theirs) {
                    tracing::warn!(%peer, error = %e, "a gossiped members document was refused");
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "gossip failed"),
        }
    }

    /// Every member other than this node that is still in the ring.
    fn peers(&self) -> Vec<String> {
        self.state
            .read()
            .members
            .iter()
            .filter(|m| m.id != self.me && m.status != Status::Removed)
            .map(|m| m.id.clone())
            .collect()
    }

    /// After a change: persist, recompute placement, reseed routing, tell the followers.
    fn changed(&self) -> Result<()> {
        self.refresh();
        self.save()?;
        self.log_changes();
        metrics::counter!(crate::metrics::RING_CHANGES_TOTAL).increment(1);
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Logs one line per member whose entry changed since the last call.
    fn log_changes(&self) {
        let now = self.members();
        let mut logged = self.logged.lock();
        for member in now.iter() {
            let before = logged.get(&member.id);
            if before == Some(member) {
                continue;
            }
            tracing::info!(
                node = %self.me,
                member = %member.id,
                status = ?member.status,
                was = ?before.map(|b| b.status),
                addr = %member.addr,
                tokens = member.tokens.len(),
                version = member.version,
                "membership change"
            );
        }
        *logged = now;
    }

    fn refresh(&self) {
        let (vnodes, mine) = {
            let mut state = self.state.write();
            state.ring = Arc::new(state.members.ring());
            let mut addresses = self.addresses.write();
            addresses.clear();
            for m in state.members.iter().filter(|m| m.status != Status::Removed) {
                addresses.insert(m.id.clone(), m.addr.clone());
            }
            let active: Vec<&Member> = state.members.active().collect();
            let vnodes: Vec<Vnode<String>> = active
                .iter()
                .flat_map(|m| {
                    m.tokens.iter().map(|&pos| Vnode {
                        pos,
                        node: m.id.clone(),
                    })
                })
                .collect();
            let mine: Vec<Position> = active
                .iter()
                .find(|m| m.id == self.me)
                .map(|m| m.tokens.clone())
                .unwrap_or_default();
            (vnodes, mine)
        };
        let mut router = Router::new(self.me.clone(), &mine, self.chord);
        router.seed(&vnodes);
        *self.router.lock() = router;
        self.cache.lock().clear();
        let peers = self.peers();
        self.heartbeats
            .lock()
            .retain(|node| peers.iter().any(|p| p == node));
    }
}

fn validate_join(id: &str, addr: &str, weight: u32) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Membership(
            "a node id must be 1-64 ASCII letters, digits, - or _".into(),
        ));
    }
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(Error::Membership(format!(
            "`{}` is not a host:port address",
            addr.chars().take(64).collect::<String>()
        )));
    }
    if !(1..=100).contains(&weight) {
        return Err(Error::Membership("weight must be between 1 and 100".into()));
    }
    Ok(())
}
