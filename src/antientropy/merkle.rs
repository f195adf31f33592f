//! The Merkle tree of one ring range (pure).
//!
//! A fixed shape: a root, then [`DEPTH`] levels of [`FANOUT`]-way nodes, so
//! [`LEAVES`] leaves, each covering an equal slice of the range's
//! positions. Every node's hash is the XOR of the hashes of the entries
//! beneath it, so adding or removing an entry is a walk from its leaf to
//! the root, and two trees over the same entries are equal whatever order
//! the entries came in. [`Descent`] is the comparison of two trees, one
//! level at a time, as two replicas run it over the network.

use std::ops::RangeInclusive;

use crate::ring::Position;

pub type Hash = [u8; 32];

/// The first eight bytes of a hash: how inner nodes travel during a
/// descent, a quarter of the bytes. Two different nodes pass for equal only
/// on a 2^-64 chance; roots travel whole.
pub type Digest = u64;

pub fn digest(hash: &Hash) -> Digest {
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    Digest::from_be_bytes(first)
}

/// Children per inner node.
pub const FANOUT: usize = 16;
/// Levels below the root.
pub const DEPTH: usize = 3;
/// Leaves per tree: `FANOUT ^ DEPTH`.
pub const LEAVES: usize = FANOUT.pow(DEPTH as u32);

/// The hash of one stored entry: its key and its encoded sibling set.
pub fn entry_hash(key: &[u8], set: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(set);
    *hasher.finalize().as_bytes()
}

/// The leaf of `range` that `pos` falls in. `pos` must lie in `range`.
pub fn leaf(range: &RangeInclusive<Position>, pos: Position) -> usize {
    let len = span(range);
    let offset = u128::from(pos.wrapping_sub(*range.start()));
    ((offset * LEAVES as u128) / len) as usize
}

/// The positions of `range` that leaf `index` covers; `None` for a leaf
/// that covers none (a range shorter than [`LEAVES`] positions).
pub fn leaf_range(
    range: &RangeInclusive<Position>,
    index: usize,
) -> Option<RangeInclusive<Position>> {
    let len = span(range);
    // Leaf i holds the offsets o with i·len <= o·LEAVES < (i+1)·len.
    let first = (index as u128 * len).div_ceil(LEAVES as u128);
    let next = ((index as u128 + 1) * len).div_ceil(LEAVES as u128);
    (first < next).then(|| {
        let start = *range.start() as u128;
        (start + first) as Position..=(start + next - 1) as Position
    })
}

fn span(range: &RangeInclusive<Position>) -> u128 {
    u128::from(*range.end()) - u128::from(*range.start()) + 1
}

/// A Merkle tree of XOR-combined entry hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// `levels[0]` is the root, `levels[DEPTH]` the leaves.
    levels: Vec<Vec<Hash>>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// The tree of no entries: every hash zero.
    pub fn new() -> Tree {
        Tree {
            levels: (0..=DEPTH)
                .map(|l| vec![[0; 32]; FANOUT.pow(l as u32)])
                .collect(),
        }
    }

    /// Adds an entry's hash to leaf `leaf`, or removes it if it was there:
    /// XOR is its own inverse.
    pub fn toggle(&mut self, leaf: usize, hash: &Hash) {
        let mut index = leaf;
        for level in (0..=DEPTH).rev() {
            if let Some(node) = self.levels[level].get_mut(index) {
                xor(node, hash);
            }
            index /= FANOUT;
        }
    }

    /// Replaces an entry's old hash with its new one (either absent).
    pub fn update(&mut self, leaf: usize, old: Option<&Hash>, new: Option<&Hash>) {
        if let Some(old) = old {
            self.toggle(leaf, old);
        }
        if let Some(new) = new {
            self.toggle(leaf, new);
        }
    }

    /// The hash of leaf `index` (zero for a leaf that does not exist).
    pub fn leaf_hash(&self, index: usize) -> Hash {
        self.levels[DEPTH].get(index).copied().unwrap_or([0; 32])
    }

    /// The digests of the children of node `index` at `level`.
    pub fn child_digests(&self, level: usize, index: usize) -> Vec<Digest> {
        self.children(level, index).iter().map(digest).collect()
    }

    pub fn root(&self) -> Hash {
        self.levels[0][0]
    }

    /// The hashes of the children of node `index` at `level` (`level` below
    /// [`DEPTH`]); empty for a node that does not exist.
    pub fn children(&self, level: usize, index: usize) -> &[Hash] {
        let Some(below) = self.levels.get(level + 1).filter(|_| level < DEPTH) else {
            return &[];
        };
        let first = index.saturating_mul(FANOUT);
        below
            .get(first..first.saturating_add(FANOUT))
            .unwrap_or(&[])
    }
}

/// XORs `other` into `into`.
pub fn xor(into: &mut Hash, other: &Hash) {
    for (a, b) in into.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// One side's walk down two trees to the leaves that differ.
///
/// Start with [`Descent::start`] from the two roots; then, while
/// [`Descent::asking`] names nodes, get the other side's children of those
/// nodes and hand them to [`Descent::step`]. When nothing is asked, the
/// differing leaves are [`Descent::leaves`]. Each step asks only for the
/// children of nodes whose hashes differ.
#[derive(Clone, Debug)]
pub struct Descent {
    level: usize,
    differing: Vec<usize>,
}

impl Descent {
    pub fn start(mine: &Tree, their_root: &Hash) -> Descent {
        let differing = if mine.root() == *their_root {
            Vec::new()
        } else {
            vec![0]
        };
        Descent {
            level: 0,
            differing,
        }
    }

    /// The level of the nodes whose children the next step needs, and the
    /// nodes; `None` once the walk reached the leaves (or found no
    /// difference).
    pub fn asking(&self) -> Option<(usize, &[usize])> {
        (self.level < DEPTH && !self.differing.is_empty())
            .then_some((self.level, self.differing.as_slice()))
    }

    /// Compares the other side's children of the asked nodes (one list of
    /// digests per node, in the order asked) with this tree's. A missing or
    /// short list counts as all different.
    pub fn step(&mut self, mine: &Tree, theirs: &[Vec<Digest>]) {
        let Some((level, asked)) = self.asking() else {
            return;
        };
        let mut next = Vec::new();
        for (i, &node) in asked.iter().enumerate() {
            let own = mine.children(level, node);
            let other = theirs.get(i).map(Vec::as_slice).unwrap_or(&[]);
            for (c, hash) in own.iter().enumerate() {
                if other.get(c) != Some(&digest(hash)) {
                    next.push(node * FANOUT + c);
                }
            }
        }
        self.level += 1;
        self.differing = next;
    }

    /// The leaves that differ, once [`Descent::asking`] is `None`.
    pub fn leaves(&self) -> &[usize] {
        if self.level == DEPTH {
            &self.differing
        } else {
            &[]
        }
    }
}

/// The keys whose entries differ between two sides' `(key, hash)` lists of
/// the same leaves: held by one side only, or with different hashes. Both
/// lists sorted by key.
pub fn differing_keys(mine: &[(String, Hash)], theirs: &[(String, Hash)]) -> Vec<String> {
    let (mut a, mut b) = (mine.iter().peekable(), theirs.iter().peekable());
    let mut out = Vec::new();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some((k, _)), None) | (None, Some((k, _))) => {
                out.push(k.clone());
                if a.peek().is_some() {
                    a.next();
                } else {
                    b.next();
                }
            }
            (Some((ka, ha)), Some((kb, hb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push(ka.clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(kb.clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ha != hb {
                        out.push(ka.clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
