//! Iterative lookups and the lookup cache.
//!
//! A [`Lookup`] is find_successor(id) as a small state machine: the driver
//! asks the node it names and feeds the reply back, until the owner is
//! found. A node that does not answer is added to the lookup's avoid list
//! and the search resumes from the asking router, which routes around it.
//!
//! The [`LookupCache`] remembers, for each range found, the owner and its
//! successors, so the steady state of a node that forwards requests is one
//! hop: straight to a replica. Entries are dropped when the members change
//! or a forward to them fails.

use std::collections::BTreeMap;

use super::Position;
use super::chord::{ChordReply, ChordRequest, MAX_AVOID, NodeRef, Router, Vnode, in_half_open};

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
    /// Starts from what `router` knows.
    pub fn start(router: &mut Router<N>, id: Position) -> (Lookup<N>, Step<N>) {
        let mut lookup = Lookup {
            id,
            hops: 0,
            avoid: Vec::new(),
            asking: None,
        };
        let step = lookup.follow(router.route(id, &[]));
        (lookup, step)
    }

    /// Starts at another node: how a node that knows no one joins.
    pub fn start_at(seed: N, id: Position) -> (Lookup<N>, Step<N>) {
        let mut lookup = Lookup {
            id,
            hops: 0,
            avoid: Vec::new(),
            asking: None,
        };
        let step = lookup.ask(seed);
        (lookup, step)
    }

    pub fn on_reply(&mut self, reply: ChordReply<N>) -> Step<N> {
        self.follow(reply)
    }

    /// The node last asked did not answer: route around it from `router`.
    pub fn on_failure(&mut self, router: &mut Router<N>) -> Step<N> {
        if let Some(dead) = self.asking.take() {
            router.on_unreachable(&dead);
            if self.avoid.len() == MAX_AVOID {
                return Step::Failed;
            }
            self.avoid.push(dead);
        }
        let reply = router.route(self.id, &self.avoid);
        self.follow(reply)
    }

    fn follow(&mut self, reply: ChordReply<N>) -> Step<N> {
        match reply {
            ChordReply::Found { start, succs } if !succs.is_empty() => Step::Done { start, succs },
            ChordReply::Next { hop } if !self.avoid.contains(&hop.node) => self.ask(hop.node),
            _ => Step::Failed,
        }
    }

    fn ask(&mut self, node: N) -> Step<N> {
        if self.hops >= MAX_HOPS {
            return Step::Failed;
        }
        self.hops += 1;
        self.asking = Some(node.clone());
        let request = ChordRequest::FindSuccessor {
            id: self.id,
            avoid: self.avoid.clone(),
        };
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
