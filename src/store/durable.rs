//! The durable engine: fjall, an LSM tree with a write-ahead journal.
//!
//! The `kv` keyspace holds the encoded sibling sets under their storage
//! keys; `by_key` the keys in their own order, for client scans
//! (`by_key.rs`); `changes` and `changes_meta` the change log
//! (`changes.rs`). Reads ask the row cache ([`Rows`]) first, then fjall; updates go
//! through the [`Committer`], which batches them, makes each batch durable
//! before answering, and alone keeps the row cache.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use tokio::sync::oneshot;

use super::by_key::{self, Index, KeyRange, KeyScan, ScanLimits};
use super::changes::ChangeLog;
use super::committer::{Committer, Job, Stores};
use super::rows::{Rows, Stored};
use super::{
    Entry, Merge, Observer, ObserverSlot, Pending, Store, StoreStats, decode_set, storage_key,
    storage_key_into, user_key,
};
use crate::budget::Budget;
use crate::config::StorageConfig;
use crate::error::Result;
use crate::ring::Position;
use crate::version::{Dot, SiblingSet};

pub struct FjallStore {
    db: Database,
    kv: Keyspace,
    /// The keys in their own order (`by_key.rs`).
    by_key: Keyspace,
    committer: Committer,
    observer: ObserverSlot,
    rows: Arc<Rows>,
    changes: Arc<ChangeLog>,
}

impl FjallStore {
    pub fn open(dir: &Path, config: &StorageConfig) -> Result<FjallStore> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir.join("fjall"))
            .cache_size(config.cache_mb * 1024 * 1024)
            .open()?;
        let kv = db.keyspace("kv", KeyspaceCreateOptions::default)?;
        let index = Index::open(&db)?;
        index.build(&db, &kv)?;
        let observer = ObserverSlot::default();
        let rows = Arc::new(Rows::new(config.row_cache_mb * 1024 * 1024));
        let changes = Arc::new(ChangeLog::open(&db)?);
        let stores = Stores {
            kv: kv.clone(),
            by_key: index.keys.clone(),
            changes: Arc::clone(&changes),
            observer: observer.clone(),
            rows: Arc::clone(&rows),
        };
        let committer = Committer::start(
            db.clone(),
            stores,
            config.sync,
            Duration::from_millis(config.sync_interval_ms),
        )?;
        Ok(FjallStore {
            db,
            kv,
            by_key: index.keys,
            committer,
            observer,
            rows,
            changes,
        })
    }

    fn submit(&self, key: &str, merge: Merge, log: Option<Vec<Dot>>) -> Pending {
        let (applied, applied_rx) = oneshot::channel();
        let (durable, durable_rx) = oneshot::channel();
        self.committer.submit(Job {
            key: storage_key(key),
            merge,
            log,
            applied,
            durable,
            queued: std::time::Instant::now(),
        });
        Pending::waiting(applied_rx, durable_rx)
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.committer.stop();
    }
}

impl Store for FjallStore {
    fn get(&self, key: &str) -> Result<Option<SiblingSet>> {
        self.rows
            .read_through(&self.kv, &storage_key(key))?
            .map(|set| decode_set(set.bytes()))
            .transpose()
    }

    fn get_encoded(&self, key: &str) -> Result<Option<Bytes>> {
        let set = self.rows.read_through(&self.kv, &storage_key(key))?;
        Ok(set.map(Stored::into_bytes))
    }

    fn update(&self, key: &str, merge: Merge) -> Pending {
        self.submit(key, merge, None)
    }

    fn update_logged(&self, key: &str, merge: Merge, sent: Vec<Dot>) -> Pending {
        self.submit(key, merge, Some(sent))
    }

    fn changes(&self) -> &ChangeLog {
        &self.changes
    }

    fn scan_bytes(
        &self,
        range: RangeInclusive<Position>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let from = range.start().to_be_bytes();
        let to = range.end().to_be_bytes();
        let (mut out, mut budget) = (Vec::new(), Budget::new(max_bytes));
        for guard in self.kv.range(from.as_slice()..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            if k.get(..8) > Some(&to[..]) || !budget.admit(v.len()) {
                break;
            }
            out.push((user_key(&k)?, decode_set(&v)?));
        }
        Ok(out)
    }

    fn scan_keys(
        &self,
        range: &KeyRange,
        wanted: &dyn Fn(Position) -> bool,
        limits: ScanLimits,
    ) -> Result<KeyScan> {
        let index = self.by_key.range(range.start.as_slice()..).map(|guard| {
            let (key, position) = guard.into_inner()?;
            Ok((key.to_vec(), by_key::position_of(&position)?))
        });
        // One buffer for every key's storage key.
        let mut skey = Vec::new();
        by_key::scan(index, range, wanted, limits, |key, position| {
            storage_key_into(&mut skey, position, key);
            Ok(self
                .rows
                .read_through(&self.kv, &skey)?
                .map(Stored::into_bytes))
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.kv.approximate_len() as u64,
            disk_bytes: self.db.disk_space().unwrap_or(0),
        }
    }

    fn observe(&self, observer: std::sync::Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }
}
