//! The change log: what this replica's writes changed, in the order it
//! made them, read by the change feed (`crate::feed`).
//!
//! Every client write a replica mints, and every set it merges from a
//! coordinator, a read repair or a hint, appends one [`Logged`] entry:
//! the key, the dots the write brought that the replica did not hold,
//! whether they are a delete, and the key's version vector after it. The
//! entry goes into the same atomic batch as the set (`committer.rs`), so
//! a set the store holds is never missing from its log. Ownership
//! handoff, anti-entropy repairs, purges and expiry are not logged: they
//! move writes some replica logged already when it took them, and
//! logging them again would only repeat those writes to the feed's
//! readers.
//!
//! # Positions
//!
//! An entry's [`Position`] is the *life* of the log it was appended in
//! (an ordinal one past every life this disk holds, and a random id drawn
//! at each opening of the store) and a sequence number within that life.
//! Positions sort as their entries were appended. A reader's position in a
//! node's log is the last entry it saw: it reads on after it.
//!
//! - A new life begins at every opening, so no state of the disk (a power
//!   loss that drops the log's tail, a restored backup) makes a position
//!   name two different entries: a reader whose life the log does not hold
//!   reads the whole retained log again (duplicates, never a gap).
//! - Retention drops the oldest entries (older than `changes.retention_ms`,
//!   or past `changes.max_bytes`) and remembers the last one dropped, the
//!   *floor*: a reader behind the floor gets [`Read::expired`] and must
//!   rescan, as a cursor past Kafka's retention must.
//! - Entries younger than a *settle* time are not read yet: the replicas of
//!   one write log it within milliseconds of each other, so a reader that
//!   waits that long finds them together, in one page, where the feed drops
//!   the duplicates.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::version::{Content, Dot, SiblingSet, VersionVector};

/// Where an entry stands in a node's log: `(life, id, seq)`, in the order
/// entries were appended.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The ordinal of the store's opening that appended it.
    pub life: u64,
    /// A random number drawn at that opening.
    pub id: u64,
    pub seq: u64,
}

impl Position {
    fn key(&self) -> [u8; 24] {
        let mut key = [0; 24];
        key[..8].copy_from_slice(&self.life.to_be_bytes());
        key[8..16].copy_from_slice(&self.id.to_be_bytes());
        key[16..].copy_from_slice(&self.seq.to_be_bytes());
        key
    }

    fn of_key(key: &[u8]) -> Result<Position> {
        let word = |at: usize| {
            key.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::Storage("a change log key is not 24 bytes".into()))
        };
        Ok(Position {
            life: word(0)?,
            id: word(8)?,
            seq: word(16)?,
        })
    }
}

/// Where a reader of one log stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mark {
    /// Has seen every entry up to this one.
    After(Position),
    /// Has seen nothing logged at or after this time (ms since the epoch,
    /// by the log's node's clock): a log the reader never read.
    Since(u64),
}

/// One change a write made to this replica's copy of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// When it was appended, by this node's clock (ms since the epoch).
    pub at_ms: u64,
    pub key: String,
    /// The dots the write brought that the copy did not hold.
    pub dots: Vec<Dot>,
    /// Whether what it brought is a delete (tombstones only).
    pub deleted: bool,
    /// The key's version vector after the write.
    pub context: VersionVector,
}

/// The dots of the siblings `set` holds: what a write's entry is
/// computed against ([`logged`]).
pub fn dots_of(set: Option<&SiblingSet>) -> Vec<Dot> {
    set.map_or_else(Vec::new, |s| {
        s.siblings().iter().map(|s| s.dot.clone()).collect()
    })
}

/// The entry of a write that turned a copy holding siblings `held`
/// ([`dots_of`]) into `new`, bringing the siblings `sent` (a set another
/// node sent; nothing for a write minted here): every sibling of `new`
/// the copy did not hold or the write brought. A set sent that the copy
/// held already (an anti-entropy round was faster than the coordinator)
/// is still logged: this replica counts toward the write's quorum, so its
/// log must hold the write. Nothing when the write leaves none of either.
pub fn logged(
    key: &str,
    held: &[Dot],
    sent: &[Dot],
    new: &SiblingSet,
    at_ms: u64,
) -> Option<Logged> {
    let fresh: Vec<_> = new
        .siblings()
        .iter()
        .filter(|s| !held.contains(&s.dot) || sent.contains(&s.dot))
        .collect();
    if fresh.is_empty() {
        return None;
    }
    Some(Logged {
        at_ms,
        key: key.to_string(),
        deleted: fresh.iter().all(|s| s.content == Content::Tombstone),
        dots: fresh.iter().map(|s| s.dot.clone()).collect(),
        context: new.context().clone(),
    })
}

/// How much one read may take.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Bytes of entries returned (at least one entry always).
    pub max_bytes: usize,
    /// Entries looked at, whether they match or not.
    pub max_scanned: usize,
    /// Entries younger than this are left for a later read.
    pub settle_ms: u64,
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// Matching entries after the reader's position, oldest first.
    pub entries: Vec<(Position, Logged)>,
    /// Where the reader stands now: past everything looked at.
    pub next: Mark,
    /// The reader's position is behind the floor: entries it had not seen
    /// were dropped. `next` is then the log's end, where to resume after a
    /// rescan, and nothing was read.
    pub expired: bool,
    /// Entries too young to read were left (a read soon finds them).
    pub unsettled: bool,
    /// The read stopped at its bytes or its scan before the log's end: a
    /// read from `next` goes on at once.
    pub more: bool,
}

/// Where the log keeps its entries.
enum Backend {
    Memory(Mutex<BTreeMap<Position, Bytes>>),
    Disk {
        db: Database,
        entries: Keyspace,
        meta: Keyspace,
    },
}

/// What the log knows of itself.
#[derive(Debug, Default)]
struct State {
    /// This opening's life: `(ordinal, id)`.
    life: (u64, u64),
    next_seq: u64,
    /// The lives whose entries may still be held.
    lives: BTreeSet<(u64, u64)>,
    /// The last entry dropped by retention, and its time.
    floor: Option<(Position, u64)>,
    /// Entries held, and their bytes (keys and values).
    len: u64,
    bytes: u64,
    /// The last entry's time: never earlier than an entry before it.
    last_at_ms: u64,
    /// The last entry's position.
    last: Option<Position>,
}

impl State {
    /// Whether entries a reader at `from` has not seen were dropped.
    fn is_behind(&self, from: Mark) -> bool {
        match (from, self.floor) {
            (Mark::After(p), Some((floor, _))) => p < floor,
            (Mark::Since(ms), Some((_, at))) => at >= ms,
            (_, None) => false,
        }
    }
}

/// Bytes an entry costs: its key and its value.
fn cost(value: &[u8]) -> u64 {
    24 + value.len() as u64
}

/// One node's change log (see the module doc).
pub struct ChangeLog {
    state: Mutex<State>,
    backend: Backend,
}

const LIVES: &str = "lives";
const FLOOR: &str = "floor";

impl ChangeLog {
    /// A log in memory, for the in-memory engine: one life.
    pub fn in_memory() -> ChangeLog {
        let life = (1, rand::random());
        ChangeLog {
            state: Mutex::new(State {
                life,
                next_seq: 1,
                lives: BTreeSet::from([life]),
                ..State::default()
            }),
            backend: Backend::Memory(Mutex::new(BTreeMap::new())),
        }
    }

    /// The log kept in `db`, opened for a new life.
    pub fn open(db: &Database) -> Result<ChangeLog> {
        let entries = db.keyspace("changes", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("changes_meta", KeyspaceCreateOptions::default)?;
        let decode_meta =
            |name: &str| -> Result<Option<Vec<u8>>> { Ok(meta.get(name)?.map(|v| v.to_vec())) };
        let mut lives: BTreeSet<(u64, u64)> = match decode_meta(LIVES)? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| Error::Storage(format!("the change log's lives: {e}")))?,
            None => BTreeSet::new(),
        };
        let floor: Option<(Position, u64)> = match decode_meta(FLOOR)? {
            Some(bytes) => Some(
                postcard::from_bytes(&bytes)
                    .map_err(|e| Error::Storage(format!("the change log's floor: {e}")))?,
            ),
            None => None,
        };
        let (mut len, mut bytes, mut last, mut last_at_ms) = (0, 0, None, 0);
        for guard in entries.iter() {
            let (k, v) = guard.into_inner()?;
            len += 1;
            bytes += cost(&v);
            last = Some(Position::of_key(&k)?);
            if let Ok(entry) = postcard::from_bytes::<Logged>(&v) {
                last_at_ms = last_at_ms.max(entry.at_ms);
            }
        }
        let ordinal = lives
            .iter()
            .map(|l| l.0)
            .chain(last.map(|p| p.life))
            .chain(floor.map(|(p, _)| p.life))
            .max()
            .unwrap_or(0)
            + 1;
        let life = (ordinal, rand::random());
        lives.insert(life);
        let encoded = postcard::to_allocvec(&lives)
            .map_err(|e| Error::Storage(format!("encoding lives: {e}")))?;
        meta.insert(LIVES, encoded)?;
        db.persist(fjall::PersistMode::SyncAll)?;
        Ok(ChangeLog {
            state: Mutex::new(State {
                life,
                next_seq: 1,
                lives,
                floor,
                len,
                bytes,
                last_at_ms,
                last,
            }),
            backend: Backend::Disk {
                db: db.clone(),
                entries,
                meta,
            },
        })
    }

    /// Assigns `entry` its position (stamping its time no earlier than the
    /// entry before it) and its encoding. It counts as held once
    /// [`ChangeLog::committed`] says its batch is: a position taken by a
    /// batch that fails is never used again, and never read.
    fn prepare(&self, mut entry: Logged) -> Result<(Position, Vec<u8>)> {
        let mut state = self.state.lock();
        entry.at_ms = entry.at_ms.max(state.last_at_ms);
        let value = postcard::to_allocvec(&entry)
            .map_err(|e| Error::Storage(format!("encoding a change: {e}")))?;
        let position = Position {
            life: state.life.0,
            id: state.life.1,
            seq: state.next_seq,
        };
        state.next_seq += 1;
        state.last_at_ms = entry.at_ms;
        Ok((position, value))
    }

    /// Counts entries whose batch committed: `(position, bytes)` each, in
    /// order.
    pub(crate) fn committed(&self, entries: &[(Position, u64)]) {
        let Some((last, _)) = entries.last() else {
            return;
        };
        let mut state = self.state.lock();
        state.len += entries.len() as u64;
        state.bytes += entries.iter().map(|(_, bytes)| bytes).sum::<u64>();
        state.last = Some(*last);
    }

    /// Adds `entry` to `batch` (the disk engine's committer, in the batch
    /// that writes its set); the committer calls [`ChangeLog::committed`]
    /// with the result once the batch is.
    pub(crate) fn append_to(
        &self,
        batch: &mut OwnedWriteBatch,
        entry: Logged,
    ) -> Result<(Position, u64)> {
        let Backend::Disk { entries, .. } = &self.backend else {
            return Err(Error::Storage("a batch append to a log in memory".into()));
        };
        let (position, value) = self.prepare(entry)?;
        let bytes = cost(&value);
        batch.insert(entries, position.key(), value);
        Ok((position, bytes))
    }

    /// Appends `entry` now (the in-memory engine, under its write lock).
    pub(crate) fn append(&self, entry: Logged) -> Result<()> {
        let Backend::Memory(entries) = &self.backend else {
            return Err(Error::Storage("a direct append to a log on disk".into()));
        };
        let (position, value) = self.prepare(entry)?;
        let bytes = cost(&value);
        entries.lock().insert(position, Bytes::from(value));
        self.committed(&[(position, bytes)]);
        Ok(())
    }

    /// The position of the last entry committed: where a reader that
    /// starts now stands. A write whose batch commits after this is read;
    /// one committed before is not (it began before the reader did).
    pub fn now(&self) -> Position {
        let state = self.state.lock();
        state.last.unwrap_or(Position {
            life: state.life.0,
            id: state.life.1,
            seq: 0,
        })
    }

    /// Entries held and their bytes.
    pub fn size(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.len, state.bytes)
    }

    /// The entries after `from` whose keys `matches`, within `limits`, as
    /// of `now_ms` (see [`Read`]).
    pub fn read(
        &self,
        from: Mark,
        matches: &dyn Fn(&str) -> bool,
        limits: ReadLimits,
        now_ms: u64,
    ) -> Result<Read> {
        // Where to scan from (exclusive), and the time before which entries
        // are skipped; `None`: the reader is behind the floor.
        let start = {
            let state = self.state.lock();
            let floor = state.floor.map(|(p, _)| p);
            match from {
                _ if state.is_behind(from) => None,
                Mark::Since(ms) => Some((floor, ms)),
                // A life this log does not hold (a restored or wiped disk):
                // everything retained is news to the reader.
                Mark::After(p) if !state.lives.contains(&(p.life, p.id)) => Some((floor, 0)),
                Mark::After(p) => Some((Some(p), 0)),
            }
        };
        let expired = || Read {
            entries: Vec::new(),
            next: Mark::After(self.now()),
            expired: true,
            unsettled: false,
            more: false,
        };
        let Some((start, skip_before)) = start else {
            return Ok(expired());
        };
        let mut read = Read {
            entries: Vec::new(),
            next: start.map_or(from, Mark::After),
            expired: false,
            unsettled: false,
            more: false,
        };
        let settled_before = now_ms.saturating_sub(limits.settle_ms);
        let mut budget = Budget::new(limits.max_bytes);
        let mut visit = |position: Position, value: &[u8]| -> Result<bool> {
            let entry: Logged = postcard::from_bytes(value)
                .map_err(|e| Error::Storage(format!("a change log entry: {e}")))?;
            // An entry stamped after `now_ms` (the clock stepped back) is
            // not held back: it would be until the clock caught up.
            if entry.at_ms > settled_before && entry.at_ms <= now_ms {
                read.unsettled = true;
                return Ok(false);
            }
            if entry.at_ms >= skip_before && matches(&entry.key) {
                if !budget.admit(value.len()) {
                    read.more = true;
                    return Ok(false);
                }
                read.entries.push((position, entry));
            }
            read.next = Mark::After(position);
            Ok(true)
        };
        let after = |p: &Position| start.is_none_or(|s| *p > s);
        let first = start.unwrap_or_default();
        let mut more = false;
        match &self.backend {
            Backend::Memory(entries) => {
                let entries = entries.lock();
                let mut held = entries.range(first..).filter(|(p, _)| after(p));
                for (scanned, (position, value)) in held.by_ref().enumerate() {
                    if scanned == limits.max_scanned {
                        more = true;
                        break;
                    }
                    if !visit(*position, value)? {
                        break;
                    }
                }
            }
            Backend::Disk { entries, .. } => {
                let mut scanned = 0;
                for guard in entries.range(first.key()..) {
                    let (k, v) = guard.into_inner()?;
                    let position = Position::of_key(&k)?;
                    if !after(&position) {
                        continue;
                    }
                    if scanned == limits.max_scanned {
                        more = true;
                        break;
                    }
                    scanned += 1;
                    if !visit(position, &v)? {
                        break;
                    }
                }
            }
        }
        // Retention sets the floor before it deletes: a trim that ran
        // during the scan may have taken entries the scan skipped over.
        if self.state.lock().is_behind(from) {
            return Ok(expired());
        }
        read.more |= more;
        Ok(read)
    }

    /// Drops the entries appended before `before_ms`, and the oldest beyond
    /// `max_bytes`, at most `max_entries` of them per call; returns how many
    /// it dropped.
    pub fn trim(&self, before_ms: u64, max_bytes: u64, max_entries: usize) -> Result<usize> {
        let bytes = self.state.lock().bytes;
        let mut over = bytes.saturating_sub(max_bytes);
        // Each dropped entry: its position, its bytes, its time.
        let mut dropped: Vec<(Position, u64, u64)> = Vec::new();
        let mut consider = |position: Position, value: &[u8]| -> bool {
            let at_ms = postcard::from_bytes::<Logged>(value).map_or(0, |e| e.at_ms);
            if at_ms >= before_ms && over == 0 {
                return false;
            }
            over = over.saturating_sub(cost(value));
            dropped.push((position, cost(value), at_ms));
            true
        };
        // Which entries go: scanned first, deleted once the floor says so.
        match &self.backend {
            Backend::Memory(entries) => {
                for (position, value) in entries.lock().iter().take(max_entries) {
                    if !consider(*position, value) {
                        break;
                    }
                }
            }
            Backend::Disk { entries, .. } => {
                for guard in entries.iter().take(max_entries) {
                    let (k, v) = guard.into_inner()?;
                    if !consider(Position::of_key(&k)?, &v) {
                        break;
                    }
                }
            }
        }
        let Some((floor, _, at_ms)) = dropped.last().copied() else {
            return Ok(0);
        };
        // The floor first: a read that scans while the entries go finds
        // itself behind it when it checks again (`read`).
        {
            let mut state = self.state.lock();
            state.floor = Some((floor, at_ms));
            state.len = state.len.saturating_sub(dropped.len() as u64);
            state.bytes = state
                .bytes
                .saturating_sub(dropped.iter().map(|(_, c, _)| c).sum());
            // Lives wholly below the floor can no longer be read from.
            let current = state.life;
            state
                .lives
                .retain(|life| *life >= (floor.life, floor.id) || *life == current);
        }
        match &self.backend {
            Backend::Memory(entries) => {
                let mut entries = entries.lock();
                for (position, ..) in &dropped {
                    entries.remove(position);
                }
            }
            Backend::Disk { db, entries, meta } => {
                let mut batch = db.batch();
                for (position, ..) in &dropped {
                    batch.remove(entries, position.key());
                }
                let encoded = postcard::to_allocvec(&(floor, at_ms))
                    .map_err(|e| Error::Storage(format!("encoding the floor: {e}")))?;
                batch.insert(meta, FLOOR, encoded);
                batch.commit()?;
            }
        }
        Ok(dropped.len())
    }
}

#[cfg(test)]
mod tests;
