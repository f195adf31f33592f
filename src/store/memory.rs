//! The in-memory engine: an ordered map behind one lock. For unit tests and
//! the deterministic simulation, where speed at scale does not matter and a
//! crash is a dropped value.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use parking_lot::RwLock;

use super::{
    Change, Entry, Merge, Observer, ObserverSlot, Pending, Store, StoreStats, encode_set, observed,
    storage_key, user_key,
};
use crate::error::Result;
use crate::ring::Position;
use crate::version::SiblingSet;

#[derive(Default)]
pub struct MemoryStore {
    data: RwLock<BTreeMap<Vec<u8>, SiblingSet>>,
    observer: ObserverSlot,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same data, opened afresh: what a restarted process finds on its
    /// disk (the simulation's crash without data loss). The observer stays
    /// with the old store, as it would with the old process.
    pub fn reopen(&self) -> Self {
        MemoryStore {
            data: RwLock::new(self.data.read().clone()),
            observer: ObserverSlot::default(),
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<SiblingSet>> {
        Ok(self.data.read().get(&storage_key(key)).cloned())
    }

    fn update(&self, key: &str, merge: Merge) -> Pending {
        let skey = storage_key(key);
        let mut merge = Some(merge);
        let mut result = Err(crate::error::Error::Storage(
            "the update did not run".into(),
        ));
        observed(&self.observer, || {
            // The write lock makes the read-merge-write atomic.
            let mut data = self.data.write();
            let Some(merge) = merge.take() else {
                return Vec::new();
            };
            let old = data.get(&skey).cloned();
            result = merge(old.clone());
            let new = match &result {
                Ok(next) if next.is_empty() => data.remove(&skey).and(None),
                Ok(next) => {
                    data.insert(skey.clone(), next.clone());
                    Some(next)
                }
                Err(_) => return Vec::new(),
            };
            vec![Change {
                storage_key: skey.clone(),
                old: old.and_then(|s| encode_set(&s).ok()),
                new: new.and_then(|s| encode_set(s).ok()),
            }]
        });
        Pending::ready(result)
    }

    fn scan(&self, range: RangeInclusive<Position>, limit: usize) -> Result<Vec<Entry>> {
        let from = range.start().to_be_bytes().to_vec();
        let data = self.data.read();
        data.range(from..)
            .take_while(|(k, _)| k.get(..8) <= Some(&range.end().to_be_bytes()[..]))
            .take(limit)
            .map(|(k, v)| Ok((user_key(k)?, v.clone())))
            .collect()
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.data.read().len() as u64,
            disk_bytes: 0,
        }
    }

    fn observe(&self, observer: std::sync::Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }
}
