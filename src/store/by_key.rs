//! Keys in their own order, for client scans.
//!
//! Sets are stored in ring order (`position ++ key`, see the layout in
//! [`super`]), which is what Merkle trees and handoff walk. A client scan
//! wants keys in bytewise order, so each engine also keeps an index of its
//! keys in that order, each with its ring position: the fjall engine in a
//! keyspace of its own, `by_key` (`key -> position`, 8 bytes big-endian),
//! written in the same atomic batch as the set; the memory engine in a
//! second map under the same lock.
//!
//! A scan ([`Store::scan_keys`](super::Store::scan_keys)) walks the index
//! from its start, keeps the keys whose positions the caller wants (the
//! token ranges it was asked to cover), reads their sets and stops at
//! whichever comes first: the end of the range, `limit` keys, the byte
//! budget, or `examined` index entries. Where it stopped short it says
//! [`KeyScan::through`]: every wanted key up to that one was returned,
//! which is what lets a coordinator merge several replicas' scans without
//! skipping a key one of them had not reached yet.
//!
//! Invariants: the index holds a key exactly when the store holds a set
//! for it (the engine changes both together, only where the key appears
//! or goes); a data directory written before the index existed has it
//! built when opened ([`build`]), before any write is taken.

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::error::Result;
use crate::ring::Position;

/// Keys in bytewise order from `start` (inclusive) to `end` (exclusive;
/// none: to the last key).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Whether `key` is past the end.
    pub fn ended_by(&self, key: &[u8]) -> bool {
        self.end.as_deref().is_some_and(|end| key >= end)
    }

    /// Whether the range holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.ended_by(&self.start)
    }
}

/// How far one scan may go.
#[derive(Clone, Copy, Debug)]
pub struct ScanLimits {
    /// Keys returned.
    pub keys: usize,
    /// Bytes of the keys and sets returned (the first always goes).
    pub bytes: usize,
    /// Index entries looked at, wanted or not: bounds the work of a scan
    /// whose wanted positions are a small part of what this node holds.
    pub examined: usize,
}

/// What a scan in key order found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyScan {
    /// The wanted keys found, in key order, with their encoded sets.
    pub entries: Vec<(String, Bytes)>,
    /// Where the scan stopped short of the range's end: every wanted key
    /// up to and including this one is in `entries`. `None`: it reached
    /// the end.
    pub through: Option<String>,
}

/// Walks `index` (key and position, in key order, from the range's start)
/// and reads each wanted key's set with `read`; the scan of both engines.
pub(super) fn scan<I, R>(
    index: I,
    range: &KeyRange,
    wanted: &dyn Fn(Position) -> bool,
    limits: ScanLimits,
    mut read: R,
) -> Result<KeyScan>
where
    I: Iterator<Item = Result<(Vec<u8>, Position)>>,
    R: FnMut(&[u8], Position) -> Result<Option<Bytes>>,
{
    let (keys, examined_max) = (limits.keys.max(1), limits.examined.max(1));
    let mut out = KeyScan::default();
    let mut budget = crate::budget::Budget::new(limits.bytes);
    // The last key passed over (not wanted, or gone) since the last key
    // returned: with that one, how far the scan covered.
    let mut passed: Option<Vec<u8>> = None;
    let stop = |mut out: KeyScan, passed: Option<Vec<u8>>| -> Result<KeyScan> {
        out.through = match passed {
            Some(key) => Some(key_text(key)?),
            None => out.entries.last().map(|(key, _)| key.clone()),
        };
        Ok(out)
    };
    for (examined, entry) in index.enumerate() {
        let (key, position) = entry?;
        if range.ended_by(&key) {
            return Ok(out);
        }
        if out.entries.len() >= keys || examined >= examined_max {
            return stop(out, passed);
        }
        if !wanted(position) {
            passed = Some(key);
            continue;
        }
        // Gone since the index was read: a concurrent removal.
        let Some(set) = read(&key, position)? else {
            passed = Some(key);
            continue;
        };
        // The key travels beside its set, with a few bytes of framing.
        if !budget.admit(key.len() + set.len() + 8) {
            return stop(out, passed);
        }
        out.entries.push((key_text(key)?, set));
        passed = None;
    }
    Ok(out)
}

fn key_text(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key)
        .map_err(|_| crate::error::Error::Storage("an indexed key is not UTF-8".into()))
}

/// The fjall index: `by_key`, and the `meta` keyspace that says it is
/// complete.
pub(super) struct Index {
    pub keys: Keyspace,
    meta: Keyspace,
}

const BUILT: &[u8] = b"by_key built";

impl Index {
    pub fn open(db: &Database) -> Result<Index> {
        Ok(Index {
            keys: db.keyspace("by_key", KeyspaceCreateOptions::default)?,
            meta: db.keyspace("meta", KeyspaceCreateOptions::default)?,
        })
    }

    /// Builds the index of a data directory written before it existed:
    /// every stored key, in batches, then the mark that it is complete.
    /// A build cut short is done again (its entries are the same).
    pub fn build(&self, db: &Database, kv: &Keyspace) -> Result<()> {
        if self.meta.get(BUILT)?.is_some() {
            return Ok(());
        }
        let mut batch = db.batch();
        let mut queued = 0;
        for guard in kv.iter() {
            let storage_key = guard.key()?;
            let (position, key) = storage_key.split_at_checked(8).ok_or_else(|| {
                crate::error::Error::Storage("a stored key is shorter than its position".into())
            })?;
            batch.insert(&self.keys, key, position);
            queued += 1;
            if queued == 10_000 {
                batch.commit()?;
                batch = db.batch();
                queued = 0;
            }
        }
        batch.insert(&self.meta, BUILT, b"1");
        batch.commit()?;
        db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

/// A position as the index keeps it.
pub(super) fn position_of(bytes: &[u8]) -> Result<Position> {
    <[u8; 8]>::try_from(bytes)
        .map(Position::from_be_bytes)
        .map_err(|_| crate::error::Error::Storage("an indexed position is not 8 bytes".into()))
}

#[cfg(test)]
mod tests;
