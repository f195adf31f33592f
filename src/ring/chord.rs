//! Chord routing state, as a pure state machine.
//!
//! Stoica et al., "Chord: A Scalable Peer-to-peer Lookup Service for Internet
//! Applications" (SIGCOMM 2001), Figure 6 and Section 5. Every token of a
//! node is a Chord identifier (a *vnode*); each vnode keeps its predecessor,
//! a successor list of length `successors` and a finger table, where finger
//! `i` is the successor of `pos + 2^i`. The protocol's periodic operations
//! keep them right as nodes come and go:
//!
//! - *stabilize*: ask the successor for its predecessor and successor list;
//!   adopt the predecessor if it sits between us, then *notify* the
//!   successor that we believe we precede it;
//! - *notify*: a vnode adopts a notifier that sits between it and its
//!   predecessor;
//! - *fix_fingers*: look up a few finger targets each tick;
//! - *check_predecessor*: forget a predecessor that does not answer.
//!
//! Lookups are iterative (see [`super::lookup`]): the asking node sends
//! `FindSuccessor` to ever closer nodes, each answering with the owner, if
//! one of its vnodes knows it, or the closest preceding entry it knows. A
//! node answers from the union of what all its vnodes know, which is why a
//! node with T tokens routes in about ½·log2(nodes) hops rather than
//! ½·log2(nodes × T).
//!
//! Nothing here does I/O or reads a clock. [`Router::tick`] returns
//! [`Task`]s; a driver (the real node's peer transport, or the in-process
//! simulation) carries them out, delivers [`ChordRequest`]s to the other
//! routers' [`Router::answer`], and reports back. A node that does not
//! answer is forgotten ([`Router::on_unreachable`]) and routed around by
//! the successor lists; it comes back by notifying its neighbours.

use serde::{Deserialize, Serialize};

use super::Position;

/// Bounds what a peer can make a router store or scan.
pub const MAX_SUCCESSORS: usize = 64;
pub const MAX_AVOID: usize = 16;

/// What identifies a node to the router (a node id; a number in the simulation).
pub trait NodeRef: Clone + Eq + Ord + std::hash::Hash + std::fmt::Debug {}
impl<T: Clone + Eq + Ord + std::hash::Hash + std::fmt::Debug> NodeRef for T {}

/// One token of one node: a Chord identifier.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vnode<N> {
    pub pos: Position,
    pub node: N,
}

#[derive(Clone, Copy, Debug)]
pub struct ChordConfig {
    /// Length of each successor list; survives that many minus one failures in a row.
    pub successors: usize,
    /// Finger lookups started per vnode per tick.
    pub fingers_per_tick: usize,
}

/// A request from one router to another. Every variant is one Chord RPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChordRequest<N> {
    /// Stabilize: the predecessor and successor list of your vnode at `pos`.
    Neighbors { pos: Position },
    /// Notify: `candidate` believes it is the predecessor of your vnode at `pos`.
    Notify { pos: Position, candidate: Vnode<N> },
    /// Check_predecessor: are you there?
    Ping,
    /// One step of an iterative find_successor(`id`), ignoring the nodes in
    /// `avoid` (found unreachable by the asker).
    FindSuccessor { id: Position, avoid: Vec<N> },
    /// A graceful leave: forget `node`.
    Depart { node: N },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChordReply<N> {
    Neighbors {
        pred: Option<Vnode<N>>,
        succs: Vec<Vnode<N>>,
    },
    /// The lookup is over: `succs[0]` owns the id, the rest follow it
    /// clockwise, and `(start, succs[0]]` is the range the owner holds as
    /// far as the answerer knows.
    Found {
        start: Position,
        succs: Vec<Vnode<N>>,
    },
    /// Ask `hop` next: the closest entry preceding the id that the answerer knows.
    Next {
        hop: Vnode<N>,
    },
    Ack,
    /// The answerer has no vnode at the position asked about (it left or moved).
    NoSuchVnode,
}

/// Work a tick asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task<N> {
    /// Send `Neighbors` to `succ`; report with [`Router::on_neighbors`].
    Stabilize { vnode: Position, succ: Vnode<N> },
    /// Send `Ping` to `pred`; report a failure with [`Router::on_unreachable`].
    CheckPredecessor { pred: Vnode<N> },
    /// Look up `id`; report with [`Router::set_finger`].
    FixFinger {
        vnode: Position,
        index: u8,
        id: Position,
    },
}

#[derive(Clone, Debug)]
struct VnodeState<N> {
    pos: Position,
    pred: Option<Vnode<N>>,
    succs: Vec<Vnode<N>>,
    /// Finger `i` where it differs from the first successor, sorted by `i`.
    fingers: Vec<(u8, Vnode<N>)>,
    next_finger: u8,
}

/// One node's routing state over all its vnodes.
#[derive(Clone, Debug)]
pub struct Router<N> {
    me: N,
    config: ChordConfig,
    /// Sorted by position.
    vnodes: Vec<VnodeState<N>>,
    /// The positions of `vnodes`, packed: a search touches two cache lines,
    /// not one per step (a simulated request lands on a router whose state
    /// is rarely in cache, and waiting on memory is most of its cost).
    own: Vec<Position>,
    /// Every vnode this node knows of, sorted by position, for
    /// closest-preceding search: the positions packed (for the same
    /// reason), the nodes beside them.
    table_pos: Vec<Position>,
    table_node: Vec<N>,
    dirty: bool,
}

/// `x` in the open interval (a, b) going clockwise; (a, a) is all but `a`.
pub fn in_open(x: Position, a: Position, b: Position) -> bool {
    if a < b {
        a < x && x < b
    } else {
        x > a || x < b
    }
}

/// `x` in the half-open interval (a, b] going clockwise; (a, a] is the whole ring.
pub fn in_half_open(x: Position, a: Position, b: Position) -> bool {
    if a < b {
        a < x && x <= b
    } else {
        x > a || x <= b
    }
}

/// `vnodes` as [`Router::seed`] takes them: sorted by position, the first
/// of each position kept.
pub fn sorted_ring<N: NodeRef>(mut vnodes: Vec<Vnode<N>>) -> Vec<Vnode<N>> {
    vnodes.sort();
    vnodes.dedup_by_key(|v| v.pos);
    vnodes
}

impl<N: NodeRef> Router<N> {
    /// A router for `me` with a vnode at each of `tokens`, knowing no one.
    pub fn new(me: N, tokens: &[Position], config: ChordConfig) -> Router<N> {
        let mut positions = tokens.to_vec();
        positions.sort_unstable();
        positions.dedup();
        // A node alone is a ring of its own vnodes. Predecessors come from
        // notifies only: a guessed one would claim ranges that are not ours.
        let own = |at: usize| Vnode {
            pos: positions[at % positions.len()],
            node: me.clone(),
        };
        let count = positions.len();
        let vnodes = (0..count)
            .map(|at| VnodeState {
                pos: positions[at],
                pred: None,
                succs: (1..count.min(config.successors + 1))
                    .map(|k| own(at + k))
                    .collect(),
                fingers: Vec::new(),
                next_finger: 0,
            })
            .collect();
        Router {
            me,
            config,
            vnodes,
            own: positions,
            table_pos: Vec::new(),
            table_node: Vec::new(),
            dirty: true,
        }
    }

    pub fn me(&self) -> &N {
        &self.me
    }

    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.vnodes.iter().map(|v| v.pos)
    }

    /// Sets every vnode's state exactly from a complete view of the ring
    /// (a node that holds the members document knows it), given sorted by
    /// position, each position once ([`sorted_ring`]). One sorted copy
    /// serves every router: the simulation seeds 100,000 routers from one.
    pub fn seed(&mut self, all: &[Vnode<N>]) {
        debug_assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
        if all.is_empty() {
            return;
        }
        let successor_of = |id: Position| all.partition_point(|v| v.pos < id) % all.len();
        for v in &mut self.vnodes {
            let at = all.partition_point(|x| x.pos <= v.pos) % all.len();
            v.succs = (0..self.config.successors.min(all.len()))
                .map(|k| all[(at + k) % all.len()].clone())
                .take_while(|x| x.pos != v.pos)
                .collect();
            let before = (all.partition_point(|x| x.pos < v.pos) + all.len() - 1) % all.len();
            v.pred = Some(all[before].clone()).filter(|p| p.pos != v.pos);
            v.fingers.clear();
            if let Some(first) = v.succs.first().cloned() {
                for i in 0..64u8 {
                    let target = v.pos.wrapping_add(1u64 << i);
                    let finger = &all[successor_of(target)];
                    if *finger != first {
                        v.fingers.push((i, finger.clone()));
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// Sets a vnode's successor list, from a join lookup or a driver.
    pub fn set_successors(&mut self, vnode: Position, succs: Vec<Vnode<N>>) {
        let limit = self.config.successors;
        if let Some(v) = self.vnode_mut(vnode) {
            v.succs = succs.into_iter().filter(|s| s.pos != vnode).collect();
            v.succs.truncate(limit);
            self.dirty = true;
        }
    }

    /// Answers another router's request.
    pub fn answer(&mut self, request: ChordRequest<N>) -> ChordReply<N> {
        match request {
            ChordRequest::Neighbors { pos } => match self.vnode(pos) {
                Some(v) => ChordReply::Neighbors {
                    pred: v.pred.clone(),
                    succs: v.succs.clone(),
                },
                None => ChordReply::NoSuchVnode,
            },
            ChordRequest::Notify { pos, candidate } => {
                let Some(v) = self.vnode_mut(pos) else {
                    return ChordReply::NoSuchVnode;
                };
                let adopt = match &v.pred {
                    None => candidate.pos != pos,
                    Some(p) => p.pos != candidate.pos && in_open(candidate.pos, p.pos, pos),
                };
                if adopt {
                    v.pred = Some(candidate);
                    self.dirty = true;
                }
                ChordReply::Ack
            }
            ChordRequest::Ping => ChordReply::Ack,
            ChordRequest::FindSuccessor { id, mut avoid } => {
                avoid.truncate(MAX_AVOID);
                self.route(id, &avoid)
            }
            ChordRequest::Depart { node } => {
                self.on_unreachable(&node);
                ChordReply::Ack
            }
        }
    }

    /// One step of find_successor(`id`) from what this node knows: `Found`
    /// if one of its vnodes knows the owner, else `Next` with the closest
    /// preceding entry not in `avoid`.
    pub fn route(&mut self, id: Position, avoid: &[N]) -> ChordReply<N> {
        self.rebuild();
        let usable = |s: &&Vnode<N>| !avoid.contains(&s.node);
        // Is one of this node's vnodes the owner: id in (pred, vnode]?
        if !self.vnodes.is_empty() {
            let at = self.own.partition_point(|&pos| pos < id) % self.own.len();
            let v = &self.vnodes[at];
            if let Some(p) = &v.pred
                && in_half_open(id, p.pos, v.pos)
            {
                let mut succs = vec![Vnode {
                    pos: v.pos,
                    node: self.me.clone(),
                }];
                succs.extend(v.succs.iter().filter(usable).cloned());
                succs.truncate(self.config.successors);
                return ChordReply::Found {
                    start: p.pos,
                    succs,
                };
            }
        }
        match self.closest_preceding(id, avoid) {
            Some(hop) if hop.node != self.me => ChordReply::Next { hop },
            Some(hop) => {
                let succs: Vec<_> = match self.vnode(hop.pos) {
                    Some(v) => v.succs.iter().filter(usable).cloned().collect(),
                    None => Vec::new(),
                };
                let start = hop.pos;
                if succs.is_empty() {
                    // Knowing no successor, the best guess is the next entry known.
                    let next = self.closest_following(id.wrapping_sub(1), avoid);
                    ChordReply::Found {
                        start,
                        succs: next.into_iter().collect(),
                    }
                } else {
                    ChordReply::Found { start, succs }
                }
            }
            None => ChordReply::Found {
                start: id,
                succs: Vec::new(),
            },
        }
    }

    /// Sets a vnode's predecessor from a join lookup that found the
    /// vnode right before it ([`super::Lookup::predecessor`]).
    pub fn set_predecessor(&mut self, vnode: Position, pred: Vnode<N>) {
        if let Some(v) = self.vnode_mut(vnode)
            && pred.pos != vnode
        {
            v.pred = Some(pred);
            self.dirty = true;
        }
    }

    /// Messages a node sends once its join lookups set its successors:
    /// each vnode's first successor first hears of the nodes the lookup
    /// found dead (`dead`: a successor whose predecessor is a crashed node
    /// closer than the newcomer would refuse it), then the vnode notifies
    /// it at once (Chord would wait for the next stabilize). So the
    /// successor's predecessor names the new vnode, and a lookup that
    /// checks with that successor ([`super::lookup`]) finds the newcomer
    /// before any round has run.
    pub fn arrival(&self, dead: &[N]) -> Vec<(N, ChordRequest<N>)> {
        let mut out = Vec::new();
        for v in &self.vnodes {
            let Some(succ) = v.succs.first().filter(|s| s.node != self.me) else {
                continue;
            };
            for node in dead {
                let request = ChordRequest::Depart { node: node.clone() };
                out.push((succ.node.clone(), request));
            }
            let candidate = Vnode {
                pos: v.pos,
                node: self.me.clone(),
            };
            let request = ChordRequest::Notify {
                pos: succ.pos,
                candidate,
            };
            out.push((succ.node.clone(), request));
        }
        out
    }

    /// Messages a gracefully leaving node sends: every neighbour forgets it.
    pub fn departure(&self) -> Vec<(N, ChordRequest<N>)> {
        let mut to: Vec<N> = self
            .vnodes
            .iter()
            .flat_map(|v| v.pred.iter().chain(v.succs.first()))
            .map(|x| x.node.clone())
            .filter(|n| *n != self.me)
            .collect();
        to.sort();
        to.dedup();
        to.into_iter()
            .map(|n| {
                let request = ChordRequest::Depart {
                    node: self.me.clone(),
                };
                (n, request)
            })
            .collect()
    }

    /// The successor list of `vnode`.
    pub fn successors(&self, vnode: Position) -> &[Vnode<N>] {
        self.vnode(vnode).map_or(&[], |v| &v.succs)
    }

    pub fn predecessor(&self, vnode: Position) -> Option<&Vnode<N>> {
        self.vnode(vnode)?.pred.as_ref()
    }

    /// Finger `i` of `vnode` (the first successor where none is stored).
    pub fn finger(&self, vnode: Position, i: u8) -> Option<&Vnode<N>> {
        let v = self.vnode(vnode)?;
        match v.fingers.binary_search_by_key(&i, |(k, _)| *k) {
            Ok(at) => Some(&v.fingers[at].1),
            Err(_) => v.succs.first(),
        }
    }

    /// The distinct fingers of `vnode`, as (index, vnode).
    pub fn fingers(&self, vnode: Position) -> &[(u8, Vnode<N>)] {
        self.vnode(vnode).map_or(&[], |v| &v.fingers)
    }

    fn vnode(&self, pos: Position) -> Option<&VnodeState<N>> {
        let at = self.own.binary_search(&pos).ok()?;
        Some(&self.vnodes[at])
    }

    fn vnode_mut(&mut self, pos: Position) -> Option<&mut VnodeState<N>> {
        let at = self.own.binary_search(&pos).ok()?;
        Some(&mut self.vnodes[at])
    }

    fn rebuild(&mut self) {
        if !self.dirty {
            return;
        }
        let mut table = Vec::with_capacity(self.table_pos.len() + self.vnodes.len());
        for v in &self.vnodes {
            table.push(Vnode {
                pos: v.pos,
                node: self.me.clone(),
            });
            table.extend(v.pred.iter().cloned());
            table.extend(v.succs.iter().cloned());
            table.extend(v.fingers.iter().map(|(_, f)| f.clone()));
        }
        table.sort_unstable_by_key(|v| v.pos);
        table.dedup_by_key(|v| v.pos);
        self.table_pos.clear();
        self.table_node.clear();
        for v in table {
            self.table_pos.push(v.pos);
            self.table_node.push(v.node);
        }
        self.dirty = false;
    }

    fn closest_preceding(&self, id: Position, avoid: &[N]) -> Option<Vnode<N>> {
        let len = self.table_pos.len();
        let at = self.table_pos.partition_point(|&pos| pos < id);
        (1..=len)
            .map(|k| (at + len - k) % len)
            .find(|&i| !avoid.contains(&self.table_node[i]))
            .map(|i| self.entry(i))
    }

    /// The first entry after `pos` clockwise whose node is not in `skip`.
    fn closest_following(&self, pos: Position, skip: &[N]) -> Option<Vnode<N>> {
        let len = self.table_pos.len();
        let at = self.table_pos.partition_point(|&p| p <= pos);
        (0..len)
            .map(|k| (at + k) % len)
            .find(|&i| !skip.contains(&self.table_node[i]))
            .map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> Vnode<N> {
        Vnode {
            pos: self.table_pos[i],
            node: self.table_node[i].clone(),
        }
    }
}

mod maintenance;
#[cfg(test)]
mod tests;
