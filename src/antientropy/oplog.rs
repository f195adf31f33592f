//! The operation log of one ring range (pure): operation transfer, as in
//! Bayou's anti-entropy (Petersen et al. 1997) and the operation-transfer
//! model of vector-clock gossip (Wuu and Bernstein 1984).
//!
//! Every write a node makes to a key of the range is an [`Op`]: its origin
//! (the node, under its generation, so a restart is a new origin), a
//! sequence number that counts the origin's ops in this range without gaps,
//! the key and the sibling set the write left. A replica's [`Applied`]
//! vector says, per origin, up to which sequence number it has applied that
//! origin's ops; since the numbers have no gaps, the vector summarises
//! exactly which ops a replica has.
//!
//! - **Exchange.** A replica sends its vector; the other answers with the
//!   ops it holds above it ([`RangeLog::missing_for`]), or says it cannot
//!   (it truncated some of them): then the two fall back to a state
//!   transfer of the range, after which the receiver adopts the sender's
//!   vector ([`RangeLog::adopt`]).
//! - **Causal delivery.** An op carries the vector its origin had applied
//!   when it made it (`deps`). A receiver applies an op only once it has
//!   applied the origin's previous op and everything in `deps`; until then
//!   the op waits in a bounded buffer ([`RangeLog::receive`]). Ops are
//!   relayed: a replica's log holds the ops of every origin it applied, so
//!   an op reaches a replica its origin never talks to.
//! - **Truncation.** An op is dropped once the vectors of every replica of
//!   the range cover it ([`RangeLog::truncate`]). A log that outgrows its
//!   bound drops its oldest ops anyway and remembers the *floor* below which
//!   it can no longer serve; a replica that needs them falls back to state.
//!
//! The set an op carries merges with the one sibling merge, so applying an
//! op twice, or one that a state transfer already brought, changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::version::SiblingSet;

/// A node under one generation: `n1/1763769012345`.
pub type Origin = String;

/// Per origin, the highest sequence number applied (all below it too).
pub type Applied = BTreeMap<Origin, u64>;

/// One write to a key of the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub origin: Origin,
    pub seq: u64,
    /// What the origin had applied when it made this op (its own entry is
    /// `seq - 1`).
    pub deps: Applied,
    pub key: String,
    pub set: SiblingSet,
}

/// Why a replica cannot be served from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// Ops of `origin` it lacks were truncated (the log overflowed or the
    /// replica was away): a state transfer of the range is needed.
    Truncated { origin: Origin },
}

/// The log, the applied vector and the causal buffer of one range at one
/// replica.
#[derive(Clone, Debug, Default)]
pub struct RangeLog {
    ops: BTreeMap<(Origin, u64), Op>,
    applied: Applied,
    /// Per origin, ops at or below this were dropped from the log.
    floor: Applied,
    buffer: BTreeMap<(Origin, u64), Op>,
    /// The last vector each fellow replica sent.
    peers: BTreeMap<String, Applied>,
}

fn covers(vector: &Applied, other: &Applied) -> bool {
    other
        .iter()
        .all(|(origin, seq)| vector.get(origin).copied().unwrap_or(0) >= *seq)
}

impl RangeLog {
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// Ops held in the log.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Ops received but waiting for their dependencies.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Records a write this replica made (as `origin`) and returns its op.
    pub fn append_local(&mut self, origin: &str, key: &str, set: SiblingSet) -> Op {
        let seq = self.applied.get(origin).copied().unwrap_or(0) + 1;
        let op = Op {
            origin: origin.to_string(),
            seq,
            deps: self.applied.clone(),
            key: key.to_string(),
            set,
        };
        self.applied.insert(op.origin.clone(), seq);
        self.ops.insert((op.origin.clone(), seq), op.clone());
        op
    }

    /// The ops a replica whose vector is `theirs` lacks, oldest first per
    /// origin, at most `max`; or the gap that stops the log from serving
    /// them.
    pub fn missing_for(&self, theirs: &Applied, max: usize) -> Result<Vec<Op>, Gap> {
        let mut out = Vec::new();
        for (origin, &have) in &self.applied {
            let from = theirs.get(origin).copied().unwrap_or(0);
            if from >= have {
                continue;
            }
            if from < self.floor.get(origin).copied().unwrap_or(0) {
                return Err(Gap::Truncated {
                    origin: origin.clone(),
                });
            }
            let wanted = self
                .ops
                .range((origin.clone(), from + 1)..=(origin.clone(), have))
                .map(|(_, op)| op.clone());
            out.extend(wanted.take(max.saturating_sub(out.len())));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Takes ops from a peer: each is buffered until it is deliverable (the
    /// origin's previous op and its `deps` applied). Returns the ops that
    /// became deliverable, in an order that respects their dependencies;
    /// the caller applies them to the store. Ops already applied are
    /// dropped; the buffer keeps at most `max_buffered` ops (more are
    /// refused, and `false` says the range needs a state transfer).
    pub fn receive(&mut self, ops: Vec<Op>, max_buffered: usize) -> (Vec<Op>, bool) {
        let mut fits = true;
        for op in ops {
            let done = self.applied.get(&op.origin).copied().unwrap_or(0);
            if op.seq <= done {
                continue;
            }
            if self.buffer.len() >= max_buffered
                && !self.buffer.contains_key(&(op.origin.clone(), op.seq))
            {
                fits = false;
                continue;
            }
            self.buffer.insert((op.origin.clone(), op.seq), op);
        }
        (self.deliver(), fits)
    }

    /// Applies every buffered op whose dependencies are met, repeatedly;
    /// returns them in the order applied.
    fn deliver(&mut self) -> Vec<Op> {
        let mut delivered = Vec::new();
        loop {
            let ready: Vec<(Origin, u64)> = self
                .buffer
                .iter()
                .filter(|(_, op)| self.deliverable(op))
                .map(|(k, _)| k.clone())
                .collect();
            if ready.is_empty() {
                return delivered;
            }
            for k in ready {
                let Some(op) = self.buffer.remove(&k) else {
                    continue;
                };
                // Two ops of one origin are never ready in the same pass, and
                // applying one only raises the vector: the rest stay ready.
                self.applied.insert(op.origin.clone(), op.seq);
                self.ops.insert(k, op.clone());
                delivered.push(op);
            }
        }
    }

    fn deliverable(&self, op: &Op) -> bool {
        let done = self.applied.get(&op.origin).copied().unwrap_or(0);
        op.seq == done + 1
            && op
                .deps
                .iter()
                .filter(|(origin, _)| **origin != op.origin)
                .all(|(origin, seq)| self.applied.get(origin).copied().unwrap_or(0) >= *seq)
    }

    /// Records the vector a fellow replica sent.
    pub fn note_peer(&mut self, peer: &str, applied: Applied) {
        self.peers.insert(peer.to_string(), applied);
    }

    /// Drops the ops that this replica and every one of `fellows` (the
    /// other replicas of the range) have applied, as far as their last
    /// vectors say. Returns how many were dropped.
    pub fn truncate(&mut self, fellows: &[String]) -> usize {
        let mut stable = self.applied.clone();
        for fellow in fellows {
            let theirs = self.peers.get(fellow);
            for (origin, seq) in stable.iter_mut() {
                let have = theirs.and_then(|t| t.get(origin)).copied().unwrap_or(0);
                *seq = (*seq).min(have);
            }
        }
        self.peers.retain(|p, _| fellows.contains(p));
        let before = self.ops.len();
        self.ops
            .retain(|(origin, seq), _| *seq > stable.get(origin).copied().unwrap_or(0));
        for (origin, seq) in stable {
            let floor = self.floor.entry(origin).or_insert(0);
            *floor = (*floor).max(seq);
        }
        before - self.ops.len()
    }

    /// Drops the oldest ops beyond `max` (per origin, lowest first), raising
    /// the floor: a replica that still needs them falls back to state.
    /// Returns how many were dropped.
    pub fn bound(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while self.ops.len() > max {
            // The origin with the most ops held gives up its oldest.
            let mut counts: BTreeMap<&Origin, usize> = BTreeMap::new();
            for (origin, _) in self.ops.keys() {
                *counts.entry(origin).or_default() += 1;
            }
            let Some((origin, _)) = counts.into_iter().max_by_key(|(_, c)| *c) else {
                break;
            };
            let origin = origin.clone();
            let Some((key, _)) = self
                .ops
                .range((origin.clone(), 0)..)
                .next()
                .map(|(k, v)| (k.clone(), v.seq))
            else {
                break;
            };
            self.ops.remove(&key);
            let floor = self.floor.entry(origin).or_insert(0);
            *floor = (*floor).max(key.1);
            dropped += 1;
        }
        dropped
    }

    /// After a state transfer from a replica whose vector was `theirs`,
    /// this replica holds everything those ops wrote: it counts them as
    /// applied (the ops it never held it cannot serve: the floor rises),
    /// drops the buffered ops they cover, and returns the buffered ops that
    /// became deliverable, for the caller to apply.
    pub fn adopt(&mut self, theirs: &Applied) -> Vec<Op> {
        for (origin, &seq) in theirs {
            let mine = self.applied.entry(origin.clone()).or_insert(0);
            if seq > *mine {
                *mine = seq;
                let floor = self.floor.entry(origin.clone()).or_insert(0);
                *floor = (*floor).max(seq);
            }
        }
        let applied = &self.applied;
        self.buffer
            .retain(|(origin, seq), _| *seq > applied.get(origin).copied().unwrap_or(0));
        self.deliver()
    }

    /// Whether this replica's vector covers `other`.
    pub fn covers(&self, other: &Applied) -> bool {
        covers(&self.applied, other)
    }
}

#[cfg(test)]
mod tests;
