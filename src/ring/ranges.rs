//! Ranges: the ring cut where preference lists change.
//!
//! Every token ends an arc, `(previous token, token]`, and every key on an
//! arc has the same preference list (placement looks only at the tokens
//! met clockwise from the key). A [`Range`] is a maximal run of adjacent
//! arcs with the same list: the unit that anti-entropy compares between
//! replicas and that handoff moves. The arc that wraps past zero is split
//! in two, so every range is an ordinary `start..=end` of positions and a
//! contiguous slice of the store.

use std::ops::RangeInclusive;

use super::{Position, Ring};

/// A run of positions whose keys all have the same preference list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    pub positions: RangeInclusive<Position>,
    /// The preference list of every key in the range, primary first.
    pub replicas: Vec<String>,
}

/// The arcs between `bounds` (sorted, without repeats), in position order,
/// each with the bound that ends it: `(previous, bound]`, the arc that wraps
/// past zero as `0..=first` and `last + 1..=MAX`, both ended by `first`.
pub fn arcs(bounds: &[Position]) -> Vec<(RangeInclusive<Position>, Position)> {
    let (Some(&first), Some(&last)) = (bounds.first(), bounds.last()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(bounds.len() + 1);
    out.push((0..=first, first));
    out.extend(bounds.windows(2).map(|w| (w[0] + 1..=w[1], w[1])));
    if last < Position::MAX {
        out.push((last + 1..=Position::MAX, first));
    }
    out
}

impl Ring {
    /// The ranges of the whole ring with their preference lists of `n`
    /// nodes, in position order; they tile every position exactly once.
    /// Empty for a ring without tokens.
    pub fn ranges(&self, n: usize) -> Vec<Range> {
        let bounds: Vec<Position> = self.positions().collect();
        let mut out: Vec<Range> = Vec::new();
        for (positions, at) in arcs(&bounds) {
            let replicas: Vec<String> = self
                .preference_list(at, n)
                .into_iter()
                .map(str::to_string)
                .collect();
            match out.last_mut() {
                Some(prev) if prev.replicas == replicas => {
                    prev.positions = *prev.positions.start()..=*positions.end();
                }
                _ => out.push(Range {
                    positions,
                    replicas,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ring::Owner;

    fn ring(tokens: &[Vec<Position>]) -> Ring {
        Ring::new(tokens.iter().enumerate().map(|(i, t)| {
            let owner = Owner {
                id: format!("n{i}"),
                zone: None,
            };
            (owner, t.clone())
        }))
    }

    proptest! {
        #[test]
        fn ranges_tile_the_ring_and_hold_each_keys_preference_list(
            tokens in prop::collection::vec(prop::collection::vec(any::<u64>(), 1..6), 1..7),
            n in 1usize..4,
            keys in prop::collection::vec(any::<u64>(), 50),
        ) {
            let ring = ring(&tokens);
            let ranges = ring.ranges(n);
            prop_assert_eq!(*ranges[0].positions.start(), 0);
            prop_assert_eq!(*ranges[ranges.len() - 1].positions.end(), Position::MAX);
            for w in ranges.windows(2) {
                prop_assert_eq!(w[0].positions.end().checked_add(1), Some(*w[1].positions.start()));
                // Maximal, except where the wrap arc is split.
                prop_assert!(w[0].replicas != w[1].replicas || *w[1].positions.end() == Position::MAX);
            }
            let probes = keys.iter().copied().chain(ring.positions()).chain([0, Position::MAX]);
            for key in probes {
                let range = ranges.iter().find(|r| r.positions.contains(&key));
                let range = range.expect("every position is in a range");
                prop_assert_eq!(&range.replicas, &ring.preference_list(key, n));
            }
        }
    }

    #[test]
    fn a_ring_without_tokens_has_no_ranges() {
        assert!(Ring::default().ranges(3).is_empty());
        assert_eq!(
            arcs(&[Position::MAX]),
            vec![(0..=Position::MAX, Position::MAX)]
        );
    }
}
