//! The Merkle trees of the ranges this node replicates, kept current.
//!
//! [`Trees`] holds one [`Tree`] per [`Range`] whose preference list holds
//! this node. It is the store's [`Observer`]: every committed change XORs
//! the key's old entry hash out of its leaf and the new one in, so the
//! trees follow the store without rescanning it.
//!
//! A tree is (re)built from the store, at start, on a ring change and on
//! demand, a chunk of keys at a time ([`Trees::build_step`]). Each chunk
//! is scanned under the same lock that the observer takes around a write,
//! and a change is applied to a tree only where its build has already
//! scanned; beyond that point the build will see the change in the store.
//! So a tree never counts a key twice or misses one, however writes and
//! the build interleave. Only complete trees take part in exchanges.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use parking_lot::Mutex;

use super::merkle::{self, Descent, Digest, Hash, Tree};
use crate::error::Result;
use crate::ring::{Position, Range};
use crate::store::{Change, Observer, Store, encode_set};

/// The trees of this node's ranges, by the first position of each range.
#[derive(Default)]
pub struct Trees {
    slots: Mutex<BTreeMap<Position, Slot>>,
}

struct Slot {
    range: Range,
    tree: Tree,
    /// The build has scanned every position up to this one (none yet: `None`).
    scanned: Option<Position>,
}

impl Slot {
    fn new(range: Range) -> Slot {
        Slot {
            range,
            tree: Tree::new(),
            scanned: None,
        }
    }

    fn complete(&self) -> bool {
        self.scanned == Some(*self.range.positions.end())
    }
}

/// The sorted `(key, entry hash)` list of one leaf.
pub type LeafList = (u32, Vec<(String, Hash)>);

impl Trees {
    pub fn new() -> Trees {
        Trees::default()
    }

    /// Makes `ranges` the ranges kept. A range kept before with the same
    /// positions keeps its tree; a new one starts empty, to be built.
    /// Returns how many trees must be built.
    pub fn set_ranges(&self, ranges: Vec<Range>) -> usize {
        let mut slots = self.slots.lock();
        super::follow_ranges(&mut slots, ranges, |s| &mut s.range, Slot::new);
        slots.values().filter(|s| !s.complete()).count()
    }

    /// Drops every tree's content, to be built again from the store;
    /// returns how many.
    pub fn rebuild(&self) -> usize {
        let mut slots = self.slots.lock();
        for slot in slots.values_mut() {
            *slot = Slot::new(slot.range.clone());
        }
        slots.len()
    }

    /// Scans up to `chunk` keys of the first incomplete tree into it.
    /// Returns whether any tree is still incomplete.
    pub fn build_step(&self, store: &dyn Store, chunk: usize) -> Result<bool> {
        let mut slots = self.slots.lock();
        let Some(slot) = slots.values_mut().find(|s| !s.complete()) else {
            return Ok(false);
        };
        let positions = slot.range.positions.clone();
        let from = match slot.scanned {
            None => *positions.start(),
            Some(p) => p + 1,
        };
        let entries = store.scan(from..=*positions.end(), chunk.max(1))?;
        for (key, set) in &entries {
            let pos = crate::ring::position(key.as_bytes());
            let hash = hash_of(key, set)?;
            slot.tree.toggle(merkle::leaf(&positions, pos), &hash);
        }
        slot.scanned = Some(match entries.last() {
            // Keys sharing the last position (a 64-bit collision) would be
            // skipped; handoff makes the same assumption.
            Some((key, _)) if entries.len() >= chunk => crate::ring::position(key.as_bytes()),
            _ => *positions.end(),
        });
        Ok(slots.values().any(|s| !s.complete()))
    }

    /// The ranges whose trees are complete, in ring order.
    pub fn ranges(&self) -> Vec<Range> {
        let slots = self.slots.lock();
        slots
            .values()
            .filter(|s| s.complete())
            .map(|s| s.range.clone())
            .collect()
    }

    /// The root of the complete tree of exactly `positions`.
    pub fn root(&self, positions: &RangeInclusive<Position>) -> Option<Hash> {
        self.with(positions, |tree| tree.root())
    }

    /// The child digests of `nodes` at `level` of the complete tree of
    /// exactly `positions`, one list per node.
    pub fn children(
        &self,
        positions: &RangeInclusive<Position>,
        level: usize,
        nodes: &[u32],
    ) -> Option<Vec<Vec<Digest>>> {
        self.with(positions, |tree| {
            nodes
                .iter()
                .map(|&n| tree.child_digests(level, n as usize))
                .collect()
        })
    }

    /// One step of `descent` against the tree of `positions`; false when
    /// that tree is gone or incomplete (the ring changed meanwhile).
    pub fn step(
        &self,
        positions: &RangeInclusive<Position>,
        descent: &mut Descent,
        theirs: &[Vec<Digest>],
    ) -> bool {
        self.with(positions, |tree| descent.step(tree, theirs))
            .is_some()
    }

    /// Starts a descent from the root of the tree of `positions`.
    pub fn descent(
        &self,
        positions: &RangeInclusive<Position>,
        their_root: &Hash,
    ) -> Option<Descent> {
        self.with(positions, |tree| Descent::start(tree, their_root))
    }

    /// The `(key, entry hash)` lists of `leaves` of the range `positions`
    /// in `store`, each sorted by key, leaf by leaf in the order asked.
    /// Stops after the leaf that brings the total to `max_entries`, so the
    /// answer may cover only a prefix of `leaves`.
    ///
    /// Each leaf is scanned under the observer's lock, and where this
    /// node's tree of the range disagrees with what the scan found, the
    /// leaf is corrected: a tree that drifted from its store (a bug, a
    /// disk restored under a running node) heals where it is compared,
    /// instead of differing from its peers forever.
    pub fn leaf_lists(
        &self,
        store: &dyn Store,
        positions: &RangeInclusive<Position>,
        leaves: &[u32],
        max_entries: usize,
    ) -> Result<Vec<LeafList>> {
        let mut out = Vec::with_capacity(leaves.len());
        let mut total = 0;
        for &leaf in leaves {
            if total >= max_entries {
                break;
            }
            let Some(slice) = merkle::leaf_range(positions, leaf as usize) else {
                out.push((leaf, Vec::new()));
                continue;
            };
            let mut slots = self.slots.lock();
            let mut found = [0; 32];
            let mut list = store
                .scan(slice, usize::MAX)?
                .into_iter()
                .map(|(key, set)| {
                    let hash = hash_of(&key, &set)?;
                    merkle::xor(&mut found, &hash);
                    Ok((key, hash))
                })
                .collect::<Result<Vec<_>>>()?;
            let slot = slots
                .get_mut(positions.start())
                .filter(|s| s.range.positions == *positions && s.complete());
            if let Some(slot) = slot {
                let mut delta = slot.tree.leaf_hash(leaf as usize);
                if delta != found {
                    tracing::debug!(leaf, "a Merkle leaf had drifted from the store; rehashed");
                    merkle::xor(&mut delta, &found);
                    slot.tree.toggle(leaf as usize, &delta);
                }
            }
            drop(slots);
            list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            total += list.len();
            out.push((leaf, list));
        }
        Ok(out)
    }

    fn with<T>(
        &self,
        positions: &RangeInclusive<Position>,
        f: impl FnOnce(&Tree) -> T,
    ) -> Option<T> {
        let slots = self.slots.lock();
        let slot = slots.get(positions.start())?;
        (slot.range.positions == *positions && slot.complete()).then(|| f(&slot.tree))
    }
}

/// The entry hash of a stored set, as the observer computes it from the
/// committed encoding (the encoding is deterministic).
fn hash_of(key: &str, set: &crate::version::SiblingSet) -> Result<Hash> {
    Ok(merkle::entry_hash(key.as_bytes(), &encode_set(set)?))
}

impl Observer for Trees {
    fn around(&self, write: &mut dyn FnMut() -> Vec<Change>) {
        let mut slots = self.slots.lock();
        for change in write() {
            let Some(pos) = change
                .storage_key
                .first_chunk::<8>()
                .map(|b| Position::from_be_bytes(*b))
            else {
                continue;
            };
            let Some((_, slot)) = slots.range_mut(..=pos).next_back() else {
                continue;
            };
            if !slot.range.positions.contains(&pos) || slot.scanned.is_none_or(|s| pos > s) {
                continue;
            }
            let key = &change.storage_key[8..];
            let hash = |bytes: &bytes::Bytes| merkle::entry_hash(key, bytes);
            let leaf = merkle::leaf(&slot.range.positions, pos);
            slot.tree.update(
                leaf,
                change.old.as_ref().map(hash).as_ref(),
                change.new.as_ref().map(hash).as_ref(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
