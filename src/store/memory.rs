//! The in-memory engine: an ordered map behind one lock. For unit tests and
//! the deterministic simulation, where speed at scale does not matter.
//!
//! Alone ([`MemoryStore::new`]) every write is durable the moment it is
//! applied. On a simulated [`Disk`] ([`MemoryStore::on_disk`]) a write is
//! applied at once and durable only once the disk's sync task has synced
//! it, and the disk's faults fail writes and syncs: what the simulation's
//! power losses, rollbacks and disk faults act on.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use bytes::Bytes;
use parking_lot::RwLock;

use super::by_key::{self, KeyRange, KeyScan, ScanLimits};
use super::changes::{self, ChangeLog};
use super::disk::Disk;
use super::{
    Change, Entry, Merge, Observer, ObserverSlot, Pending, Store, StoreStats, encode_set, observed,
    storage_key, storage_key_at, user_key,
};
use crate::budget::Budget;
use crate::clock::system_ms;
use crate::error::Result;
use crate::ring::{self, Position};
use crate::version::{Dot, SiblingSet};

pub struct MemoryStore {
    data: RwLock<Tables>,
    /// The simulated disk under the store, if any.
    disk: Option<std::sync::Arc<Disk>>,
    observer: ObserverSlot,
    /// Lives as long as this value: a simulated restart begins an empty
    /// log (the simulation does not read the change feed).
    changes: ChangeLog,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            data: RwLock::default(),
            disk: None,
            observer: ObserverSlot::default(),
            changes: ChangeLog::in_memory(),
        }
    }
}

/// The sets by storage key, and the keys in their own order with their
/// positions (`by_key.rs`), changed together under one lock.
#[derive(Default)]
struct Tables {
    sets: BTreeMap<Vec<u8>, SiblingSet>,
    by_key: BTreeMap<Vec<u8>, Position>,
}

impl Tables {
    fn of(sets: BTreeMap<Vec<u8>, SiblingSet>) -> Tables {
        let by_key = sets
            .keys()
            .filter_map(|skey| {
                let (position, key) = skey.split_at_checked(8)?;
                Some((key.to_vec(), by_key::position_of(position).ok()?))
            })
            .collect();
        Tables { sets, by_key }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new life of a node on `disk`: the store holds what the disk holds
    /// now, and a task of the current runtime syncs its writes (it ends
    /// with the runtime, as the node's threads end with its process).
    pub fn on_disk(disk: std::sync::Arc<Disk>) -> Self {
        let (image, life) = disk.open();
        tokio::spawn(std::sync::Arc::clone(&disk).sync_loop(life));
        MemoryStore {
            data: RwLock::new(Tables::of(image)),
            disk: Some(disk),
            observer: ObserverSlot::default(),
            changes: ChangeLog::in_memory(),
        }
    }
}

impl MemoryStore {
    /// A read-merge-write of `key`, appending its change to the log when
    /// `log` (the dots a node sent, if any).
    fn apply(&self, key: &str, merge: Merge, log: Option<Vec<Dot>>) -> Pending {
        if let Some(disk) = &self.disk
            && let Err(e) = disk.check_write()
        {
            metrics::counter!(crate::metrics::STORAGE_FAILURES_TOTAL, "stage" => "write")
                .increment(1);
            return Pending::ready(Err(e));
        }
        let skey = storage_key(key);
        let mut merge = Some(merge);
        let mut result = Err(crate::error::Error::Storage(
            "the update did not run".into(),
        ));
        let mut durable_rx = None;
        observed(&self.observer, || {
            // The write lock makes the read-merge-write atomic.
            let mut data = self.data.write();
            let Some(merge) = merge.take() else {
                return Vec::new();
            };
            let old = data.sets.get(&skey).cloned();
            result = merge(old.clone());
            let new = match &result {
                Ok(next) if next.is_empty() => {
                    data.by_key.remove(key.as_bytes());
                    data.sets.remove(&skey).and(None)
                }
                Ok(next) => {
                    if old.is_none() {
                        let position = ring::position(key.as_bytes());
                        data.by_key.insert(key.as_bytes().to_vec(), position);
                    }
                    data.sets.insert(skey.clone(), next.clone());
                    Some(next)
                }
                Err(_) => return Vec::new(),
            };
            if let Some(sent) = &log
                && let Some(next) = new
                && let Some(entry) = changes::logged(
                    key,
                    &changes::dots_of(old.as_ref()),
                    sent,
                    next,
                    system_ms(),
                )
                && let Err(e) = self.changes.append(entry)
            {
                tracing::error!(error = %e, "appending to the change log failed");
            }
            // Handed to the disk under the data lock, so two updates of
            // one key reach its page cache in the order they were applied.
            if let Some(disk) = &self.disk {
                let (durable, rx) = tokio::sync::oneshot::channel();
                disk.written(skey.clone(), new.cloned(), durable);
                durable_rx = Some(rx);
            }
            vec![Change {
                storage_key: skey.clone(),
                old: old.and_then(|s| encode_set(&s).ok()).map(Bytes::from),
                new: new.and_then(|s| encode_set(s).ok()).map(Bytes::from),
            }]
        });
        match durable_rx {
            Some(durable_rx) => Pending::applied_then(result, durable_rx),
            None => Pending::ready(result),
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<SiblingSet>> {
        Ok(self.data.read().sets.get(&storage_key(key)).cloned())
    }

    fn update(&self, key: &str, merge: Merge) -> Pending {
        self.apply(key, merge, None)
    }

    fn update_logged(&self, key: &str, merge: Merge, sent: Vec<Dot>) -> Pending {
        self.apply(key, merge, Some(sent))
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
        let from = range.start().to_be_bytes().to_vec();
        let data = self.data.read();
        let (mut out, mut budget) = (Vec::new(), Budget::new(max_bytes));
        let within = data
            .sets
            .range(from..)
            .take_while(|(k, _)| k.get(..8) <= Some(&range.end().to_be_bytes()[..]))
            .take(limit);
        for (k, v) in within {
            if !budget.admit(v.value_bytes()) {
                break;
            }
            out.push((user_key(k)?, v.clone()));
        }
        Ok(out)
    }

    fn scan_keys(
        &self,
        range: &KeyRange,
        wanted: &dyn Fn(Position) -> bool,
        limits: ScanLimits,
    ) -> Result<KeyScan> {
        let data = self.data.read();
        let index = data
            .by_key
            .range(range.start.clone()..)
            .map(|(key, position)| Ok((key.clone(), *position)));
        by_key::scan(index, range, wanted, limits, |key, position| {
            let skey = storage_key_at(position, key);
            data.sets
                .get(&skey)
                .map(|set| encode_set(set).map(Bytes::from))
                .transpose()
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.data.read().sets.len() as u64,
            disk_bytes: 0,
        }
    }

    fn observe(&self, observer: std::sync::Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }
}
