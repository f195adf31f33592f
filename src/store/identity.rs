//! The node's actor and its dot counter.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Store;
use crate::error::{Error, Result};
use crate::version::{Actor, Dot};

const INCARNATION: &str = "incarnation";
const COUNTER_LEASE: &str = "counter_lease";
/// Counters are leased in blocks: the high-water mark is fsynced once per
/// block, and a restart skips at most one block. A u64 never runs out.
const LEASE_BLOCK: u64 = 1 << 20;

/// Mints this node's dots. One per node, shared by every key.
pub struct Identity {
    actor: Actor,
    counter: AtomicU64,
    lease: Mutex<u64>,
}

fn read_u64(store: &dyn Store, name: &str) -> Result<Option<u64>> {
    match store.meta_get(name)? {
        None => Ok(None),
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Storage(format!("meta record `{name}` is corrupt")))?;
            Ok(Some(u64::from_le_bytes(raw)))
        }
    }
}

impl Identity {
    /// Loads the node's identity from its store, creating it on first start:
    /// a fresh data directory means a fresh random incarnation, so a node
    /// whose disk was wiped never reuses a dot.
    pub fn load(store: &dyn Store, node: &str) -> Result<Identity> {
        let incarnation = match read_u64(store, INCARNATION)? {
            Some(i) => i,
            None => {
                let fresh: u64 = rand::random();
                store.meta_put_synced(INCARNATION, &fresh.to_le_bytes())?;
                fresh
            }
        };
        // Every counter below the lease may have been used before a crash.
        let lease = read_u64(store, COUNTER_LEASE)?.unwrap_or(0);
        Ok(Identity {
            actor: Actor::new(node, incarnation),
            counter: AtomicU64::new(lease),
            lease: Mutex::new(lease),
        })
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// A dot never handed out before, with a counter of at least `floor`.
    pub fn mint(&self, store: &dyn Store, floor: u64) -> Result<Dot> {
        let mut current = self.counter.load(Ordering::SeqCst);
        let counter = loop {
            let next = (current + 1).max(floor);
            match self
                .counter
                .compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break next,
                Err(seen) => current = seen,
            }
        };
        let mut lease = self.lease.lock();
        if counter > *lease {
            let extended = counter.saturating_add(LEASE_BLOCK);
            store.meta_put_synced(COUNTER_LEASE, &extended.to_le_bytes())?;
            *lease = extended;
        }
        Ok(Dot::new(self.actor.clone(), counter))
    }
}
