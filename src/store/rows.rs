//! The row cache: the newest encoded sibling set of the keys written
//! lately, so that the read before a write (and a read) skips fjall.
//!
//! Every update is a read-merge-write: the committer reads a key's current
//! set before it merges into it. fjall answers a point read by a search of
//! its memtable's skiplist and then of its tables' filters and blocks; at
//! the peak of a three-node PUT run that read was 15% of the cluster's CPU,
//! the largest single item of the profile (docs/benchmarks.md, "A row
//! cache for the read before a write"). A hash lookup costs a fraction of
//! it. Cassandra's row cache and RocksDB's `row_cache` are the same idea;
//! here it holds what was written, so it is warm exactly where a workload
//! writes.
//!
//! # Invariant
//!
//! An entry, when present, is the set fjall holds for its key. It rests on
//! one writer: only the committer fills, replaces and drops entries, after
//! the batch that wrote the key is committed and before the write is
//! answered, so a read that starts after an acknowledgement finds the new
//! set here or no entry at all. Readers that miss read fjall and leave the
//! cache alone: a reader's fill could land after the committer's newer
//! entry was evicted, and leave an older set behind. A failed commit
//! changes neither fjall nor the cache.
//!
//! The bound is in bytes (`storage.row_cache_mb`; 0 turns the cache off):
//! each entry weighs its key, its encoded set and a fixed overhead. An
//! entry heavier than the cache allows is not kept, and replacing a key
//! with one drops the key's old entry.

use bytes::Bytes;
use fjall::{Keyspace, UserValue};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// What an entry costs beyond its key and set: the cache's slot (about 80
/// bytes), its share of the hash table and of the ghost list of evicted
/// keys, and the allocator's rounding of the key's and the set's blocks.
/// Measured: a node holding a full cache of 32 MiB at a million keys had
/// about that much more resident memory than one without (docs/benchmarks.md,
/// "A row cache for the read before a write").
const OVERHEAD: usize = 160;

/// A guess at the average entry, to size the cache's tables: a short key
/// and a set of one small sibling.
const TYPICAL_ENTRY: u64 = 256;

#[derive(Clone, Copy)]
struct Weight;

impl Weighter<Vec<u8>, Bytes> for Weight {
    fn weight(&self, key: &Vec<u8>, set: &Bytes) -> u64 {
        (key.len() + set.len() + OVERHEAD) as u64
    }
}

/// Storage key -> the encoded set fjall holds for it.
pub(crate) struct Rows(Option<Cache<Vec<u8>, Bytes, Weight>>);

impl Rows {
    /// A cache of at most `bytes`; none at all when `bytes` is 0.
    pub fn new(bytes: u64) -> Rows {
        Rows((bytes > 0).then(|| {
            let items = (bytes / TYPICAL_ENTRY).max(1) as usize;
            Cache::with_weighter(items, bytes, Weight)
        }))
    }

    /// The encoded set of `key`, when the cache holds it (readers go
    /// through [`Rows::read_through`]).
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.0.as_ref()?.get(key)
    }

    /// The encoded set of `key`: the cache's, or on a miss fjall's (`kv`),
    /// which is not kept here (a reader's fill could outlive the
    /// committer's newer entry: see the invariant above).
    pub fn read_through(&self, kv: &Keyspace, key: &[u8]) -> fjall::Result<Option<Stored>> {
        if let Some(set) = self.get(key) {
            return Ok(Some(Stored::Cached(set)));
        }
        Ok(kv.get(key)?.map(Stored::Engine))
    }

    /// Records what a committed batch left under `key`: its encoded set,
    /// or `None` when the key is gone. The committer's alone to call.
    pub fn committed(&self, key: Vec<u8>, set: Option<Bytes>) {
        let Some(cache) = &self.0 else { return };
        match set {
            Some(set) => cache.insert(key, set),
            None => {
                cache.remove(key.as_slice());
            }
        }
    }

    /// Bytes held now, for tests.
    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.0.as_ref().map_or(0, Cache::weight)
    }
}

/// A key's encoded set as a read found it.
pub(crate) enum Stored {
    /// In the row cache.
    Cached(Bytes),
    /// In fjall: its own buffer.
    Engine(UserValue),
}

impl Stored {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Stored::Cached(set) => set,
            Stored::Engine(set) => set,
        }
    }

    /// The bytes as `Bytes`: the cache's shared, fjall's copied.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Stored::Cached(set) => set,
            Stored::Engine(set) => Bytes::copy_from_slice(&set),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::StorageConfig;
    use crate::store::{FjallStore, Identity, Store, decode_set};
    use crate::version::{Content, Context, SiblingSet};

    fn set(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn an_entry_is_the_last_committed_set_and_a_removal_drops_it() {
        let rows = Rows::new(1 << 20);
        assert_eq!(rows.get(b"k"), None);
        rows.committed(b"k".to_vec(), Some(set(10, 1)));
        rows.committed(b"k".to_vec(), Some(set(12, 2)));
        assert_eq!(rows.get(b"k"), Some(set(12, 2)));
        rows.committed(b"k".to_vec(), None);
        assert_eq!(rows.get(b"k"), None);
    }

    #[test]
    fn the_bound_is_in_bytes() {
        let bound = 64 * 1024;
        let rows = Rows::new(bound);
        for i in 0u32..10_000 {
            rows.committed(i.to_be_bytes().to_vec(), Some(set(100, 7)));
            assert!(rows.weight() <= bound, "{} bytes held", rows.weight());
        }
        let kept = (0u32..10_000)
            .filter(|i| rows.get(&i.to_be_bytes()).is_some())
            .count();
        assert!(kept > 0 && kept <= (bound as usize) / (100 + 4 + OVERHEAD));
    }

    #[test]
    fn a_set_too_large_to_keep_drops_the_older_entry() {
        // Otherwise the cache would go on answering with the older set.
        let rows = Rows::new(4096);
        rows.committed(b"k".to_vec(), Some(set(10, 1)));
        assert_eq!(rows.get(b"k"), Some(set(10, 1)));
        rows.committed(b"k".to_vec(), Some(set(8192, 2)));
        assert_eq!(rows.get(b"k"), None);
    }

    #[test]
    fn a_cache_of_zero_bytes_holds_nothing() {
        let rows = Rows::new(0);
        rows.committed(b"k".to_vec(), Some(set(10, 1)));
        assert_eq!(rows.get(b"k"), None);
    }

    /// The row cache is only a faster way to the same answers: with a
    /// cache far smaller than the data, so that entries are evicted, replaced
    /// and dropped all the time, every read and every read-before-write sees
    /// exactly what the engine holds, and the engine, reopened without the
    /// cache, holds what was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_row_cache_answers_as_the_engine_would_while_it_evicts() {
        use std::collections::HashMap;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StorageConfig {
            row_cache_mb: 1,
            ..StorageConfig::default()
        };
        let store = Arc::new(FjallStore::open(dir.path(), &config).expect("open fjall"));
        let id = Arc::new(Identity::ephemeral("n1"));
        let mut model: HashMap<String, SiblingSet> = HashMap::new();
        // A fixed pseudo-random walk over 400 keys of 4 KiB values: 1.6 MiB of
        // sets against 1 MiB of cache.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut checked, mut found) = (0, 0);
        for step in 0..3000 {
            let key = format!("k{}", next() % 400);
            let action = next() % 10;
            let done = if action == 0 {
                // Removes the key: the cache must forget it.
                store.update(&key, Box::new(|_| Ok(SiblingSet::default())))
            } else {
                // Replaces what the read before the write found: had that read
                // come from a stale entry, the write would keep it as a sibling.
                let value = format!("{step:04}").repeat(1024);
                let id = Arc::clone(&id);
                store.update(
                    &key,
                    Box::new(move |current| {
                        let mut set = current.unwrap_or_default();
                        let seen = Context::read(set.context().clone());
                        let dot = id.mint(|actor| set.min_counter(&seen, actor));
                        set.write(&seen, dot, Content::Value(Bytes::from(value)));
                        Ok(set)
                    }),
                )
            };
            let set = done.wait().await.expect("update");
            assert!(set.siblings().len() <= 1, "a stale read kept a sibling");
            match set.is_empty() {
                true => model.remove(&key),
                false => model.insert(key.clone(), set),
            };
            let probe = format!("k{}", next() % 400);
            let got = store.get(&probe).expect("get");
            assert_eq!(
                got.as_ref(),
                model.get(&probe),
                "read of {probe} at step {step}"
            );
            // The bytes a replica answers a peer's read with (from the
            // cache or the engine) are the same set's.
            let encoded = store.get_encoded(&probe).expect("get encoded");
            let decoded = encoded.map(|b| decode_set(&b).expect("a set's bytes"));
            assert_eq!(decoded, got, "encoded read of {probe} at step {step}");
            checked += 1;
            found += usize::from(got.is_some());
        }
        assert!(
            checked == 3000 && found > 1000,
            "{found} of {checked} reads found a value"
        );
        drop(store);
        let config = StorageConfig {
            row_cache_mb: 0,
            ..StorageConfig::default()
        };
        let reopened = FjallStore::open(dir.path(), &config).expect("reopen fjall");
        for i in 0..400 {
            let key = format!("k{i}");
            assert_eq!(
                reopened.get(&key).expect("get").as_ref(),
                model.get(&key),
                "{key}"
            );
            let encoded = reopened.get_encoded(&key).expect("get encoded");
            assert_eq!(
                encoded
                    .map(|b| decode_set(&b).expect("a set's bytes"))
                    .as_ref(),
                model.get(&key),
                "{key} encoded, from the engine"
            );
        }
    }
}
