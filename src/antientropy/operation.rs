//! Operation transfer, the I/O around [`super::oplog`]: one [`RangeLog`]
//! per range this node replicates, fed by every write this node
//! coordinates, and the per-range exchange of a round in operation mode.
//!
//! A node's logs live in memory. A restart is therefore a new origin (the
//! node under a new generation) with empty logs, and every range of a new
//! log owes each fellow replica one state exchange before ops alone are
//! trusted: that brings over what the old process wrote and never sent,
//! and what the others sent it that it lost. After a state exchange that
//! leaves the two trees equal, the node adopts the peer's applied vector.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use parking_lot::Mutex;

use super::oplog::{Applied, Gap, Op, Origin, RangeLog};
use crate::metrics as m;
use crate::replica::events::{Cause, Event, Subscriber};
use crate::ring::{Position, Range};

/// The op logs of one node, by the first position of each range.
pub struct OpLogs {
    me: String,
    origin: Origin,
    max_ops: usize,
    max_buffered: usize,
    slots: Mutex<BTreeMap<Position, Slot>>,
}

struct Slot {
    range: Range,
    log: RangeLog,
    /// Fellow replicas this log still owes a state exchange.
    owed: BTreeSet<String>,
}

/// What a peer's log answered for a range.
pub struct Since {
    pub ops: Vec<Op>,
    /// The log no longer holds ops the asker lacks: exchange state.
    pub gap: bool,
    /// The answering replica's applied vector.
    pub applied: Applied,
}

impl OpLogs {
    pub fn new(me: &str, generation: u64, max_ops: usize, max_buffered: usize) -> OpLogs {
        OpLogs {
            me: me.to_string(),
            origin: format!("{me}/{generation}"),
            max_ops,
            max_buffered,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// Keeps a log per range in `ranges`; a range kept before with the
    /// same positions keeps its log, a new one starts empty and owes every
    /// fellow replica a state exchange.
    pub fn set_ranges(&self, ranges: &[Range]) {
        let mut slots = self.slots.lock();
        let fresh = |range: Range| Slot {
            owed: range
                .replicas
                .iter()
                .filter(|r| **r != self.me)
                .cloned()
                .collect(),
            range,
            log: RangeLog::default(),
        };
        super::follow_ranges(&mut slots, ranges.iter().cloned(), |s| &mut s.range, fresh);
        self.record(&slots);
    }

    fn with<T>(
        &self,
        positions: &RangeInclusive<Position>,
        f: impl FnOnce(&mut Slot) -> T,
    ) -> Option<T> {
        let mut slots = self.slots.lock();
        let slot = slots.get_mut(positions.start())?;
        (slot.range.positions == *positions).then(|| f(slot))
    }

    /// Serves a peer: the ops it lacks, at most `max`, or a gap; notes its
    /// vector for truncation.
    pub fn since(
        &self,
        positions: &RangeInclusive<Position>,
        from: &str,
        theirs: Applied,
        max: usize,
    ) -> Option<Since> {
        self.with(positions, |slot| {
            let answer = match slot.log.missing_for(&theirs, max) {
                Ok(ops) => Since {
                    ops,
                    gap: false,
                    applied: slot.log.applied().clone(),
                },
                Err(Gap::Truncated { .. }) => Since {
                    ops: Vec::new(),
                    gap: true,
                    applied: slot.log.applied().clone(),
                },
            };
            if slot.range.replicas.iter().any(|r| r == from) {
                slot.log.note_peer(from, theirs);
            }
            answer
        })
    }

    pub fn applied(&self, positions: &RangeInclusive<Position>) -> Option<Applied> {
        self.with(positions, |slot| slot.log.applied().clone())
    }

    /// Whether this range still owes `peer` a state exchange.
    pub fn owes(&self, positions: &RangeInclusive<Position>, peer: &str) -> bool {
        self.with(positions, |slot| slot.owed.contains(peer))
            .unwrap_or(false)
    }

    /// Takes a peer's ops: returns those now deliverable (to apply to the
    /// store) and whether the buffer held them all.
    pub fn receive(&self, positions: &RangeInclusive<Position>, ops: Vec<Op>) -> (Vec<Op>, bool) {
        let (max_buffered, max_ops) = (self.max_buffered, self.max_ops);
        let out = self
            .with(positions, |slot| {
                let out = slot.log.receive(ops, max_buffered);
                let dropped = slot.log.bound(max_ops);
                if dropped > 0 {
                    metrics::counter!(m::ANTIENTROPY_OPS_TRUNCATED_TOTAL, "reason" => "overflow")
                        .increment(dropped as u64);
                }
                out
            })
            .unwrap_or((Vec::new(), true));
        self.record(&self.slots.lock());
        out
    }

    /// After a state exchange with `peer` left both trees equal: adopt its
    /// vector, and the debt to it is paid. Returns buffered ops that became
    /// deliverable.
    pub fn adopt(
        &self,
        positions: &RangeInclusive<Position>,
        peer: &str,
        theirs: &Applied,
    ) -> Vec<Op> {
        self.with(positions, |slot| {
            slot.owed.remove(peer);
            slot.log.adopt(theirs)
        })
        .unwrap_or_default()
    }

    /// Notes `peer`'s vector and drops the ops every replica has; returns
    /// how many.
    pub fn truncate(
        &self,
        positions: &RangeInclusive<Position>,
        peer: &str,
        theirs: Applied,
    ) -> usize {
        let me = self.me.clone();
        let dropped = self
            .with(positions, |slot| {
                slot.log.note_peer(peer, theirs);
                let fellows: Vec<String> = slot
                    .range
                    .replicas
                    .iter()
                    .filter(|r| **r != me)
                    .cloned()
                    .collect();
                slot.log.truncate(&fellows)
            })
            .unwrap_or(0);
        metrics::counter!(m::ANTIENTROPY_OPS_TRUNCATED_TOTAL, "reason" => "stable")
            .increment(dropped as u64);
        self.record(&self.slots.lock());
        dropped
    }

    /// Whether any range still owes a fellow a state exchange.
    pub fn owes_any(&self) -> bool {
        self.slots.lock().values().any(|s| !s.owed.is_empty())
    }

    /// Ops held and ops buffered, over every range.
    pub fn sizes(&self) -> (usize, usize) {
        sizes(&self.slots.lock())
    }

    fn record(&self, slots: &BTreeMap<Position, Slot>) {
        let (held, buffered) = sizes(slots);
        metrics::gauge!(m::ANTIENTROPY_LOG_OPS).set(held as f64);
        metrics::gauge!(m::ANTIENTROPY_OPS_BUFFERED).set(buffered as f64);
    }
}

/// Ops held and ops buffered over `slots`.
fn sizes(slots: &BTreeMap<Position, Slot>) -> (usize, usize) {
    slots.values().fold((0, 0), |(held, buffered), s| {
        (held + s.log.len(), buffered + s.log.buffered())
    })
}

/// Client writes this replica coordinated become ops of its log; every
/// other change came from another node, whose own log has it.
impl Subscriber for OpLogs {
    fn changed(&self, &Event { key, set, cause }: &Event<'_>) {
        if cause != Cause::Client {
            return;
        }
        let pos = crate::ring::position(key.as_bytes());
        let mut slots = self.slots.lock();
        let Some((_, slot)) = slots.range_mut(..=pos).next_back() else {
            return;
        };
        if !slot.range.positions.contains(&pos) {
            return;
        }
        slot.log.append_local(&self.origin, key, set.clone());
        let dropped = slot.log.bound(self.max_ops);
        if dropped > 0 {
            metrics::counter!(m::ANTIENTROPY_OPS_TRUNCATED_TOTAL, "reason" => "overflow")
                .increment(dropped as u64);
        }
    }
}
