//! Routing: where a key lives and how to reach it.
//!
//! [`Routes`] holds what placement derives from the members document: the
//! ring, whose [`preference_list`](Routes::preference_list) names a key's
//! replicas, and the Chord router with its lookup cache, reseeded on every
//! change of the document.
//!
//! The Chord router is driven over the peer transport by the same loop as
//! the simulation's ([`crate::sim::network`]): tick the router, carry out
//! its tasks as `Chord` peer requests, report replies and failures. A node
//! that receives a request for a key it does not replicate calls
//! [`Cluster::find_replicas`]: the lookup cache answers in the steady
//! state (the request then costs one hop, the forward); else an iterative
//! Chord lookup finds the owner of the key's position and the nodes after
//! it. Hops are recorded in `chorus_lookup_hops`, the forward included.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::metrics as m;
use crate::ring::{
    ChordConfig, ChordReply, ChordRequest, Lookup, LookupCache, Member, Members, Position, Ring,
    Router, Step, Task, Vnode, position, sorted_ring,
};

use super::Cluster;

/// Ranges the lookup cache holds before it starts over.
const CACHE_RANGES: usize = 65_536;

/// How a lookup begins: [`Lookup::start`] or [`Lookup::start_rough`].
type Begin = fn(&mut Router<String>, Position) -> (Lookup<String>, Step<String>);

/// One vnode as the router sees it, for `/cluster`: position,
/// predecessor, successors, fingers.
pub type VnodeRoutes = (
    Position,
    Option<Vnode<String>>,
    Vec<Vnode<String>>,
    Vec<(u8, Vnode<String>)>,
);

pub struct Routes {
    me: String,
    n: usize,
    chord: ChordConfig,
    ring: RwLock<Arc<Ring>>,
    router: Mutex<Router<String>>,
    cache: Mutex<LookupCache<String>>,
}

impl Routes {
    /// Routes that know no one yet: [`Cluster`] reseeds them at once.
    pub(super) fn new(me: &str, n: usize, chord: ChordConfig) -> Routes {
        Routes {
            me: me.to_string(),
            n,
            chord,
            ring: RwLock::new(Arc::new(Members::default().ring())),
            router: Mutex::new(Router::new(me.to_string(), &[], chord)),
            cache: Mutex::new(LookupCache::new(CACHE_RANGES)),
        }
    }

    /// Replicas per key.
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read())
    }

    /// The nodes that hold `key`, in preference order.
    pub fn preference_list(&self, key: &str) -> Vec<String> {
        let ring = self.ring();
        ring.preference_list(position(key.as_bytes()), self.n)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The nodes after `key`'s preference list along the ring, in order.
    pub fn after_preference_list(&self, key: &str) -> Vec<String> {
        let ring = self.ring();
        let all = ring.preference_list(position(key.as_bytes()), ring.owners().len());
        all.into_iter().skip(self.n).map(str::to_string).collect()
    }

    /// Recomputes placement from `members` and restarts the router from
    /// the ring it describes. Only [`Cluster`]'s refresh calls it, one
    /// change at a time.
    pub(super) fn reseed(&self, members: &Members) {
        *self.ring.write() = Arc::new(members.ring());
        let active: Vec<&Member> = members.active().collect();
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
        let mut router = Router::new(self.me.clone(), &mine, self.chord);
        router.seed(&sorted_ring(vnodes));
        *self.router.lock() = router;
        self.cache.lock().clear();
    }

    /// Answers a Chord request from another node.
    pub fn answer(&self, request: ChordRequest<String>) -> ChordReply<String> {
        self.router.lock().answer(request)
    }

    /// A forward to `node` failed: stop routing to it from the cache.
    pub fn forward_failed(&self, node: &str) {
        self.cache.lock().forget(&node.to_string());
    }

    /// The router's view of each of this node's vnodes.
    pub fn vnodes(&self) -> Vec<VnodeRoutes> {
        let router = self.router.lock();
        router
            .positions()
            .map(|pos| {
                (
                    pos,
                    router.predecessor(pos).cloned(),
                    router.successors(pos).to_vec(),
                    router.fingers(pos).to_vec(),
                )
            })
            .collect()
    }
}

impl Cluster {
    /// One period of stabilize, check_predecessor and fix_fingers.
    pub async fn chord_tick(&self) {
        let tasks = self.routes.router.lock().tick();
        // A node that failed once this tick is not tried again until the
        // next: a partitioned peer costs one timeout per tick, not one per task.
        let mut failed: Vec<String> = Vec::new();
        for task in tasks {
            let target = match &task {
                Task::Stabilize { succ, .. } => Some(&succ.node),
                Task::CheckPredecessor { pred } => Some(&pred.node),
                Task::FixFinger { .. } => None,
            };
            if target.is_some_and(|t| failed.contains(t)) {
                continue;
            }
            match task {
                Task::Stabilize { vnode, succ } => {
                    let reply = self
                        .chord_call(&succ.node, ChordRequest::Neighbors { pos: succ.pos })
                        .await;
                    let notify = match reply {
                        Some(reply) => self.routes.router.lock().on_neighbors(vnode, reply),
                        None => {
                            self.routes.router.lock().on_unreachable(&succ.node);
                            failed.push(succ.node);
                            None
                        }
                    };
                    if let Some((to, request)) = notify
                        && self.chord_call(&to, request).await.is_none()
                    {
                        self.routes.router.lock().on_unreachable(&to);
                    }
                }
                Task::CheckPredecessor { pred } => {
                    if self
                        .chord_call(&pred.node, ChordRequest::Ping)
                        .await
                        .is_none()
                    {
                        self.routes.router.lock().on_unreachable(&pred.node);
                        failed.push(pred.node);
                    }
                }
                Task::FixFinger { vnode, index, id } => {
                    if let Some((_, succs, _)) = self.drive(Lookup::start_rough, id).await
                        && let Some(owner) = succs.into_iter().next()
                    {
                        self.routes.router.lock().set_finger(vnode, index, owner);
                    }
                }
            }
        }
    }

    /// find_successor(`id`): the range start, the owner and its successors,
    /// and the remote nodes asked.
    pub async fn lookup(&self, id: Position) -> Option<(Position, Vec<Vnode<String>>, u32)> {
        self.drive(Lookup::start, id).await
    }

    /// Carries a lookup begun by `start` to its end.
    async fn drive(
        &self,
        start: Begin,
        id: Position,
    ) -> Option<(Position, Vec<Vnode<String>>, u32)> {
        let (mut lookup, mut step) = start(&mut self.routes.router.lock(), id);
        loop {
            match step {
                Step::Done { start, succs } => return Some((start, succs, lookup.hops)),
                Step::Failed => return None,
                Step::Ask(to, request) => {
                    step = match self.chord_call(&to, request).await {
                        Some(reply) => lookup.on_reply(reply),
                        None => lookup.on_failure(&mut self.routes.router.lock()),
                    };
                }
            }
        }
    }

    /// Nodes to forward a request for the key at `pos` to, best first:
    /// the owner found by Chord and the nodes after it, this node left out;
    /// and the hops it takes to reach the first, the forward included (1
    /// when the lookup cache knew the range).
    pub async fn find_replicas(&self, pos: Position) -> (Vec<String>, u32) {
        let cached = self.routes.cache.lock().get(pos).map(<[_]>::to_vec);
        let (succs, hops) = match cached {
            Some(succs) => (succs, 1),
            None => match self.lookup(pos).await {
                Some((start, succs, hops)) => {
                    self.routes.cache.lock().insert(start, succs.clone());
                    (succs, hops + 1)
                }
                None => (Vec::new(), 0),
            },
        };
        if hops > 0 {
            metrics::histogram!(m::LOOKUP_HOPS).record(f64::from(hops));
        }
        let mut nodes: Vec<String> = Vec::with_capacity(succs.len());
        for v in succs {
            if v.node != self.me && !nodes.contains(&v.node) {
                nodes.push(v.node);
            }
        }
        (nodes, hops)
    }

    /// Messages telling the ring this node is going.
    pub async fn depart(&self) {
        let notices = self.routes.router.lock().departure();
        for (to, request) in notices {
            let _ = self.chord_call(&to, request).await;
        }
    }

    async fn chord_call(
        &self,
        to: &str,
        request: ChordRequest<String>,
    ) -> Option<ChordReply<String>> {
        if to == self.me {
            return Some(self.routes.answer(request));
        }
        let reply = self.transport.rpc(to, super::rpc::Chord(request)).await;
        self.detector.observe(to, &reply);
        reply.ok()
    }
}
