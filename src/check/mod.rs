//! Checkers: each a function from a recorded history to the violations it
//! finds, one small file per invariant (as openraft's turmoil invariants
//! and Jepsen's checkers are). The deterministic simulation and the
//! nemesis against real processes record what their clients did into a
//! [`History`] and hand it to every checker; each checker has a test that
//! plants a violation and shows it is reported, so none can pass silently.
//!
//! The history speaks of writes by id. Every write's value is unique to it
//! (the recorder writes the id itself), so a value read back names the
//! write that made it. A write also records `saw`: the writes whose values
//! the read that gave the client its context returned. With DVV contexts,
//! such a write supersedes exactly those: they may go, it must stay. A
//! delete is a write without a value: it supersedes what it saw and leaves
//! nothing to read.
//!
//! - [`lost_writes`]: after the heal, every acknowledged write is present
//!   or superseded by a present write or a delete (transitively); no value
//!   appears that no client wrote.
//! - [`deletes`]: nothing an acknowledged delete or write superseded is
//!   read after the heal: deleted values stay deleted, overwritten ones
//!   stay overwritten.
//! - [`convergence`]: every replica of every key holds the same set.
//! - [`sessions`]: a client carrying its context never reads older than its
//!   own last write or its last read, nor a value its own write or delete
//!   superseded.
//! - [`siblings`]: writes that each carry the previous read's context never
//!   leave siblings; concurrent writes are never collapsed.
//! - [`expiry`]: a value written with a TTL is not read once the TTL and
//!   the clocks' largest skew have passed.
//! - [`conditions`]: a conditional write the store refused (412) is never
//!   read: it was not applied.
//! - [`scans`]: a scan of every key after the heal returns exactly the
//!   keys the final reads found live, with the same values: every
//!   acknowledged live key, once. (Scans during the run are recorded as
//!   reads of the keys they returned, so the other checkers hold them to
//!   what they hold reads to.)
//!
//! - [`crdts`]: a counter ends between its acknowledged and its attempted
//!   increments; a set keeps every acknowledged add no remove named, and
//!   loses every member an acknowledged remove took.
//!
//! A value with a TTL may vanish once it has run out, so the checkers that
//! demand a write be present (`lost_writes`, `sessions`, `siblings`) leave
//! such writes out; `expiry` holds them to vanishing.
//!
//! Every checker also says how much it examined ([`Verdict::examined`]):
//! a run whose checkers examined nothing proved nothing, and fails.

pub mod conditions;
pub mod convergence;
pub mod crdts;
pub mod deletes;
pub mod expiry;
pub mod lost_writes;
pub mod record;
pub mod scans;
pub mod sessions;
pub mod siblings;

use std::collections::{BTreeMap, BTreeSet};

pub type WriteId = u64;

/// One client operation, as it completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Write {
        id: WriteId,
        client: u32,
        key: String,
        /// The writes the client's context came from (empty: blind).
        saw: Vec<WriteId>,
        /// The store acknowledged it (a failed write may still be stored).
        acked: bool,
        /// A delete: it supersedes `saw` and leaves no value.
        delete: bool,
        /// A value with a TTL: it may be gone once the TTL has run out.
        ttl: Option<Ttl>,
        /// A conditional write the store refused (412): never applied.
        refused: bool,
    },
    Read {
        client: u32,
        key: String,
        /// The values returned, one per sibling (deletes excluded).
        values: Vec<String>,
        /// The client presented its session context with the read.
        session: bool,
        /// When the answer arrived ([`record::now_ms`]).
        at_ms: u64,
    },
}

/// A write's TTL and when it was sent ([`record::now_ms`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl {
    pub sent_ms: u64,
    pub ttl_ms: u64,
}

/// What clients did, in completion order, and what every key held at the
/// end (read after the faults stopped and anti-entropy ran).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
    pub finals: BTreeMap<String, Vec<String>>,
    /// When the final reads began ([`record::now_ms`]).
    pub finals_at_ms: u64,
    /// What a scan of every key at `r=all` returned after the final reads,
    /// key by key (`None`: no such scan was made, or it failed).
    pub final_scan: Option<BTreeMap<String, Vec<String>>>,
    /// The updates of CRDT keys and what they held at the end.
    pub crdts: crdts::Crdts,
}

/// The value a write stores: its id, so that reads name writes.
pub fn value_of(id: WriteId) -> String {
    format!("w{id}")
}

/// The write a value read back names, if any.
pub fn write_of(value: &str) -> Option<WriteId> {
    value.strip_prefix('w')?.parse().ok()
}

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub key: String,
    pub message: String,
}

/// What one checker found, and how much it examined to find it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub checker: &'static str,
    /// Keys, writes or reads examined (each checker says which).
    pub examined: usize,
    pub violations: Vec<Violation>,
}

impl Verdict {
    fn new(checker: &'static str) -> Verdict {
        Verdict {
            checker,
            ..Verdict::default()
        }
    }

    fn violation(&mut self, key: &str, message: String) {
        self.violations.push(Violation {
            checker: self.checker,
            key: key.to_string(),
            message,
        });
    }
}

/// What the checkers need of one write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Write<'a> {
    pub key: &'a str,
    pub saw: &'a [WriteId],
    pub acked: bool,
    pub delete: bool,
    pub ttl: Option<Ttl>,
    /// Answered 412: the store did not apply it.
    pub refused: bool,
}

/// A history's writes by id, built once per check.
pub(crate) struct Writes<'a> {
    by_id: BTreeMap<WriteId, Write<'a>>,
}

impl History {
    /// The writes of the history, by id.
    pub(crate) fn writes(&self) -> Writes<'_> {
        let by_id = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Write {
                    id,
                    key,
                    saw,
                    acked,
                    delete,
                    ttl,
                    refused,
                    ..
                } => Some((
                    *id,
                    Write {
                        key: key.as_str(),
                        saw: saw.as_slice(),
                        acked: *acked,
                        delete: *delete,
                        ttl: *ttl,
                        refused: *refused,
                    },
                )),
                Op::Read { .. } => None,
            })
            .collect();
        Writes { by_id }
    }
}

impl<'a> Writes<'a> {
    fn get(&self, id: &WriteId) -> Option<&Write<'a>> {
        self.by_id.get(id)
    }

    fn iter(&self) -> impl Iterator<Item = (&WriteId, &Write<'a>)> {
        self.by_id.iter()
    }

    /// Every write `id` supersedes, directly or through others.
    fn superseded_by(&self, id: WriteId) -> BTreeSet<WriteId> {
        let mut out = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(w) = todo.pop() {
            for &s in self.get(&w).map_or(&[][..], |w| w.saw) {
                if out.insert(s) {
                    todo.push(s);
                }
            }
        }
        out
    }
}
