//! Anti-entropy's peer messages, each tied to its reply, and the answers a
//! node gives them from its trees and logs.
//!
//! | request | reply | what for |
//! |---|---|---|
//! | [`TreeRoots`] | `Vec<Option<Hash>>` | state transfer: compare roots |
//! | [`TreeChildren`] | `Vec<Vec<Digest>>` | descend into what differs |
//! | [`LeafEntries`] | `Vec<LeafList>` | the keys of differing leaves |
//! | [`OpsSince`] | [`Ops`] | operation transfer: the ops one lacks |
//!
//! Every request is checked against the shape of a tree before anything is
//! looked up, so a peer cannot make a node walk more than a tree holds.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::merkle::{DEPTH, Digest, FANOUT, Hash, LEAVES};
use super::oplog::{Applied, Op};
use super::parts::Parts;
use super::trees::LeafList;
use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::peer::{Rpc, Service};
use crate::ring::Position;

/// Most `(key, hash)` entries one leaf answer holds (it always holds at
/// least one whole leaf).
pub const MAX_LEAF_ENTRIES: usize = 4096;
/// Most ranges one roots request may name (and origins one vector).
pub const MAX_RANGES: usize = 1 << 16;
/// Most ops one answer to [`OpsSince`] carries.
pub const MAX_OPS_PER_ANSWER: usize = 4096;

/// The roots of the receiver's complete Merkle trees of exactly these
/// ranges, one per range: `None` where it keeps no complete tree of the
/// range (its ring differs, or the tree is being built).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeRoots(pub Vec<RangeInclusive<Position>>);

impl Rpc for TreeRoots {
    const SERVICE: Service = Service::new("antientropy.roots", 1);
    type Reply = Vec<Option<Hash>>;
}

/// The child digests of `nodes` at `level` of the tree of `range`, one
/// list per node (the descent into what differs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeChildren {
    pub range: RangeInclusive<Position>,
    pub level: u8,
    pub nodes: Vec<u32>,
}

impl Rpc for TreeChildren {
    const SERVICE: Service = Service::new("antientropy.children", 1);
    type Reply = Vec<Vec<Digest>>;
}

/// The `(key, entry hash)` lists of these leaves of `range`, read from the
/// store; the answer may cover only a prefix of the leaves (a bound on its
/// size), the rest asked again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafEntries {
    pub range: RangeInclusive<Position>,
    pub leaves: Vec<u32>,
}

impl Rpc for LeafEntries {
    const SERVICE: Service = Service::new("antientropy.leaves", 1);
    type Reply = Vec<LeafList>;
}

/// Operation transfer: `from` has applied `applied` of the ops of `range`;
/// answer with the ops it lacks, at most `max`, and at most the replica's
/// message budget in bytes of sets (at least one op): a prefix in causal
/// order, the rest asked for in a later round, as when `max` cuts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpsSince {
    pub range: RangeInclusive<Position>,
    pub from: String,
    pub applied: Applied,
    pub max: u32,
}

/// Ops the asker lacks, or `gap`: the log no longer holds them and the
/// range needs a state exchange; with the answerer's applied vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ops {
    pub ops: Vec<Op>,
    pub gap: bool,
    pub applied: Applied,
}

impl Rpc for OpsSince {
    const SERVICE: Service = Service::new("antientropy.ops", 1);
    type Reply = Ops;
}

pub(super) fn roots(parts: &Parts, TreeRoots(ranges): TreeRoots) -> Result<Vec<Option<Hash>>> {
    if ranges.len() > MAX_RANGES {
        return Err(Error::Protocol(format!(
            "roots of {} ranges asked; at most {MAX_RANGES}",
            ranges.len()
        )));
    }
    Ok(ranges.iter().map(|r| parts.trees.root(r)).collect())
}

pub(super) fn children(parts: &Parts, request: TreeChildren) -> Result<Vec<Vec<Digest>>> {
    let TreeChildren {
        range,
        level,
        nodes,
    } = request;
    let level = usize::from(level);
    let width = if level < DEPTH {
        FANOUT.pow(level as u32)
    } else {
        0
    };
    if nodes.len() > width || nodes.iter().any(|&n| n as usize >= width) {
        return Err(Error::Protocol(format!(
            "tree children asked of {} nodes at level {level}: a level has {width}",
            nodes.len()
        )));
    }
    parts
        .trees
        .children(&range, level, &nodes)
        .ok_or_else(|| no_tree(parts, &range))
}

pub(super) fn leaves(
    parts: &Parts,
    LeafEntries { range, leaves }: LeafEntries,
) -> Result<Vec<LeafList>> {
    if leaves.len() > LEAVES || leaves.iter().any(|&l| l as usize >= LEAVES) {
        return Err(Error::Protocol(format!(
            "{} leaves asked; a tree has {LEAVES}",
            leaves.len()
        )));
    }
    if parts.trees.root(&range).is_none() {
        return Err(no_tree(parts, &range));
    }
    parts
        .trees
        .leaf_lists(&*parts.store, &range, &leaves, MAX_LEAF_ENTRIES)
}

pub(super) fn ops(parts: &Parts, request: OpsSince) -> Result<Ops> {
    let OpsSince {
        range,
        from,
        applied,
        max,
    } = request;
    if applied.len() > MAX_RANGES || max as usize > MAX_OPS_PER_ANSWER {
        return Err(Error::Protocol(format!(
            "ops asked with a vector of {} origins, at most {max} of them; the limits are {MAX_RANGES} and {MAX_OPS_PER_ANSWER}",
            applied.len()
        )));
    }
    let logs = parts
        .oplogs
        .as_ref()
        .ok_or_else(|| no_tree(parts, &range))?;
    let since = logs
        .since(&range, &from, applied, max as usize)
        .ok_or_else(|| no_tree(parts, &range))?;
    Ok(Ops {
        ops: within(since.ops, parts.replica.message_budget()),
        gap: since.gap,
        applied: since.applied,
    })
}

/// The longest prefix of `ops` whose sets hold at most `budget` bytes of
/// values, and at least the first op.
fn within(mut ops: Vec<Op>, budget: usize) -> Vec<Op> {
    let mut budget = Budget::new(budget);
    let keep = ops
        .iter()
        .position(|op| !budget.admit(op.set.value_bytes()))
        .unwrap_or(ops.len());
    ops.truncate(keep);
    ops
}

fn no_tree(parts: &Parts, range: &RangeInclusive<Position>) -> Error {
    Error::Unavailable {
        node: parts.cluster.me().to_string(),
        reason: format!(
            "keeps no complete tree of {:016x}..={:016x}",
            range.start(),
            range.end()
        ),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::version::{Actor, Content, Context, Dot, SiblingSet};

    fn op(seq: u64, bytes: usize) -> Op {
        let mut set = SiblingSet::new();
        let dot = Dot::new(Actor::new("n1", 1), seq);
        set.write(
            &Context::default(),
            dot,
            Content::Value(Bytes::from(vec![b'1'; bytes])),
        );
        Op {
            origin: Default::default(),
            seq,
            deps: Default::default(),
            key: format!("k{seq}"),
            set,
        }
    }

    /// An answer of ops stops at the byte budget, in order, and always
    /// carries the first op, however large.
    #[test]
    fn an_ops_answer_is_a_prefix_within_the_budget() {
        let ops: Vec<Op> = (1..=10).map(|i| op(i, 100)).collect();
        let seqs = |ops: &[Op]| ops.iter().map(|o| o.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&within(ops.clone(), 350)), [1, 2, 3]);
        assert_eq!(seqs(&within(ops.clone(), 10_000)).len(), 10);
        assert_eq!(seqs(&within(ops.clone(), 10)), [1]);
        assert!(within(Vec::new(), 10).is_empty());
    }
}
