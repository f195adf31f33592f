//! The in-memory engine: an ordered map behind one lock. For unit tests and
//! the deterministic simulation, where speed at scale does not matter and a
//! crash is a dropped value.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use parking_lot::{Mutex, RwLock};

use super::{Durable, Entry, Store, StoreStats, storage_key, user_key};
use crate::error::Result;
use crate::ring::Position;
use crate::version::SiblingSet;

#[derive(Default)]
pub struct MemoryStore {
    data: RwLock<BTreeMap<Vec<u8>, SiblingSet>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<SiblingSet>> {
        Ok(self.data.read().get(&storage_key(key)).cloned())
    }

    fn update(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<SiblingSet>) -> Result<SiblingSet>,
    ) -> Result<(SiblingSet, Durable)> {
        let skey = storage_key(key);
        // The write lock is the per-key lock here: the map is small and local.
        let mut data = self.data.write();
        let next = f(data.get(&skey).cloned())?;
        data.insert(skey, next.clone());
        Ok((next, Durable::now()))
    }

    fn scan(&self, range: RangeInclusive<Position>, limit: usize) -> Result<Vec<Entry>> {
        let from = range.start().to_be_bytes().to_vec();
        let data = self.data.read();
        data.range(from..)
            .take_while(|(k, _)| k[..8] <= range.end().to_be_bytes()[..])
            .take(limit)
            .map(|(k, v)| Ok((user_key(k)?, v.clone())))
            .collect()
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.lock().get(name).cloned())
    }

    fn meta_put_synced(&self, name: &str, value: &[u8]) -> Result<()> {
        self.meta.lock().insert(name.to_string(), value.to_vec());
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.data.read().len() as u64,
            disk_bytes: 0,
        }
    }
}
