//! Membership: who is in the ring, whether they are up, how a node finds
//! a key's replicas, and how data follows ownership when the ring changes.
//!
//! A [`Cluster`] is a node's view of the ring, shared by every task. It
//! wires three parts, one concept each:
//!
//! - [`Roster`] ([`roster`]): the members and their states. The
//!   [members document](crate::ring::Members), persisted in
//!   `data_dir/members.json`, spread by gossip (one random peer every
//!   `ring.gossip_ms`, and every member at once after a local change) and
//!   merged with its CRDT merge, so all nodes converge on one document.
//! - [`FailureDetector`] ([`detector`]): liveness. A heartbeat table
//!   gossiped to `ring.gossip_fanout` random peers every `ring.gossip_ms`,
//!   a phi-accrual verdict per member ([`liveness`], pure), and this
//!   node's own last call to each.
//! - [`Routes`] ([`routing`]): placement derived from the document (the
//!   preference lists) and the Chord router that finds a replica for a
//!   request that reached a node outside the key's preference list.
//!
//! The cluster itself holds what they share (the transport, the random
//! choices, the node's clock), runs the gossip rounds, and carries out the
//! intents that change the document: [`Cluster::admit`] (a join through
//! this node), [`Cluster::set_status`] (leave, remove). After a change it
//! reseeds routing, forgets the heartbeats of removed nodes, and only then
//! tells the followers, so that a follower sees the new placement.
//! Ownership handoff ([`handoff`]) is one follower: after a change each
//! node pushes the ranges it holds to their new owners and, once they
//! confirm, drops what it no longer owns. A node that stops answering is
//! not removed: routing goes around it and it keeps its ranges.

pub mod detector;
pub mod handoff;
pub mod leave;
pub mod liveness;
pub mod roster;
pub mod routing;
pub mod rpc;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::Result;
use crate::peer::{Transport, http::Addresses};
use crate::ring::{ChordConfig, Members, Status};
pub use detector::{FailureDetector, Liveness};
pub use roster::Roster;
pub use routing::Routes;

pub struct Cluster {
    me: String,
    roster: Roster,
    detector: FailureDetector,
    routes: Routes,
    /// Peers' addresses, as the transport dials them.
    addresses: Addresses,
    /// Held while the parts take in a change, so that two changes cannot
    /// leave routing on the older document.
    refreshing: Mutex<()>,
    fanout: usize,
    /// Every random choice: seeded by the simulation, else by the OS.
    rng: Mutex<SmallRng>,
    transport: Arc<dyn Transport>,
    /// This node's wall clock.
    clock: Clock,
}

impl Cluster {
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
        let cluster = Cluster {
            me: me.to_string(),
            routes: Routes::new(me, config.cluster.n, chord),
            roster: Roster::new(me, config.ring.tokens, members, persist),
            detector: FailureDetector::new(
                me,
                clock.generation(),
                config.ring.gossip_ms,
                config.ring.phi_threshold,
            ),
            addresses,
            refreshing: Mutex::new(()),
            fanout: config.ring.gossip_fanout,
            rng: Mutex::new(seed.map_or_else(
                || SmallRng::from_rng(&mut rand::rng()),
                SmallRng::seed_from_u64,
            )),
            transport,
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

    /// Replicas per key.
    pub fn n(&self) -> usize {
        self.routes.n()
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The members and their states.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Liveness: heartbeats, phi, the last call to each node.
    pub fn detector(&self) -> &FailureDetector {
        &self.detector
    }

    /// Placement and the Chord router.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The nodes after `key`'s preference list along the ring, in order,
    /// those the failure detector holds down last: where its writes go
    /// when a primary cannot be reached.
    pub fn fallbacks(&self, key: &str) -> Vec<String> {
        let mut fallbacks = self.routes.after_preference_list(key);
        fallbacks.sort_by_key(|node| self.detector.liveness(node) == Liveness::Down);
        fallbacks
    }

    /// The node's random choices (peers to gossip and exchange with).
    pub fn rng(&self) -> parking_lot::MutexGuard<'_, SmallRng> {
        self.rng.lock()
    }

    /// Merges a members document from a peer; true if ours changed.
    pub fn apply(&self, incoming: &Members) -> Result<bool> {
        let changed = self.roster.merge(incoming)?;
        if changed {
            self.changed()?;
        }
        Ok(changed)
    }

    /// Admits a node joining through this one and tells every member.
    pub fn admit(&self, id: &str, addr: &str, zone: Option<&str>, weight: u32) -> Result<Members> {
        if self.roster.admit(id, addr, zone, weight)? {
            self.changed()?;
            self.push_to_all();
        }
        Ok(self.roster.members())
    }

    /// Moves a member to `status` (leave, remove) and tells every member.
    pub fn set_status(&self, id: &str, status: Status) -> Result<bool> {
        let changed = self.roster.set_status(id, status)?;
        if changed {
            self.changed()?;
            self.push_to_all();
        }
        Ok(changed)
    }

    /// Records this node's own address (it may have moved since it joined).
    pub fn set_own_addr(&self, addr: &str) -> Result<()> {
        if self.roster.set_own_addr(addr) {
            self.changed()?;
            self.push_to_all();
        }
        Ok(())
    }

    /// Merges a peer's heartbeat table; answers with this node's.
    pub fn heard(&self, beats: &[liveness::Beat]) -> Result<Vec<liveness::Beat>> {
        self.detector.heard(beats, &self.roster.peers())
    }

    /// One round of liveness gossip: raise the heartbeat, push-pull the
    /// table with `ring.gossip_fanout` random peers.
    pub async fn beat_once(&self) {
        let beats = self.detector.tick();
        let peers: Vec<String> = self
            .roster
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
        self.detector.note_changes(self.roster.peers());
    }

    /// One round of gossip with a random other member.
    pub async fn gossip_once(&self) {
        let peers = self.roster.peers();
        let Some(peer) = peers.choose(&mut *self.rng()).cloned() else {
            return;
        };
        let reply = self
            .transport
            .rpc(&peer, rpc::Gossip(self.roster.members()))
            .await;
        self.detector.observe(&peer, &reply);
        match reply {
            Ok(theirs) => {
                if let Err(e) = self.apply(&theirs) {
                    tracing::warn!(%peer, error = %e, "a gossiped members document was refused");
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "gossip failed"),
        }
    }

    /// Sends our document to every other member, in the background.
    pub fn push_to_all(&self) {
        for peer in self.roster.peers() {
            let call = self
                .transport
                .rpc(&peer, rpc::Gossip(self.roster.members()));
            tokio::spawn(async move {
                let _ = call.await;
            });
        }
    }

    /// Sends our document to every other member and waits (for a leaving
    /// node's last word).
    pub async fn push_to_all_and_wait(&self) {
        let calls: Vec<_> = self
            .roster
            .peers()
            .into_iter()
            .map(|peer| {
                self.transport
                    .rpc(&peer, rpc::Gossip(self.roster.members()))
            })
            .collect();
        for call in calls {
            let _ = call.await;
        }
    }

    /// After a change: the parts take in the new document, then it is
    /// persisted and the followers are told.
    fn changed(&self) -> Result<()> {
        self.refresh();
        self.roster.committed()
    }

    /// Reseeds the transport's addresses, routing and the heartbeat table
    /// from the members document as it is now. Addresses first: a node
    /// that routing names must already be reachable.
    fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock();
        let members = self.roster.members();
        {
            let mut addresses = self.addresses.write();
            addresses.clear();
            for m in members.iter().filter(|m| m.status != Status::Removed) {
                addresses.insert(m.id.clone(), m.addr.clone());
            }
        }
        self.routes.reseed(&members);
        self.detector.retain(&self.roster.peers());
    }
}
