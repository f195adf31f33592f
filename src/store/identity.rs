//! The node's actor and its dot counter.
//!
//! Kept in `<data_dir>/identity.json`, beside the database:
//! `{"node": "n1", "incarnation": <random u64>, "lease": <counter>}`. A data
//! directory without it is new, so the node gets a fresh random incarnation:
//! a node whose disk was wiped comes back as a new actor and can never mint
//! a dot that an old copy of its data already used. The dot counter is
//! leased in blocks: the file is rewritten (fsynced, then renamed into place)
//! before any counter above the lease is handed out, and a restart continues
//! from the lease, skipping at most one block. A u64 never runs out.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::version::{Actor, Dot};

const FILE: &str = "identity.json";
const LEASE_BLOCK: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Record {
    node: String,
    incarnation: u64,
    lease: u64,
}

/// Mints this node's dots. One per node, shared by every key.
pub struct Identity {
    actor: Actor,
    counter: AtomicU64,
    lease: Mutex<u64>,
    /// Where the lease is persisted; `None` for a node without a disk.
    file: Option<PathBuf>,
}

impl Identity {
    /// Loads the identity kept in `dir`, creating it for a new directory.
    pub fn load(dir: &Path, node: &str) -> Result<Identity> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join(FILE);
        let record = match std::fs::read(&file) {
            Ok(bytes) => {
                let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Storage(format!(
                        "{} is corrupt ({e}); restore it or wipe the data directory",
                        file.display()
                    ))
                })?;
                if record.node != node {
                    return Err(Error::config(
                        "--node",
                        format!(
                            "{} belongs to node `{}`, not `{node}`; each node needs its own data_dir",
                            dir.display(),
                            record.node
                        ),
                    ));
                }
                record
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let record = Record {
                    node: node.to_string(),
                    incarnation: rand::random(),
                    lease: 0,
                };
                super::write_json_synced(&file, &record)?;
                record
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Identity {
            actor: Actor::new(node, record.incarnation),
            // Every counter below the lease may have been used before a crash.
            counter: AtomicU64::new(record.lease),
            lease: Mutex::new(record.lease),
            file: Some(file),
        })
    }

    /// An identity that lives only in memory (the in-memory engine): a new
    /// incarnation every time.
    pub fn ephemeral(node: &str) -> Identity {
        Identity::in_memory(node, rand::random())
    }

    /// An identity in memory with a chosen incarnation (the simulation
    /// derives it from its seed).
    pub fn in_memory(node: &str, incarnation: u64) -> Identity {
        Identity {
            actor: Actor::new(node, incarnation),
            counter: AtomicU64::new(0),
            lease: Mutex::new(u64::MAX),
            file: None,
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// A dot never handed out before, with a counter of at least `floor`.
    pub fn mint(&self, floor: u64) -> Result<Dot> {
        let previous = self
            .counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                Some((c + 1).max(floor))
            })
            .unwrap_or_else(|c| c);
        let counter = (previous + 1).max(floor);
        let mut lease = self.lease.lock();
        if counter > *lease
            && let Some(file) = &self.file
        {
            let extended = counter.saturating_add(LEASE_BLOCK);
            let record = Record {
                node: self.actor.node.clone(),
                incarnation: self.actor.incarnation,
                lease: extended,
            };
            super::write_json_synced(file, &record)?;
            *lease = extended;
        }
        Ok(Dot::new(self.actor.clone(), counter))
    }
}
