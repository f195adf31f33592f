//! Token allocation: where a joining node puts its positions on the ring.
//!
//! Random tokens balance poorly: with 16 random tokens per node the most
//! loaded node owns about 25% more than the mean. chorus instead chooses
//! each new token to split a range of the most loaded node, in the spirit of
//! Cassandra's token allocation (CASSANDRA-7032):
//!
//! - a node's load is the length of the ring it owns as primary (the arcs
//!   ending at its tokens), divided by its weight;
//! - a joining node with `count` tokens aims at its fair share,
//!   `ring × weight / total weight`, in `count` equal pieces;
//! - each piece is cut from the largest arc of the currently most loaded
//!   node, at most seven eighths of that arc, so the arc never vanishes.
//!
//! The first node has no donor: its tokens are evenly spaced from a
//! seed-chosen offset. Leaving gives each arc to the next token clockwise.
//!
//! The allocator is pure and deterministic: the same sequence of joins and
//! leaves gives the same tokens. The simulation keeps one allocator across
//! 100,000 joins; a real node builds one from the current members when a
//! node joins through it.

use std::collections::{BTreeMap, BTreeSet};

use super::Position;

/// The whole ring's length, 2^64, as a load unit.
const RING: u128 = 1 << 64;

/// Node handles are indices into the allocator's tables.
pub type Slot = usize;

#[derive(Default)]
pub struct Allocator {
    /// Every token and the slot that owns it.
    tokens: BTreeMap<Position, Slot>,
    nodes: Vec<NodeLoad>,
    /// (load per weight, slot) of every present node, to find the most loaded.
    by_load: BTreeSet<(u128, Slot)>,
}

#[derive(Clone, Default)]
struct NodeLoad {
    tokens: Vec<Position>,
    weight: u32,
    load: u128,
    present: bool,
}

impl NodeLoad {
    fn key(&self, slot: Slot) -> (u128, Slot) {
        (self.load / u128::from(self.weight.max(1)), slot)
    }
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node that already has tokens (for example from the ring
    /// document); returns its slot.
    pub fn insert(&mut self, weight: u32, tokens: &[Position]) -> Slot {
        let slot = self.nodes.len();
        self.nodes.push(NodeLoad {
            tokens: Vec::new(),
            weight,
            load: 0,
            present: true,
        });
        for &t in tokens {
            self.place(t, slot);
        }
        self.by_load.insert(self.nodes[slot].key(slot));
        slot
    }

    /// Adds a node with `count` new tokens chosen to balance the ring;
    /// returns its slot and tokens. `seed` places the first node's tokens.
    pub fn join(&mut self, weight: u32, count: usize, seed: u64) -> (Slot, Vec<Position>) {
        let slot = self.nodes.len();
        self.nodes.push(NodeLoad {
            tokens: Vec::with_capacity(count),
            weight,
            load: 0,
            present: true,
        });
        if self.tokens.is_empty() {
            let step = (RING / count.max(1) as u128) as u64;
            for i in 0..count as u64 {
                self.place(seed.wrapping_add(i.wrapping_mul(step)), slot);
            }
        } else {
            let total_weight: u128 = self
                .nodes
                .iter()
                .filter(|n| n.present)
                .map(|n| u128::from(n.weight))
                .sum();
            let share = RING * u128::from(weight) / total_weight.max(1);
            let piece = share / count.max(1) as u128;
            for _ in 0..count {
                let Some(&(_, donor)) = self.by_load.last() else {
                    break;
                };
                let Some((start, len)) = self.largest_arc(donor) else {
                    break;
                };
                // The donor is the most loaded node: it can spare a piece
                // of its largest arc, as long as it keeps some of it.
                let take = piece.min(len - len / 8);
                if take == 0 {
                    break;
                }
                self.place(start.wrapping_add(take as u64), slot);
            }
        }
        self.by_load.insert(self.nodes[slot].key(slot));
        (slot, self.nodes[slot].tokens.clone())
    }

    /// Removes a node; each of its arcs goes to the next token clockwise.
    pub fn leave(&mut self, slot: Slot) {
        let Some(node) = self.nodes.get(slot) else {
            return;
        };
        if !node.present {
            return;
        }
        self.by_load.remove(&node.key(slot));
        let tokens = std::mem::take(&mut self.nodes[slot].tokens);
        for t in tokens {
            let arc = self.arc(t);
            self.tokens.remove(&t);
            if let Some(next) = self.next_owner(t) {
                self.adjust(next, arc as i128);
            }
        }
        let node = &mut self.nodes[slot];
        node.present = false;
        node.load = 0;
    }

    /// Primary ownership of every slot, as a fraction of the ring (absent
    /// slots own 0).
    pub fn shares(&self) -> Vec<f64> {
        self.nodes
            .iter()
            .map(|n| n.load as f64 / RING as f64)
            .collect()
    }

    pub fn tokens(&self) -> &BTreeMap<Position, Slot> {
        &self.tokens
    }

    /// Puts token `t` on the ring for `slot`, taking its arc from the owner
    /// of the next token clockwise.
    fn place(&mut self, t: Position, slot: Slot) {
        if self.tokens.contains_key(&t) {
            return;
        }
        let donor = self.next_owner(t);
        self.tokens.insert(t, slot);
        self.nodes[slot].tokens.push(t);
        let arc = self.arc(t);
        self.nodes[slot].load += arc;
        if let Some(donor) = donor {
            self.adjust(donor, -(arc as i128));
        }
    }

    /// Changes a present node's load, keeping `by_load` in step.
    fn adjust(&mut self, slot: Slot, delta: i128) {
        let node = &mut self.nodes[slot];
        let in_index = self.by_load.remove(&node.key(slot));
        node.load = (node.load as i128 + delta).max(0) as u128;
        if in_index {
            self.by_load.insert(node.key(slot));
        }
    }

    /// The owner of the first token strictly after `t`, wrapping.
    fn next_owner(&self, t: Position) -> Option<Slot> {
        self.tokens
            .range(t.wrapping_add(1)..)
            .chain(self.tokens.range(..))
            .find(|(p, _)| **p != t)
            .map(|(_, s)| *s)
    }

    /// The length of the arc ending at token `t` (from the previous token).
    fn arc(&self, t: Position) -> u128 {
        let prev = self
            .tokens
            .range(..t)
            .next_back()
            .or_else(|| self.tokens.range(..).next_back())
            .map(|(p, _)| *p)
            .filter(|p| *p != t);
        match prev {
            Some(p) => u128::from(t.wrapping_sub(p)),
            None => RING,
        }
    }

    /// The start and length of `slot`'s largest arc.
    fn largest_arc(&self, slot: Slot) -> Option<(Position, u128)> {
        self.nodes[slot]
            .tokens
            .iter()
            .map(|&t| {
                let len = self.arc(t);
                (t.wrapping_sub(len as u64), len)
            })
            .max_by_key(|&(start, len)| (len, std::cmp::Reverse(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_over_mean(a: &Allocator) -> f64 {
        let shares: Vec<f64> = a.shares().into_iter().filter(|s| *s > 0.0).collect();
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        shares.iter().cloned().fold(0.0, f64::max) / mean
    }

    #[test]
    fn loads_sum_to_the_ring_and_stay_balanced() {
        let mut a = Allocator::new();
        for i in 0..200 {
            a.join(1, 16, i);
        }
        let total: f64 = a.shares().iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
        assert_eq!(a.tokens().len(), 200 * 16);
        let ratio = max_over_mean(&a);
        assert!(ratio <= 1.3, "max/mean {ratio}");
    }

    #[test]
    fn weight_doubles_the_share() {
        let mut a = Allocator::new();
        for i in 0..20 {
            a.join(1, 16, i);
        }
        let (heavy, tokens) = a.join(2, 32, 99);
        assert_eq!(tokens.len(), 32);
        let shares = a.shares();
        let light_mean = shares[..20].iter().sum::<f64>() / 20.0;
        let ratio = shares[heavy] / light_mean;
        assert!((1.6..=2.4).contains(&ratio), "heavy/light {ratio}");
    }

    #[test]
    fn leaving_gives_arcs_to_the_next_token() {
        let mut a = Allocator::new();
        for i in 0..10 {
            a.join(1, 8, i);
        }
        a.leave(3);
        let shares = a.shares();
        assert_eq!(shares[3], 0.0);
        let total: f64 = shares.iter().sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(a.tokens().values().all(|s| *s != 3));
        // The next join takes from the now heavier neighbours.
        a.join(1, 8, 7);
        assert!(max_over_mean(&a) <= 1.3);
    }
}
