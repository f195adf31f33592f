//! The durable engine: fjall, an LSM tree with a write-ahead journal.
//!
//! Two keyspaces: `kv` holds the encoded sibling sets under their storage
//! keys, `meta` the node's own records. Every write reaches the OS as part of
//! the journal before `update` returns, so it survives a crash of the process;
//! the [`GroupCommit`] thread's fsync makes it survive a crash of the machine.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::commit::GroupCommit;
use super::{
    Durable, Entry, KeyLocks, Store, StoreStats, decode_set, encode_set, storage_key, user_key,
};
use crate::config::StorageConfig;
use crate::error::Result;
use crate::ring::Position;
use crate::version::SiblingSet;

const LOCK_STRIPES: usize = 1024;

pub struct FjallStore {
    db: Database,
    kv: Keyspace,
    meta: Keyspace,
    locks: KeyLocks,
    commit: Arc<GroupCommit>,
}

impl FjallStore {
    pub fn open(dir: &Path, config: &StorageConfig) -> Result<FjallStore> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir)
            .cache_size(config.cache_mb * 1024 * 1024)
            .open()?;
        let kv = db.keyspace("kv", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let syncing = db.clone();
        let commit = GroupCommit::start(
            config.sync,
            Duration::from_millis(config.sync_interval_ms),
            move || Ok(syncing.persist(PersistMode::SyncData)?),
        )?;
        Ok(FjallStore {
            db,
            kv,
            meta,
            locks: KeyLocks::new(LOCK_STRIPES),
            commit,
        })
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.commit.stop();
    }
}

impl Store for FjallStore {
    fn get(&self, key: &str) -> Result<Option<SiblingSet>> {
        self.kv
            .get(storage_key(key))?
            .map(|bytes| decode_set(&bytes))
            .transpose()
    }

    fn update(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<SiblingSet>) -> Result<SiblingSet>,
    ) -> Result<(SiblingSet, Durable)> {
        let skey = storage_key(key);
        let _guard = self.locks.lock(&skey);
        let current = self.kv.get(&skey)?.map(|b| decode_set(&b)).transpose()?;
        let next = f(current)?;
        self.kv.insert(skey, encode_set(&next)?)?;
        Ok((next, self.commit.after_write()))
    }

    fn scan(&self, range: RangeInclusive<Position>, limit: usize) -> Result<Vec<Entry>> {
        let from = range.start().to_be_bytes();
        let to = range.end().to_be_bytes();
        let mut out = Vec::new();
        for guard in self.kv.range(from.as_slice()..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            if k[..8] > to[..] {
                break;
            }
            out.push((user_key(&k)?, decode_set(&v)?));
        }
        Ok(out)
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(name)?.map(|v| v.to_vec()))
    }

    fn meta_put_synced(&self, name: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(name, value)?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.kv.approximate_len() as u64,
            disk_bytes: self.db.disk_space().unwrap_or(0),
        }
    }
}
