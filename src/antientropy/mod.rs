//! Anti-entropy: bringing every replica of every key back to the same
//! sibling set, in the background, at a bounded cost.
//!
//! Replicas drift: a write reached only W of N, a node was down longer than
//! its hints lived, a disk came back from an old copy. Read repair fixes
//! only what is read. Anti-entropy fixes the rest by comparing replicas
//! range by range.
//!
//! # State transfer (Dynamo §4.7, Riak's active anti-entropy)
//!
//! The ring is cut into *ranges*: the arcs between consecutive token
//! positions, the one that wraps past zero split in two
//! ([`crate::ring::Ring::ranges`]). Every key in a range has the same
//! preference list, so two replicas of a range should hold exactly the
//! same keys with the same sibling sets. A node keeps a [`merkle::Tree`]
//! per range it replicates: a fixed tree of [`merkle::FANOUT`]-way nodes,
//! [`merkle::DEPTH`] levels deep, whose leaves cover equal slices of the
//! range. A leaf's hash is the XOR of the blake3 hashes of its entries
//! (key and encoded sibling set), and every inner node the XOR of its
//! children, so a write updates one path in place: XOR out the old entry,
//! XOR in the new one, in any order. Two replicas compare roots, then only
//! the children of nodes that differ, down to the leaves; then they compare
//! the (key, hash) lists of differing leaves and exchange the sibling sets
//! of exactly the keys that differ, which each side merges with the one
//! merge. What crosses the network grows with the number of differing
//! keys, not with the data.
//!
//! # Operation transfer (Bayou; Wuu and Bernstein's log gossip)
//!
//! In `mode = "operation"` each node also logs every write it coordinates
//! as an op of its range ([`oplog`], [`operation`]): replicas exchange the
//! vectors of the ops they applied, send each other exactly the missing
//! ops, and apply them in causal order; an op leaves the logs once every
//! replica's vector covers it. Where a log cannot serve (it truncated the
//! ops, overflowed its buffer, or is new after a restart), the range falls
//! back to the state exchange above.
//!
//! The parts:
//! - [`merkle`]: the tree of one range and the descent (pure);
//! - [`trees`]: the trees of one node, kept current by the store's
//!   [`crate::store::Observer`] and built from the store a chunk at a time;
//! - `exchange`: one round with one peer (roots, descent, leaf lists,
//!   fetch and merge of the differing keys, within the round's bounds);
//! - [`oplog`]: the op log of one range (pure), and [`operation`]: a
//!   node's logs, fed by the replica's coordinated writes;
//! - [`purge`]: tombstone purge once every replica holds the same
//!   tombstone-only set (causal stability), leaving a grave;
//! - `parts`: the handles a round works with, which the service lends to
//!   `exchange` and `purge` (so neither imports the service that runs it);
//! - `service`: [`AntiEntropy`], the loop every `antientropy.interval_ms`
//!   and the answers to peers' tree requests.
//!
//! Invariants: every repair goes through the one sibling merge, so an
//! exchange can only add what a replica has not seen; a tree takes part in
//! an exchange only once complete; what a round moves is bounded by
//! `max_keys_per_round` and `max_bytes_per_round`.
//!
//! XOR is not collision resistant against someone who chooses the entries,
//! but the entries here hold dots and contexts that the replicas mint, and
//! the cost of a miss is only a later repair by a read.

mod exchange;
pub mod merkle;
pub mod operation;
pub mod oplog;
mod parts;
pub mod purge;
pub mod rpc;
mod service;
pub mod trees;

pub use exchange::Outcome;

use std::collections::BTreeMap;

use crate::ring::{Position, Range};

/// Per-range state that follows the ring: re-keys `slots` (by first
/// position) to `ranges`. A range kept with the same positions keeps its
/// state, with its new replica list; a new range gets `fresh(range)`.
fn follow_ranges<T>(
    slots: &mut BTreeMap<Position, T>,
    ranges: impl IntoIterator<Item = Range>,
    range_of: impl Fn(&mut T) -> &mut Range,
    fresh: impl Fn(Range) -> T,
) {
    let mut old = std::mem::take(slots);
    for range in ranges {
        let start = *range.positions.start();
        let slot = match old.remove(&start) {
            Some(mut kept) => {
                let same = range_of(&mut kept).positions == range.positions;
                if same {
                    *range_of(&mut kept) = range;
                    kept
                } else {
                    fresh(range)
                }
            }
            None => fresh(range),
        };
        slots.insert(start, slot);
    }
}
pub use rpc::MAX_LEAF_ENTRIES;
pub use service::{AntiEntropy, Stats};
