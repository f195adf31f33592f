//! Iterative lookups and the lookup cache.
//!
//! A [`Lookup`] is find_successor(id) as a small state machine: the driver
//! asks the node it names and feeds the reply back, until the owner is
//! found. A node that does not answer is added to the lookup's avoid list
//! and the search resumes from the asking router, which routes around it.
//!
//! An answer is checked with the owner it names before the lookup ends.
//! Chord's find_successor ends at the *predecessor* of the id, which names
//! its first successor from its successor list; during churn that list can
//! be stale, in two ways (measured in `chorus sim ring`, docs/ring.md):
//! the successor named crashed, or a node joined between the two and owns
//! the id now. So unless the owner answered for itself (its own
//! predecessor bounds the id), the lookup asks the named owner for its
//! neighbours ([`ChordRequest::Neighbors`]): when its predecessor lies
//! between the range's start and the id, that predecessor is the closer
//! owner and is asked in turn; when it does not answer, the next node of
//! the successor list is. One more hop, and the answer is what the owner
//! itself believes.
//!
//! The [`LookupCache`] remembers, for each range found, the owner and its
//! successors, so the steady state of a node that forwards requests is one
//! hop: straight to a replica. Entries are dropped when the members change
//! or a forward to them fails.

use std::collections::BTreeMap;

use super::Position;
use super::chord::{
    ChordReply, ChordRequest, MAX_AVOID, NodeRef, Router, Vnode, in_half_open, in_open,
};

/// More hops than any lookup on a 2^64 ring needs; past it the lookup fails.
pub const MAX_HOPS: u32 = 96;

/// One find_successor in progress.
#[derive(Clone, Debug)]
pub struct Lookup<N> {
    pub id: Position,
    /// Remote nodes asked so far.
    pub hops: u32,
    avoid: Vec<N>,
    asking: Option<N>,
    /// Whether a `Found` is checked with the owner it names.
    verify: bool,
    /// While checking: the range's start and the candidate owners, the
    /// one being asked first.
    checking: Option<(Position, Vec<Vnode<N>>)>,
    /// The owner's predecessor, as the check found it.
    pred: Option<Vnode<N>>,
    /// The node a joiner asks (it knows no one else): after a failure the
    /// search resumes there, not in the joiner's own empty router.
    seed: Option<N>,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<N> {
    /// Send this request to this node and report its reply or failure.
    Ask(N, ChordRequest<N>),
    /// Found: the owner of the id first, then its successors; the owner
    /// holds `(start, owner]`.
    Done {
        start: Position,
        succs: Vec<Vnode<N>>,
    },
    /// No route: every candidate failed, or the hop budget ran out.
    Failed,
}

impl<N: NodeRef> Lookup<N> {
    /// Starts from what `router` knows; the answer is checked with the
    /// owner it names.
    pub fn start(router: &mut Router<N>, id: Position) -> (Lookup<N>, Step<N>) {
        Lookup::begin(router, id, true)
    }

    /// As [`Lookup::start`], without the check: for a finger, where a node
    /// near the id is enough and a stale one is mended next round.
    pub fn start_rough(router: &mut Router<N>, id: Position) -> (Lookup<N>, Step<N>) {
        Lookup::begin(router, id, false)
    }

    fn begin(router: &mut Router<N>, id: Position, verify: bool) -> (Lookup<N>, Step<N>) {
        let mut lookup = Lookup::new(id, verify);
        let reply = router.route(id, &[]);
        let step = lookup.follow(None, Some(router), reply);
        (lookup, step)
    }

    /// Starts at another node: how a node that knows no one joins.
    pub fn start_at(seed: N, id: Position) -> (Lookup<N>, Step<N>) {
        let mut lookup = Lookup::new(id, true);
        lookup.seed = Some(seed.clone());
        let step = lookup.ask(seed);
        (lookup, step)
    }

    fn new(id: Position, verify: bool) -> Lookup<N> {
        Lookup {
            id,
            hops: 0,
            avoid: Vec::new(),
            asking: None,
            verify,
            checking: None,
            pred: None,
            seed: None,
        }
    }

    /// The predecessor of the owner found, when the check learned it: a
    /// node that joins with this lookup's answer is the vnode right after
    /// it, so it is the joiner's predecessor too.
    pub fn predecessor(&self) -> Option<&Vnode<N>> {
        self.pred.as_ref()
    }

    /// The nodes that did not answer this lookup.
    pub fn avoided(&self) -> &[N] {
        &self.avoid
    }

    pub fn on_reply(&mut self, reply: ChordReply<N>) -> Step<N> {
        let answerer = self.asking.take();
        if self.checking.is_some() {
            return self.checked(reply);
        }
        self.follow(answerer, None, reply)
    }

    /// The node last asked did not answer: route around it from `router`,
    /// or, while checking an owner, try the next of the successor list.
    pub fn on_failure(&mut self, router: &mut Router<N>) -> Step<N> {
        if let Some(dead) = self.asking.take() {
            router.on_unreachable(&dead);
            if self.avoid.len() == MAX_AVOID {
                return Step::Failed;
            }
            self.avoid.push(dead);
        }
        if self.checking.is_some() {
            return self.next_candidate();
        }
        if let Some(seed) = self.seed.clone() {
            if self.avoid.contains(&seed) {
                return Step::Failed;
            }
            return self.ask(seed);
        }
        let reply = router.route(self.id, &self.avoid);
        self.follow(None, Some(router), reply)
    }

    /// Follows an answer: from `router` itself (`local`), or from the node
    /// `answerer` asked.
    fn follow(
        &mut self,
        answerer: Option<N>,
        local: Option<&Router<N>>,
        reply: ChordReply<N>,
    ) -> Step<N> {
        match reply {
            ChordReply::Found { start, succs } if !succs.is_empty() => {
                // The owner answering for itself, by its own predecessor,
                // needs no second word. Here that is seen in the router;
                // a remote owner's word is taken as it is.
                let owner = &succs[0];
                let vouched = match local {
                    Some(router) => {
                        owner.node == *router.me()
                            && router
                                .predecessor(owner.pos)
                                .is_some_and(|p| p.pos == start)
                    }
                    None => answerer.as_ref() == Some(&owner.node),
                };
                if !self.verify || vouched {
                    return Step::Done { start, succs };
                }
                self.checking = Some((start, succs));
                self.ask_candidate()
            }
            ChordReply::Next { hop } if !self.avoid.contains(&hop.node) => self.ask(hop.node),
            _ => Step::Failed,
        }
    }

    /// The candidate owner's neighbours came back.
    fn checked(&mut self, reply: ChordReply<N>) -> Step<N> {
        let Some((start, candidates)) = self.checking.take() else {
            return Step::Failed;
        };
        let Some(owner) = candidates.first().cloned() else {
            return Step::Failed;
        };
        let ChordReply::Neighbors { pred, succs } = reply else {
            // It holds no vnode there any more: the next candidate.
            self.checking = Some((start, candidates));
            return self.next_candidate();
        };
        let usable = |v: &Vnode<N>| !self.avoid.contains(&v.node);
        match pred.filter(|p| usable(p) && in_open(p.pos, start, owner.pos)) {
            // A node between the start and the id owns it: ask that one.
            Some(p) if !in_half_open(self.id, p.pos, owner.pos) => {
                let mut closer = vec![p];
                closer.extend(candidates);
                self.checking = Some((start, closer));
                self.ask_candidate()
            }
            // The owner's own predecessor bounds the id.
            Some(p) => {
                let start = p.pos;
                self.pred = Some(p);
                Step::Done {
                    start,
                    succs: self.with_successors(owner, succs),
                }
            }
            None => Step::Done {
                start,
                succs: self.with_successors(owner, succs),
            },
        }
    }

    fn with_successors(&self, owner: Vnode<N>, succs: Vec<Vnode<N>>) -> Vec<Vnode<N>> {
        let mut list = vec![owner];
        list.extend(succs.into_iter().filter(|v| !self.avoid.contains(&v.node)));
        list
    }

    /// The candidate asked is gone: the next of the list owns its range.
    fn next_candidate(&mut self) -> Step<N> {
        let Some((start, mut candidates)) = self.checking.take() else {
            return Step::Failed;
        };
        if !candidates.is_empty() {
            candidates.remove(0);
        }
        candidates.retain(|v| !self.avoid.contains(&v.node));
        if candidates.is_empty() {
            return Step::Failed;
        }
        self.checking = Some((start, candidates));
        self.ask_candidate()
    }

    fn ask_candidate(&mut self) -> Step<N> {
        let Some(owner) = self.checking.as_ref().and_then(|(_, c)| c.first().cloned()) else {
            return Step::Failed;
        };
        self.send(owner.node, ChordRequest::Neighbors { pos: owner.pos })
    }

    fn ask(&mut self, node: N) -> Step<N> {
        let request = ChordRequest::FindSuccessor {
            id: self.id,
            avoid: self.avoid.clone(),
        };
        self.send(node, request)
    }

    fn send(&mut self, node: N, request: ChordRequest<N>) -> Step<N> {
        if self.hops >= MAX_HOPS {
            return Step::Failed;
        }
        self.hops += 1;
        self.asking = Some(node.clone());
        Step::Ask(node, request)
    }
}

/// Ranges found by lookups: `(start, end]` with the owner and its successors.
#[derive(Clone, Debug)]
pub struct LookupCache<N> {
    /// Keyed by the range's end (the owner's position).
    ranges: BTreeMap<Position, (Position, Vec<Vnode<N>>)>,
    capacity: usize,
}

impl<N: NodeRef> LookupCache<N> {
    pub fn new(capacity: usize) -> Self {
        LookupCache {
            ranges: BTreeMap::new(),
            capacity,
        }
    }

    /// The owner and successors of `id`, if a cached range covers it.
    pub fn get(&self, id: Position) -> Option<&[Vnode<N>]> {
        let (_, (start, succs)) = self
            .ranges
            .range(id..)
            .next()
            .or_else(|| self.ranges.iter().next())?;
        let end = succs.first()?.pos;
        in_half_open(id, *start, end).then_some(succs.as_slice())
    }

    /// Remembers that `succs[0]` owns `(start, succs[0].pos]`.
    pub fn insert(&mut self, start: Position, succs: Vec<Vnode<N>>) {
        let Some(end) = succs.first().map(|s| s.pos) else {
            return;
        };
        if self.ranges.len() >= self.capacity {
            // Simple and bounded: forget everything and learn again.
            self.ranges.clear();
        }
        self.ranges.insert(end, (start, succs));
    }

    /// Forgets every range owned by `node`.
    pub fn forget(&mut self, node: &N) {
        self.ranges
            .retain(|_, (_, succs)| succs.first().is_some_and(|s| s.node != *node));
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pos: Position, node: u32) -> Vnode<u32> {
        Vnode { pos, node }
    }

    fn config() -> super::super::ChordConfig {
        super::super::ChordConfig {
            successors: 4,
            fingers_per_tick: 1,
        }
    }

    /// Node 1 (at 100) still names node 3 (at 300) its successor, but node
    /// 2 joined at 200 and notified node 3. A lookup of 150 from node 1
    /// is answered from node 1's stale list, checked with node 3, whose
    /// predecessor is node 2, and checked with node 2: it ends at node 2.
    #[test]
    fn a_found_owner_is_checked_and_a_newcomer_before_it_wins() {
        let mut router = Router::new(1u32, &[100], config());
        router.set_successors(100, vec![v(300, 3)]);
        let (mut lookup, step) = Lookup::start(&mut router, 150);
        assert_eq!(step, Step::Ask(3, ChordRequest::Neighbors { pos: 300 }));
        let step = lookup.on_reply(ChordReply::Neighbors {
            pred: Some(v(200, 2)),
            succs: vec![v(100, 1)],
        });
        assert_eq!(step, Step::Ask(2, ChordRequest::Neighbors { pos: 200 }));
        // The newcomer knows its successor, no predecessor yet.
        let step = lookup.on_reply(ChordReply::Neighbors {
            pred: None,
            succs: vec![v(300, 3), v(100, 1)],
        });
        assert_eq!(
            step,
            Step::Done {
                start: 100,
                succs: vec![v(200, 2), v(300, 3), v(100, 1)]
            }
        );
        assert_eq!(lookup.hops, 2);
        // 250 is node 3's by its own predecessor: one check, and done.
        let (mut lookup, _) = Lookup::start(&mut router, 250);
        let step = lookup.on_reply(ChordReply::Neighbors {
            pred: Some(v(200, 2)),
            succs: vec![v(100, 1)],
        });
        assert_eq!(
            step,
            Step::Done {
                start: 200,
                succs: vec![v(300, 3), v(100, 1)]
            }
        );
        // A rough lookup (a finger) takes the list's word.
        let (_, step) = Lookup::start_rough(&mut router, 150);
        assert!(matches!(step, Step::Done { ref succs, .. } if succs[0] == v(300, 3)));
    }

    /// The owner named crashed: the next of the successor list is checked,
    /// and a predecessor that is the crashed node does not count.
    #[test]
    fn a_dead_owner_passes_its_range_to_the_next_in_the_list() {
        let mut router = Router::new(1u32, &[100], config());
        router.set_successors(100, vec![v(200, 2), v(300, 3)]);
        let (mut lookup, step) = Lookup::start(&mut router, 150);
        assert_eq!(step, Step::Ask(2, ChordRequest::Neighbors { pos: 200 }));
        let step = lookup.on_failure(&mut router);
        assert_eq!(step, Step::Ask(3, ChordRequest::Neighbors { pos: 300 }));
        let step = lookup.on_reply(ChordReply::Neighbors {
            pred: Some(v(200, 2)),
            succs: vec![v(100, 1)],
        });
        assert_eq!(
            step,
            Step::Done {
                start: 100,
                succs: vec![v(300, 3), v(100, 1)]
            }
        );
        // The router forgot node 2; when node 3 is gone too, the lookup
        // fails instead of guessing.
        let (mut lookup, step) = Lookup::start(&mut router, 150);
        assert_eq!(step, Step::Ask(3, ChordRequest::Neighbors { pos: 300 }));
        assert_eq!(lookup.on_failure(&mut router), Step::Failed);
    }

    #[test]
    fn the_cache_answers_inside_a_range_only_and_forgets_a_node() {
        let mut cache = LookupCache::new(4);
        cache.insert(100, vec![v(200, 1), v(300, 2)]);
        // A range that wraps past zero.
        cache.insert(u64::MAX - 10, vec![v(5, 3)]);
        assert_eq!(cache.get(150).map(|s| s[0].node), Some(1));
        assert_eq!(cache.get(200).map(|s| s[0].node), Some(1));
        assert_eq!(cache.get(100), None, "the start is the previous owner's");
        assert_eq!(cache.get(250), None);
        assert_eq!(cache.get(u64::MAX).map(|s| s[0].node), Some(3));
        assert_eq!(cache.get(3).map(|s| s[0].node), Some(3));
        cache.forget(&1);
        assert_eq!(cache.get(150), None);
        assert_eq!(cache.len(), 1);
        for i in 0..10 {
            cache.insert(i * 1000, vec![v(i * 1000 + 10, 9)]);
        }
        assert!(cache.len() <= 4, "the cache is bounded");
    }
}
