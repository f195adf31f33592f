//! `[changes]`: how long each node keeps its change log, the source of the
//! change feed (`GET /changes`, `store::changes`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangesConfig {
    /// Entries older than this are dropped; a feed cursor older than what
    /// every node still holds answers 410 `cursor_expired`.
    pub retention_ms: u64,
    /// Most bytes one node's log keeps; beyond it the oldest entries go
    /// first, whatever their age.
    pub max_bytes: u64,
    /// How often each node drops what retention no longer keeps.
    pub trim_interval_ms: u64,
    /// Most `GET /changes` requests one node serves at once (each holds at
    /// most a 1 MiB page); beyond it a 503 `overloaded`. Not in
    /// `limits.max_inflight`.
    pub max_readers: usize,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig {
            retention_ms: 3_600_000,
            max_bytes: 256 * 1024 * 1024,
            trim_interval_ms: 10_000,
            max_readers: 256,
        }
    }
}

impl ChangesConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1_000..=30 * 86_400_000).contains(&self.retention_ms) {
            return Err(Error::config(
                "changes.retention_ms",
                "must be between 1000 (1 s) and 2592000000 (30 days)",
            ));
        }
        if self.max_bytes < 1024 * 1024 {
            return Err(Error::config(
                "changes.max_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if !(100..=3_600_000).contains(&self.trim_interval_ms) {
            return Err(Error::config(
                "changes.trim_interval_ms",
                "must be between 100 and 3600000 ms",
            ));
        }
        if !(1..=65_536).contains(&self.max_readers) {
            return Err(Error::config(
                "changes.max_readers",
                "must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}
