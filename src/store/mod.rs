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
//! which is what Merkle trees and ownership handoff scan.
//!
//! # Invariants
//!
//! - [`Store::update`] is an atomic read-merge-write of one key: concurrent
//!   updates of the same key are serialised by striped locks, so none is lost.
//! - An update is durable once its [`Durable`] resolves: with `sync =
//!   "always"` after an fsync that covers it (one fsync serves every write
//!   that arrived while the previous one ran: group commit).
//! - Dots are unique: [`Identity`] gives the node an actor whose incarnation
//!   is chosen at random when the data directory is created, and a counter
//!   whose high-water mark is fsynced before any dot above it is handed out.

mod commit;
mod durable;
mod identity;
mod memory;

use std::ops::RangeInclusive;

pub use commit::Durable;
pub use durable::FjallStore;
pub use identity::Identity;
pub use memory::MemoryStore;

use crate::error::{Error, Result};
use crate::ring::{self, Position};
use crate::version::SiblingSet;

/// What a store holds, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub keys: u64,
    pub disk_bytes: u64,
}

/// A key's sibling set as found by a ring-range scan.
pub type Entry = (String, SiblingSet);

/// A node's local storage of sibling sets.
pub trait Store: Send + Sync + 'static {
    /// The sibling set of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<SiblingSet>>;

    /// Atomically replaces the set of `key` with `f(current)`; returns the new
    /// set and when it is durable. An error from `f` leaves the key untouched.
    fn update(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<SiblingSet>) -> Result<SiblingSet>,
    ) -> Result<(SiblingSet, Durable)>;

    /// Up to `limit` keys whose ring positions fall in `range`, in ring order.
    fn scan(&self, range: RangeInclusive<Position>, limit: usize) -> Result<Vec<Entry>>;

    /// Small named records of the node itself (incarnation, counter lease).
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Writes a named record and fsyncs before returning.
    fn meta_put_synced(&self, name: &str, value: &[u8]) -> Result<()>;

    fn stats(&self) -> StoreStats;
}

/// The storage key of `key`: its ring position, then its bytes.
pub fn storage_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&ring::position(key.as_bytes()).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// The user key inside a storage key.
pub fn user_key(storage_key: &[u8]) -> Result<String> {
    storage_key
        .get(8..)
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Storage("a stored key is shorter than its position".into()))
}

fn encode_set(set: &SiblingSet) -> Result<Vec<u8>> {
    postcard::to_allocvec(set).map_err(|e| Error::Storage(format!("encoding a sibling set: {e}")))
}

fn decode_set(bytes: &[u8]) -> Result<SiblingSet> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Storage(format!("a stored sibling set is corrupt: {e}")))
}

/// Striped locks that serialise read-merge-writes of the same key.
struct KeyLocks {
    stripes: Box<[parking_lot::Mutex<()>]>,
}

impl KeyLocks {
    fn new(stripes: usize) -> Self {
        KeyLocks {
            stripes: (0..stripes).map(|_| parking_lot::Mutex::new(())).collect(),
        }
    }

    fn lock(&self, storage_key: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        // The first 8 bytes are a uniform hash, so they spread keys evenly.
        let mut first = [0u8; 8];
        first.copy_from_slice(&storage_key[..8]);
        let stripe = u64::from_be_bytes(first) as usize % self.stripes.len();
        self.stripes[stripe].lock()
    }
}

#[cfg(test)]
mod tests;
