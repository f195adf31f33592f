//! Storage: the sibling sets of the keys this node replicates.
//!
//! A [`Store`] maps keys to [`SiblingSet`]s. Two engines implement it:
//! [`FjallStore`] (durable, an LSM tree on disk, the default) and
//! [`MemoryStore`] (tests and simulation).
//!
//! # Layout
//!
//! Keys are stored under `position (8 bytes, big-endian) ++ key bytes`, where
//! the position is the key's ring position ([`crate::ring::position`]). A
//! range of the ring is therefore a contiguous, ordered range of the store,
//! which is what Merkle trees and ownership handoff scan. Client scans
//! want keys in their own order: each engine keeps an index for them
//! ([`by_key`]).
//!
//! # Invariants
//!
//! - [`Store::update`] is an atomic read-merge-write of one key: updates are
//!   applied one at a time, in arrival order, so none is lost.
//! - An update's [`Pending`] gives its new set once computed
//!   ([`Pending::applied_with_bytes`]) and then says once it is durable: with
//!   `sync = "always"` after an fsync that covers it ([`Pending::wait`]
//!   waits for both). The fjall engine computes updates on one committer
//!   thread that takes every update queued so far, writes them as one
//!   batch and fsyncs it (group commit), so the cost of an fsync is shared
//!   by every write that was concurrent with it.
//! - Dots are unique: [`Identity`] gives every life of the node a new
//!   actor (a random incarnation drawn at start) whose counter lives in
//!   memory, so no state of the disk (a restored backup, a lost tail) can
//!   make the node mint a dot it minted before.

pub mod by_key;
pub mod changes;
mod committer;
pub mod disk;
mod durable;
mod identity;
mod memory;
mod pending;
mod rows;

use std::ops::RangeInclusive;

use bytes::Bytes;

pub use by_key::{KeyRange, KeyScan, ScanLimits};
pub use changes::ChangeLog;
pub use durable::FjallStore;
pub use identity::Identity;
pub use memory::MemoryStore;
pub use pending::{Durable, Pending};

use crate::error::{Error, Result};
use crate::ring::{self, Position};
use crate::version::SiblingSet;

/// What a store holds, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub keys: u64,
    pub disk_bytes: u64,
}

/// One key's change as a write made it: its storage key and its encoded
/// sets before and after (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub storage_key: Vec<u8>,
    pub old: Option<Bytes>,
    pub new: Option<Bytes>,
}

/// Sees every change to a store, in the order they are made: anti-entropy
/// keeps its Merkle trees up to date this way.
pub trait Observer: Send + Sync + 'static {
    /// Runs `write`, which makes some changes visible to reads and returns
    /// them. Writes and scans the observer makes under one lock therefore
    /// never interleave: a scan sees a change exactly when the observer
    /// has seen it.
    fn around(&self, write: &mut dyn FnMut() -> Vec<Change>);
}

/// A key's sibling set as found by a ring-range scan.
pub type Entry = (String, SiblingSet);

/// A read-merge-write of one key: from the current set (if any) to the next.
/// An error leaves the key untouched and is the update's result. An empty
/// set ([`SiblingSet::is_empty`]) removes the key (handoff drops what a node
/// no longer owns that way).
pub type Merge = Box<dyn FnOnce(Option<SiblingSet>) -> Result<SiblingSet> + Send>;

/// A node's local storage of sibling sets.
pub trait Store: Send + Sync + 'static {
    /// The sibling set of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<SiblingSet>>;

    /// The same set as its postcard bytes ([`encode_set`]), as the store
    /// keeps it where it keeps bytes: a replica answers a peer's read
    /// with them, never decoding them. They are not checked here: bytes
    /// damaged on disk fail the asker's decode, which counts this replica
    /// as failed for that read, as this replica's own decode error did.
    fn get_encoded(&self, key: &str) -> Result<Option<Bytes>> {
        self.get(key)?
            .map(|set| encode_set(&set).map(Bytes::from))
            .transpose()
    }

    /// Atomically replaces the set of `key` with `merge(current)`. The result
    /// resolves to the new set once it is durable.
    fn update(&self, key: &str, merge: Merge) -> Pending;

    /// As [`Store::update`], and appends what the write brought to the
    /// change log in the same atomic step ([`changes`]): client writes
    /// (`sent` empty), and the sets coordinators, read repairs and hints
    /// send (`sent`: their siblings' dots, logged even where the copy held
    /// them already).
    fn update_logged(&self, key: &str, merge: Merge, sent: Vec<crate::version::Dot>) -> Pending;

    /// This store's change log.
    fn changes(&self) -> &ChangeLog;

    /// Up to `limit` keys whose ring positions fall in `range`, in ring order.
    fn scan(&self, range: RangeInclusive<Position>, limit: usize) -> Result<Vec<Entry>> {
        self.scan_bytes(range, limit, usize::MAX)
    }

    /// As [`Store::scan`], and stopping before the sets' bytes (as stored,
    /// or their values' bytes where nothing is encoded) pass `max_bytes`;
    /// always at least one key when the range holds any, so that a single
    /// set larger than the budget still moves, alone.
    fn scan_bytes(
        &self,
        range: RangeInclusive<Position>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>>;

    /// The keys of `range` in bytewise order whose ring positions are
    /// `wanted`, with their sets as stored, within `limits`; where it
    /// stopped short, how far it covered (`by_key.rs`). A client scan's
    /// share on this replica.
    fn scan_keys(
        &self,
        range: &KeyRange,
        wanted: &dyn Fn(Position) -> bool,
        limits: ScanLimits,
    ) -> Result<KeyScan>;

    fn stats(&self) -> StoreStats;

    /// Installs the one observer of every later change (a second is ignored).
    fn observe(&self, observer: std::sync::Arc<dyn Observer>);
}

/// The observer of a store, once installed.
type ObserverSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn Observer>>>;

/// Runs `write` around the slot's observer, if any.
fn observed(slot: &ObserverSlot, mut write: impl FnMut() -> Vec<Change>) {
    match slot.get() {
        Some(observer) => observer.around(&mut write),
        None => {
            write();
        }
    }
}

/// The storage key of `key`: its ring position, then its bytes.
pub fn storage_key(key: &str) -> Vec<u8> {
    storage_key_at(ring::position(key.as_bytes()), key.as_bytes())
}

/// The storage key of `key`, whose position is known.
fn storage_key_at(position: Position, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    storage_key_into(&mut out, position, key);
    out
}

/// The storage key of `key` in `out`, whatever it held: a scan reuses one
/// buffer for every key.
fn storage_key_into(out: &mut Vec<u8>, position: Position, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&position.to_be_bytes());
    out.extend_from_slice(key);
}

/// The user key inside a storage key.
pub fn user_key(storage_key: &[u8]) -> Result<String> {
    storage_key
        .get(8..)
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Storage("a stored key is shorter than its position".into()))
}

/// Writes `value` as JSON to `path` atomically and durably: a temporary
/// file, fsync, rename, fsync of the directory. For the small records a
/// node keeps beside its store (identity, members).
pub fn write_json_synced(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Storage(e.to_string()))?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn encode_set(set: &SiblingSet) -> Result<Vec<u8>> {
    crate::encoding::to_exact_vec(set)
        .map_err(|e| Error::Storage(format!("encoding a sibling set: {e}")))
}

fn decode_set(bytes: &[u8]) -> Result<SiblingSet> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Storage(format!("a stored sibling set is corrupt: {e}")))
}

#[cfg(test)]
mod tests;
