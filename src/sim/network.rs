//! A simulated network of Chord routers, delivering each request at once.
//!
//! Nodes are numbered; a crashed node's slot is empty and every request to
//! it fails, which is all a router can observe of a failure. Token
//! allocation is the real [`Allocator`], so the simulated ring has the same
//! balance as a real one. The driver code here is the same loop the real
//! node runs over its peer transport: tick, carry out the tasks, report.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::ring::Position;
use crate::ring::chord::{ChordConfig, ChordReply, ChordRequest, Router, Task, Vnode};
use crate::ring::lookup::{Lookup, Step};
use crate::ring::tokens::Allocator;

pub struct Network {
    routers: Vec<Option<Router<u32>>>,
    alloc: Allocator,
    config: ChordConfig,
    rng: SmallRng,
    /// Requests delivered so far (to live and dead nodes).
    pub rpcs: u64,
}

/// Routing state that differs from the real ring, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mismatches {
    pub successor: usize,
    pub successor_list: usize,
    pub predecessor: usize,
    pub fingers: usize,
}

/// The result of one lookup: the first live node of the owner's list.
pub struct Found {
    pub owner: Option<Vnode<u32>>,
    pub hops: u32,
}

/// Join lookups tried per vnode, each through another member.
const JOIN_ATTEMPTS: usize = 3;

impl Network {
    pub fn new(config: ChordConfig, seed: u64) -> Network {
        Network {
            routers: Vec::new(),
            alloc: Allocator::new(),
            config,
            rng: SmallRng::seed_from_u64(seed),
            rpcs: 0,
        }
    }

    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    /// Adds a node with balanced tokens, knowing no one yet.
    pub fn add(&mut self, tokens: usize) -> u32 {
        let seed = self.rng.random();
        let (slot, positions) = self.alloc.join(1, tokens, seed);
        let id = slot as u32;
        debug_assert_eq!(slot, self.routers.len());
        self.routers
            .push(Some(Router::new(id, &positions, self.config)));
        id
    }

    /// Chord's join: each vnode of `id` looks up its successor through `seed`.
    pub fn join(&mut self, id: u32, seed: u32) {
        let positions: Vec<Position> = match self.router(id) {
            Some(r) => r.positions().collect(),
            None => return,
        };
        let mut dead = Vec::new();
        for pos in positions {
            // A lookup that fails (every candidate it met crashed) is
            // tried again through another member: a vnode that never
            // found its successor would stay a ring of its own.
            let mut through = seed;
            let mut found = None;
            let mut lookup = None;
            for _ in 0..JOIN_ATTEMPTS {
                let (mut attempt, step) = Lookup::start_at(through, pos);
                found = self.drive_counting(id, &mut attempt, step, &mut 0);
                dead.extend_from_slice(attempt.avoided());
                lookup = Some(attempt);
                if found.is_some() {
                    break;
                }
                let live = self.live();
                through = live[self.rng.random_range(0..live.len())];
            }
            if let Some((_, succs)) = found
                && let Some(r) = self.router(id)
            {
                r.set_successors(pos, succs);
                if let Some(pred) = lookup.as_ref().and_then(Lookup::predecessor) {
                    r.set_predecessor(pos, pred.clone());
                }
            }
        }
        dead.sort_unstable();
        dead.dedup();
        let notices = self
            .router(id)
            .map(|r| r.arrival(&dead))
            .unwrap_or_default();
        for (to, request) in notices {
            self.call(to, request);
        }
    }

    /// Every router knows the whole ring exactly (as a node that holds the
    /// members document does).
    pub fn seed_all(&mut self) {
        let truth = self.truth();
        for r in self.routers.iter_mut().flatten() {
            r.seed(&truth);
        }
    }

    /// The node stops; nobody is told.
    pub fn crash(&mut self, id: u32) {
        if let Some(slot) = self.routers.get_mut(id as usize) {
            *slot = None;
            self.alloc.leave(id as usize);
        }
    }

    /// The node tells its neighbours, then stops.
    pub fn leave(&mut self, id: u32) {
        let notices = self.router(id).map(|r| r.departure()).unwrap_or_default();
        for (to, request) in notices {
            self.call(to, request);
        }
        self.crash(id);
    }

    pub fn live(&self) -> Vec<u32> {
        (0..self.routers.len() as u32)
            .filter(|&i| self.routers[i as usize].is_some())
            .collect()
    }

    /// One round: every live node ticks once, in random order, and its tasks run.
    pub fn round(&mut self) {
        let mut order = self.live();
        order.shuffle(&mut self.rng);
        for id in order {
            let tasks = match self.router(id) {
                Some(r) => r.tick(),
                None => continue,
            };
            for task in tasks {
                self.run(id, task);
            }
        }
    }

    /// find_successor(`id`) from node `from`; the owner is the first live
    /// node of the list found, as a forwarding node would take it.
    pub fn lookup(&mut self, from: u32, id: Position) -> Found {
        let Some(router) = self.router(from) else {
            return Found {
                owner: None,
                hops: 0,
            };
        };
        let (mut lookup, step) = Lookup::start(router, id);
        let mut hops = 0;
        let found = self.drive_counting(from, &mut lookup, step, &mut hops);
        let owner = found.and_then(|(_, succs)| succs.into_iter().find(|v| self.is_live(v.node)));
        Found { owner, hops }
    }

    /// Every live vnode, sorted: the ring as it really is.
    pub fn truth(&self) -> Vec<Vnode<u32>> {
        self.alloc
            .tokens()
            .iter()
            .map(|(&pos, &slot)| Vnode {
                pos,
                node: slot as u32,
            })
            .collect()
    }

    /// The vnode that owns `id` in `truth`.
    pub fn owner(truth: &[Vnode<u32>], id: Position) -> &Vnode<u32> {
        &truth[truth.partition_point(|v| v.pos < id) % truth.len()]
    }

    /// Ring ownership shares of every node slot (0 for departed ones).
    pub fn shares(&self) -> Vec<f64> {
        self.alloc.shares()
    }

    /// Whether every live vnode's predecessor, successor list and fingers
    /// are exactly right.
    pub fn converged(&self) -> bool {
        self.mismatches(true) == Mismatches::default()
    }

    /// How many live vnodes have a wrong first successor, successor list,
    /// predecessor, and (if asked, as it costs most) how many fingers are wrong.
    pub fn mismatches(&self, fingers: bool) -> Mismatches {
        let truth = self.truth();
        let len = truth.len();
        let want = self.config.successors.min(len.saturating_sub(1));
        let mut m = Mismatches::default();
        for (at, v) in truth.iter().enumerate() {
            let Some(r) = self.routers[v.node as usize].as_ref() else {
                continue;
            };
            let succs = r.successors(v.pos);
            let expected = (1..=want).map(|k| &truth[(at + k) % len]);
            m.successor += usize::from(want > 0 && succs.first() != Some(&truth[(at + 1) % len]));
            m.successor_list += usize::from(succs.len() != want || !succs.iter().eq(expected));
            let pred = &truth[(at + len - 1) % len];
            m.predecessor += usize::from(len > 1 && r.predecessor(v.pos) != Some(pred));
            if fingers && len > 1 {
                m.fingers += (0..64u8)
                    .filter(|&i| {
                        let target = v.pos.wrapping_add(1u64 << i);
                        r.finger(v.pos, i) != Some(Self::owner(&truth, target))
                    })
                    .count();
            }
        }
        m
    }

    fn is_live(&self, node: u32) -> bool {
        matches!(self.routers.get(node as usize), Some(Some(_)))
    }

    fn router(&mut self, id: u32) -> Option<&mut Router<u32>> {
        self.routers.get_mut(id as usize)?.as_mut()
    }

    fn call(&mut self, to: u32, request: ChordRequest<u32>) -> Option<ChordReply<u32>> {
        self.rpcs += 1;
        Some(self.router(to)?.answer(request))
    }

    fn run(&mut self, id: u32, task: Task<u32>) {
        match task {
            Task::Stabilize { vnode, succ } => {
                match self.call(succ.node, ChordRequest::Neighbors { pos: succ.pos }) {
                    Some(reply) => {
                        let notify = self.router(id).and_then(|r| r.on_neighbors(vnode, reply));
                        if let Some((to, request)) = notify
                            && self.call(to, request).is_none()
                            && let Some(r) = self.router(id)
                        {
                            r.on_unreachable(&to);
                        }
                    }
                    None => {
                        if let Some(r) = self.router(id) {
                            r.on_unreachable(&succ.node);
                        }
                    }
                }
            }
            Task::CheckPredecessor { pred } => {
                if self.call(pred.node, ChordRequest::Ping).is_none()
                    && let Some(r) = self.router(id)
                {
                    r.on_unreachable(&pred.node);
                }
            }
            Task::FixFinger {
                vnode,
                index,
                id: target,
            } => {
                let Some(router) = self.router(id) else {
                    return;
                };
                let (lookup, step) = Lookup::start_rough(router, target);
                if let Some((_, succs)) = self.drive(id, lookup, step)
                    && let Some(owner) = succs.into_iter().find(|v| self.is_live(v.node))
                    && let Some(r) = self.router(id)
                {
                    r.set_finger(vnode, index, owner);
                }
            }
        }
    }

    fn drive(
        &mut self,
        from: u32,
        mut lookup: Lookup<u32>,
        step: Step<u32>,
    ) -> Option<(Position, Vec<Vnode<u32>>)> {
        self.drive_counting(from, &mut lookup, step, &mut 0)
    }

    /// Carries a lookup to its end; `hops` gets the remote nodes asked.
    fn drive_counting(
        &mut self,
        from: u32,
        lookup: &mut Lookup<u32>,
        mut step: Step<u32>,
        hops: &mut u32,
    ) -> Option<(Position, Vec<Vnode<u32>>)> {
        loop {
            *hops = lookup.hops;
            match step {
                Step::Done { start, succs } => return Some((start, succs)),
                Step::Failed => return None,
                Step::Ask(to, request) => {
                    step = match self.call(to, request) {
                        Some(reply) => lookup.on_reply(reply),
                        None => lookup.on_failure(self.router(from)?),
                    };
                }
            }
        }
    }
}
