//! Placement: which nodes hold a key.
//!
//! A [`Ring`] is the sorted list of every owning node's tokens. The token
//! at or after a key's position (clockwise, wrapping) is the key's primary;
//! the [`Ring::preference_list`] continues clockwise and takes the first N
//! distinct nodes, preferring nodes in zones not yet used, so the replicas
//! of a key sit in N distinct zones when the cluster has that many. With
//! fewer zones than N it falls back to distinct nodes in clockwise order.
//!
//! Because only the nodes met on the walk matter, a node that joins can only
//! enter lists (it never reorders the others'), and a node that leaves only
//! leaves lists: a join or leave moves just the keys of the ranges that
//! changed hands.

use std::collections::HashMap;

use super::Position;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub zone: Option<String>,
}

/// The owning nodes and their tokens, sorted by position.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    tokens: Vec<(Position, u32)>,
    owners: Vec<Owner>,
    /// Zone index of each owner; a node without a zone is its own zone.
    zone_of: Vec<u32>,
    zones: usize,
}

impl Ring {
    /// Builds a ring from owners and their tokens. A position claimed twice
    /// goes to the owner listed first.
    pub fn new(nodes: impl IntoIterator<Item = (Owner, Vec<Position>)>) -> Ring {
        let mut ring = Ring::default();
        let mut zone_ids: HashMap<String, u32> = HashMap::new();
        for (owner, tokens) in nodes {
            let index = ring.owners.len() as u32;
            let zone = match &owner.zone {
                Some(z) => {
                    let next = ring.zones as u32;
                    *zone_ids.entry(z.clone()).or_insert_with(|| next)
                }
                None => ring.zones as u32,
            };
            if zone as usize == ring.zones {
                ring.zones += 1;
            }
            ring.zone_of.push(zone);
            ring.owners.push(owner);
            ring.tokens.extend(tokens.into_iter().map(|t| (t, index)));
        }
        ring.tokens.sort_by_key(|&(t, i)| (t, i));
        ring.tokens.dedup_by_key(|&mut (t, _)| t);
        ring
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn owners(&self) -> &[Owner] {
        &self.owners
    }

    /// The first `n` distinct nodes clockwise from `position`, in distinct
    /// zones where possible.
    pub fn preference_list(&self, position: Position, n: usize) -> Vec<&str> {
        self.walk(position, n)
            .into_iter()
            .map(|i| self.owners[i as usize].id.as_str())
            .collect()
    }

    /// Every token position, in ring order.
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.tokens.iter().map(|&(t, _)| t)
    }

    /// The share of the ring `id` owns as primary (0 to 1).
    pub fn ownership(&self, id: &str) -> f64 {
        let Some(index) = self.owners.iter().position(|o| o.id == id) else {
            return 0.0;
        };
        if self.tokens.len() == 1 {
            return 1.0;
        }
        let owned: u128 = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].1 as usize == index)
            .map(|i| {
                let prev = self.tokens[(i + self.tokens.len() - 1) % self.tokens.len()].0;
                u128::from(self.tokens[i].0.wrapping_sub(prev))
            })
            .sum();
        owned as f64 / 2f64.powi(64)
    }

    /// The primary owner of `position`: the node of the first token at or after it.
    pub fn primary(&self, position: Position) -> Option<&str> {
        let at = self.tokens.partition_point(|&(t, _)| t < position);
        let (_, owner) = self.tokens.get(at).or(self.tokens.first())?;
        Some(self.owners[*owner as usize].id.as_str())
    }

    fn walk(&self, position: Position, n: usize) -> Vec<u32> {
        let want = n.min(self.owners.len());
        let mut chosen: Vec<u32> = Vec::with_capacity(want);
        let mut deferred: Vec<u32> = Vec::new();
        let mut zones_used: Vec<u32> = Vec::with_capacity(want);
        let start = self.tokens.partition_point(|&(t, _)| t < position);
        let clockwise = self.tokens[start..].iter().chain(&self.tokens[..start]);
        for &(_, owner) in clockwise {
            if chosen.len() == want {
                break;
            }
            if chosen.contains(&owner) || deferred.contains(&owner) {
                continue;
            }
            let zone = self.zone_of[owner as usize];
            if !zones_used.contains(&zone) || zones_used.len() == self.zones {
                chosen.push(owner);
                if !zones_used.contains(&zone) {
                    zones_used.push(zone);
                }
            } else {
                deferred.push(owner);
            }
        }
        // Fewer zones than replicas: fill with the skipped nodes, in clockwise order.
        let missing = want - chosen.len();
        chosen.extend(deferred.into_iter().take(missing));
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::position;
    use crate::ring::tokens::Allocator;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// A ring of `zones.len()` nodes with balanced tokens, in the given zones.
    fn ring(zones: &[Option<u8>], tokens: usize) -> (Ring, Vec<(Owner, Vec<Position>)>) {
        let mut alloc = Allocator::new();
        let nodes: Vec<(Owner, Vec<Position>)> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let (_, t) = alloc.join(1, tokens, i as u64 * 7919);
                let owner = Owner {
                    id: format!("n{i}"),
                    zone: z.map(|z| format!("z{z}")),
                };
                (owner, t)
            })
            .collect();
        (Ring::new(nodes.clone()), nodes)
    }

    fn keys(count: usize) -> Vec<Position> {
        (0..count)
            .map(|i| position(format!("key-{i}").as_bytes()))
            .collect()
    }

    proptest! {
        #[test]
        fn preference_lists_are_distinct_deterministic_and_zone_spread(
            zones in prop::collection::vec(prop::option::of(0u8..4), 1..12),
            tokens in 1usize..8,
            n in 1usize..6,
            key in any::<u64>(),
        ) {
            let (ring, nodes) = ring(&zones, tokens);
            let list = ring.preference_list(key, n);
            prop_assert_eq!(list.len(), n.min(zones.len()));
            let distinct: HashSet<&str> = list.iter().copied().collect();
            prop_assert_eq!(distinct.len(), list.len());
            let again = Ring::new(nodes);
            prop_assert_eq!(&list, &again.preference_list(key, n));
            // As many distinct zones as the cluster can give.
            let zone = |id: &str| {
                let owner = ring.owners().iter().find(|o| o.id == id).expect("owner");
                owner.zone.clone().unwrap_or_else(|| format!("node {id}"))
            };
            let all_zones: HashSet<String> = ring.owners().iter().map(|o| zone(&o.id)).collect();
            let used: HashSet<String> = list.iter().map(|id| zone(id)).collect();
            prop_assert_eq!(used.len(), list.len().min(all_zones.len()));
            prop_assert_eq!(list.first().copied(), ring.primary(key));
        }

        #[test]
        fn a_join_or_leave_moves_only_the_ranges_that_changed_hands(
            zones in prop::collection::vec(prop::option::of(0u8..3), 2..10),
            n in 1usize..4,
        ) {
            let (before, mut nodes) = ring(&zones, 8);
            let mut alloc = Allocator::new();
            for (_, t) in &nodes {
                alloc.insert(1, t);
            }
            let (_, t) = alloc.join(1, 8, 1);
            nodes.push((Owner { id: "new".into(), zone: Some("z9".into()) }, t));
            let after = Ring::new(nodes.clone());
            let without = Ring::new(nodes[1..].to_vec());
            for key in keys(300) {
                let (old, new) = (before.preference_list(key, n), after.preference_list(key, n));
                if old != new {
                    prop_assert!(new.contains(&"new"), "join changed {:?} to {:?}", old, new);
                }
                let gone = without.preference_list(key, n);
                if gone != new {
                    prop_assert!(new.contains(&"n0"), "leave changed {:?} to {:?}", new, gone);
                }
            }
        }
    }

    #[test]
    fn a_join_or_a_leave_moves_about_one_in_nodes_of_the_keys() {
        let keys = keys(100_000);
        for nodes in [4usize, 10, 40] {
            let mut alloc = Allocator::new();
            let mut members = Vec::new();
            for i in 0..nodes {
                let (_, t) = alloc.join(1, 16, i as u64);
                members.push((
                    Owner {
                        id: format!("n{i}"),
                        zone: None,
                    },
                    t,
                ));
            }
            let before = Ring::new(members.clone());
            let (_, t) = alloc.join(1, 16, 0);
            members.push((
                Owner {
                    id: "new".into(),
                    zone: None,
                },
                t,
            ));
            let after = Ring::new(members.clone());
            let moved = |a: &Ring, b: &Ring| {
                keys.iter()
                    .filter(|&&k| a.primary(k) != b.primary(k))
                    .count() as f64
                    / keys.len() as f64
            };
            let fair = 1.0 / (nodes + 1) as f64;
            let joined = moved(&before, &after);
            assert!(
                (0.7 * fair..=1.3 * fair).contains(&joined),
                "{nodes} nodes + 1: {joined:.4} of keys moved, fair share {fair:.4}"
            );
            // And a leave of one of the old nodes moves about its share too.
            let without_n0 = Ring::new(members[1..].to_vec());
            let left = moved(&after, &without_n0);
            assert!(
                (0.7 * fair..=1.3 * fair).contains(&left),
                "{} nodes - 1: {left:.4} of keys moved, fair share {fair:.4}",
                nodes + 1
            );
        }
    }
}
