//! `[antientropy]`: how replicas that drifted are brought back together.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How replicas compare and repair what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Merkle trees per range: compare roots, descend into what differs,
    /// exchange the differing keys' sibling sets (Dynamo, Riak AAE).
    State,
    /// A causal operation log per range: replicas exchange the version
    /// vectors of the ops they applied and send each other exactly the
    /// missing ops (Bayou); a state exchange where the log cannot serve.
    Operation,
    /// No background repair: only read repair and hinted handoff.
    Off,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiEntropyConfig {
    pub mode: Mode,
    /// Period between two exchange rounds of one node, each with one peer.
    pub interval_ms: u64,
    /// Most keys one round repairs; the rest wait for later rounds.
    pub max_keys_per_round: usize,
    /// Most bytes one round sends and receives, all messages counted.
    pub max_bytes_per_round: u64,
    /// Long-run cap on anti-entropy traffic per node, bytes per second
    /// (0: only the per-round bounds).
    pub rate_bytes_per_sec: u64,
    /// Operation mode: most ops one range's log keeps; beyond it the oldest
    /// go, and a replica that still needs them gets a state exchange.
    pub max_log_ops: usize,
    /// Operation mode: most ops one range holds waiting for their causal
    /// dependencies; beyond it the range falls back to a state exchange.
    pub max_buffered_ops: usize,
    /// How often a node looks for deletes to purge among the keys it is
    /// the primary replica of (0: never).
    pub purge_interval_ms: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            mode: Mode::State,
            interval_ms: 1000,
            max_keys_per_round: 1000,
            max_bytes_per_round: 8 * 1024 * 1024,
            rate_bytes_per_sec: 0,
            max_log_ops: 10_000,
            max_buffered_ops: 10_000,
            purge_interval_ms: 10_000,
        }
    }
}

impl AntiEntropyConfig {
    pub fn validate(&self) -> Result<()> {
        if !(10..=3_600_000).contains(&self.interval_ms) {
            return Err(Error::config(
                "antientropy.interval_ms",
                "must be between 10 and 3600000 ms",
            ));
        }
        if self.max_keys_per_round == 0 || self.max_keys_per_round > 1_000_000 {
            return Err(Error::config(
                "antientropy.max_keys_per_round",
                "must be between 1 and 1000000",
            ));
        }
        if self.max_bytes_per_round < 64 * 1024 {
            return Err(Error::config(
                "antientropy.max_bytes_per_round",
                "must be at least 65536: one round must be able to compare a tree",
            ));
        }
        if self.rate_bytes_per_sec != 0 && self.rate_bytes_per_sec < 1024 {
            return Err(Error::config(
                "antientropy.rate_bytes_per_sec",
                "must be 0 (no cap) or at least 1024",
            ));
        }
        if self.purge_interval_ms != 0 && !(100..=86_400_000).contains(&self.purge_interval_ms) {
            return Err(Error::config(
                "antientropy.purge_interval_ms",
                "must be 0 (no purge) or between 100 and 86400000 ms",
            ));
        }
        for (key, value) in [
            ("antientropy.max_log_ops", self.max_log_ops),
            ("antientropy.max_buffered_ops", self.max_buffered_ops),
        ] {
            if value == 0 || value > 10_000_000 {
                return Err(Error::config(key, "must be between 1 and 10000000"));
            }
        }
        Ok(())
    }
}
