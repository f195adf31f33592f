//! Coverage: which replicas a scan asks, for which token ranges.
//!
//! Keys are placed by hash, so the keys of any key range lie all over the
//! ring: a scan is a coverage query (Riak's coverage plans), which reads
//! every token range ([`Range`]) from `r` of its replicas. The plan asks
//! each range's replicas in the order a single read would (this node
//! first, then at random, those held down last) and groups what it asks
//! one node into one [`Ask`], so a page costs one call per node, not one
//! per range. When an ask fails, each of its ranges is asked of its next
//! replica not asked yet; a range that runs out of replicas fails the
//! page, as a read short of its quorum does.
//!
//! Pure: no I/O. Invariant: the plan is done exactly when every range has
//! `r` answers from distinct replicas, each of which held the range.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;

use crate::ring::Position;
use crate::ring::ranges::Range;

/// One call of a scan: the ranges (by index in the plan) `node` covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub node: String,
    pub ranges: Vec<usize>,
}

/// Which replicas were asked for each range, and which answered.
#[derive(Debug)]
pub struct Coverage {
    positions: Vec<RangeInclusive<Position>>,
    /// Per range: its replicas not asked yet, in the order to ask them.
    spare: Vec<VecDeque<String>>,
    /// Per range: how many replicas answered for it.
    answered: Vec<usize>,
    r: usize,
}

/// A range none of whose replicas is left to ask: the page fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncovered {
    pub range: RangeInclusive<Position>,
    pub answered: usize,
}

impl Coverage {
    /// The plan for `ranges` at `r`, and its first asks. `order` puts a
    /// range's replicas in the order to ask them.
    pub fn new(
        ranges: &[Range],
        r: usize,
        mut order: impl FnMut(Vec<String>) -> Vec<String>,
    ) -> (Coverage, Vec<Ask>) {
        let mut coverage = Coverage {
            positions: ranges.iter().map(|range| range.positions.clone()).collect(),
            spare: ranges
                .iter()
                .map(|range| order(range.replicas.clone()).into())
                .collect(),
            answered: vec![0; ranges.len()],
            r,
        };
        let mut asks = BTreeMap::<String, Vec<usize>>::new();
        for (i, spare) in coverage.spare.iter_mut().enumerate() {
            for node in spare.drain(..r.min(spare.len())) {
                asks.entry(node).or_default().push(i);
            }
        }
        (coverage, into_asks(asks))
    }

    /// The positions of range `i`.
    pub fn positions(&self, i: usize) -> &RangeInclusive<Position> {
        &self.positions[i]
    }

    /// The range (by index) that holds `position`.
    pub fn range_of(&self, position: Position) -> Option<usize> {
        let i = self.positions.partition_point(|r| *r.end() < position);
        self.positions
            .get(i)
            .is_some_and(|r| r.contains(&position))
            .then_some(i)
    }

    /// The share of the ring `ask` covers, from 0 to 1: about the share of
    /// the keys of any key range it will find (positions are hashes).
    pub fn share(&self, ask: &Ask) -> f64 {
        let width: f64 = ask
            .ranges
            .iter()
            .map(|&i| (self.positions[i].end() - self.positions[i].start()) as f64 + 1.0)
            .sum();
        width / (Position::MAX as f64 + 1.0)
    }

    /// `ask` was answered.
    pub fn answered(&mut self, ask: &Ask) {
        for &i in &ask.ranges {
            self.answered[i] += 1;
        }
    }

    /// `ask` failed: its ranges go to their next replicas, or the first
    /// range left without one is returned.
    pub fn failed(&mut self, ask: &Ask) -> Result<Vec<Ask>, Uncovered> {
        let mut asks = BTreeMap::<String, Vec<usize>>::new();
        for &i in &ask.ranges {
            let Some(next) = self.spare[i].pop_front() else {
                return Err(Uncovered {
                    range: self.positions[i].clone(),
                    answered: self.answered[i],
                });
            };
            asks.entry(next).or_default().push(i);
        }
        Ok(into_asks(asks))
    }

    /// Whether every range has `r` answers.
    pub fn is_done(&self) -> bool {
        self.answered.iter().all(|&a| a >= self.r)
    }
}

fn into_asks(asks: BTreeMap<String, Vec<usize>>) -> Vec<Ask> {
    asks.into_iter()
        .map(|(node, ranges)| Ask { node, ranges })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ring::{Owner, Ring};

    fn ring(nodes: usize, tokens: &[Vec<Position>]) -> Ring {
        Ring::new((0..nodes).map(|i| {
            let owner = Owner {
                id: format!("n{i}"),
                zone: None,
            };
            (owner, tokens[i % tokens.len()].clone())
        }))
    }

    proptest! {
        /// Whatever fails, the plan is done only when every range was
        /// answered by `r` distinct replicas of its own, and it fails only
        /// when some range has fewer than `r` replicas that did not fail.
        #[test]
        fn every_range_is_answered_by_r_of_its_replicas_or_the_page_fails(
            tokens in proptest::collection::vec(proptest::collection::vec(any::<u64>(), 1..6), 3..7),
            r in 1usize..4,
            dead in proptest::collection::btree_set(0usize..6, 0..4),
        ) {
            let nodes = tokens.len();
            let ring = ring(nodes, &tokens);
            let ranges = ring.ranges(3);
            let (mut plan, mut asks) = Coverage::new(&ranges, r, |replicas| replicas);
            let dead: Vec<String> = dead.iter().map(|i| format!("n{i}")).collect();
            let mut answers: Vec<Vec<String>> = vec![Vec::new(); ranges.len()];
            let mut failed = None;
            while let Some(ask) = asks.pop() {
                for &i in &ask.ranges {
                    prop_assert!(ranges[i].replicas.contains(&ask.node), "asked a non-replica");
                }
                if dead.contains(&ask.node) {
                    match plan.failed(&ask) {
                        Ok(more) => asks.extend(more),
                        Err(uncovered) => { failed = Some(uncovered); break; }
                    }
                } else {
                    plan.answered(&ask);
                    for &i in &ask.ranges {
                        prop_assert!(!answers[i].contains(&ask.node), "asked twice");
                        answers[i].push(ask.node.clone());
                    }
                }
            }
            let short = ranges.iter().any(|range| {
                range.replicas.iter().filter(|n| !dead.contains(n)).count() < r.min(range.replicas.len())
            });
            match failed {
                None => {
                    prop_assert!(!short);
                    prop_assert!(plan.is_done() || ranges.iter().any(|x| x.replicas.len() < r));
                    for (i, range) in ranges.iter().enumerate() {
                        prop_assert_eq!(answers[i].len(), r.min(range.replicas.len()));
                    }
                }
                Some(_) => prop_assert!(short),
            }
            for range in &ranges {
                let at = *range.positions.start();
                prop_assert_eq!(plan.range_of(at).map(|i| &ranges[i]), Some(range));
            }
        }
    }

    #[test]
    fn one_ask_per_node_and_shares_that_sum_to_r() {
        let ring = ring(3, &[vec![10, 400], vec![100, 900], vec![500, u64::MAX / 2]]);
        let ranges = ring.ranges(3);
        let (plan, asks) = Coverage::new(&ranges, 2, |replicas| replicas);
        let nodes: Vec<&str> = asks.iter().map(|a| a.node.as_str()).collect();
        let mut unique = nodes.clone();
        unique.dedup();
        assert_eq!(nodes, unique, "one ask per node");
        let total: f64 = asks.iter().map(|a| plan.share(a)).sum();
        assert!(
            (total - 2.0).abs() < 1e-9,
            "r = 2 covers the ring twice: {total}"
        );
    }
}
