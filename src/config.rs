//! The cluster definition: one TOML file, one serde struct, one `validate()`.
//!
//! `config/cluster.toml` is the commented example. Unknown keys are errors
//! (serde names the key and its line); values that parse but make no sense
//! are caught by [`Config::validate`], whose errors name the key and the fix.
//!
//! config sits at the bottom with `ring` and `error`: it imports no runtime
//! module, and the constants a runtime module and a validation both need
//! (the largest handoff batch, the shortest secret, the token scopes) live
//! here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod antientropy;
mod changes;
mod limits;
mod security;
mod threads;
pub use antientropy::{AntiEntropyConfig, Mode as AntiEntropyMode};
pub use changes::ChangesConfig;
pub use limits::{Limits, MAX_KEY_BYTES, MAX_TIMEOUT_MS, MAX_TTL_MS, MIN_PEER_MESSAGE_BYTES};
pub use security::{
    EXAMPLE_SECRET, MIN_SECRET_BYTES, OpenRoute, Scope, SecurityConfig, TlsConfig, TokenConfig,
};

/// Most entries one handoff, repair or fetch message may carry: the bound
/// a receiver holds a sender to, and so the largest `ring.handoff_batch`.
pub const MAX_HANDOFF_BATCH: usize = 4096;
/// The most replicas a key may have (`cluster.n`): a bound the API
/// contract states for every quorum parameter (docs/openapi.yaml), far
/// above the 3 to 5 Dynamo-style stores run with.
pub const MAX_N: usize = 64;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub ring: RingConfig,
    #[serde(default)]
    pub antientropy: AntiEntropyConfig,
    #[serde(default)]
    pub changes: ChangesConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    pub nodes: Vec<NodeConfig>,
}

/// Placement, routing, membership and the peer transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Ring positions (virtual nodes) per unit of node weight.
    pub tokens: usize,
    /// Length of each Chord successor list.
    pub successors: usize,
    /// Chord stabilize / check_predecessor / fix_fingers period.
    pub stabilize_ms: u64,
    /// Finger lookups per vnode per stabilize period.
    pub fingers_per_tick: usize,
    /// Members-document gossip period.
    pub gossip_ms: u64,
    /// How often a node looks for data it holds but no longer owns.
    pub handoff_interval_ms: u64,
    /// Keys per handoff batch (at most [`MAX_HANDOFF_BATCH`]).
    pub handoff_batch: usize,
    /// Deadline of one node-to-node call.
    pub peer_timeout_ms: u64,
    /// Peers each node sends its heartbeat table to every `gossip_ms`.
    pub gossip_fanout: usize,
    /// Phi above which the failure detector holds a silent node down.
    pub phi_threshold: f64,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            tokens: 16,
            successors: 8,
            stabilize_ms: 1000,
            fingers_per_tick: 2,
            gossip_ms: 1000,
            handoff_interval_ms: 10_000,
            handoff_batch: 256,
            peer_timeout_ms: 2000,
            gossip_fanout: 3,
            phi_threshold: 8.0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster; contexts issued by another cluster are refused.
    pub name: String,
    /// Replicas per key.
    #[serde(default = "defaults::n")]
    pub n: usize,
    /// Default read quorum.
    #[serde(default = "defaults::quorum")]
    pub r: usize,
    /// Default write quorum.
    #[serde(default = "defaults::quorum")]
    pub w: usize,
    /// Default primary replicas a read needs among its `r` (0: no requirement).
    #[serde(default)]
    pub pr: usize,
    /// Default primary replicas a write needs among its `w`.
    #[serde(default)]
    pub pw: usize,
    /// Default replicas that must have made a write durable (fsynced).
    #[serde(default)]
    pub dw: usize,
    /// Default bound on a whole client request, in ms (`?timeout_ms=`).
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// A read asks `r` replicas (this node first) and the others only when
    /// one of them fails, a session context is not yet seen, or none has
    /// answered for this many ms (Cassandra's speculative retry). 0 asks
    /// all N at once, as Riak does.
    #[serde(default = "defaults::speculative_read_ms")]
    pub speculative_read_ms: u64,
    /// The highest peer protocol this node speaks (`peer::versions`);
    /// absent: its build's. Pinned to the older one during a rolling
    /// upgrade, it keeps the way back to the older build open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Durable, on disk (the default).
    Fjall,
    /// In memory, lost at exit: tests and simulation.
    Memory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// A write is acknowledged after an fsync that covers it (group commit).
    Always,
    /// Writes reach the OS at once and are fsynced every `sync_interval_ms`;
    /// a power loss or kernel crash can lose that much acknowledged data.
    Interval,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub engine: Engine,
    pub sync: SyncPolicy,
    pub sync_interval_ms: u64,
    /// Block cache of the storage engine, in MiB.
    pub cache_mb: u64,
    /// Row cache: the newest sets of recently written keys, in MiB; 0 is
    /// none (`store::rows`).
    pub row_cache_mb: u64,
}

impl StorageConfig {
    /// Whether a replica acknowledges a write only after an fsync that
    /// covers it: what `dw` counts.
    pub fn fsyncs_each_write(&self) -> bool {
        self.engine == Engine::Fjall && self.sync == SyncPolicy::Always
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: Engine::Fjall,
            sync: SyncPolicy::Always,
            sync_interval_ms: 100,
            cache_mb: 32,
            row_cache_mb: 32,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    /// Address the node's HTTP server binds, `host:port`.
    pub listen: String,
    /// Where the node keeps its data; relative paths start at the working directory.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Whether the node is one of the ring's first members. A node added
    /// to a running ring sets `initial = false` and starts with `--join`.
    #[serde(default = "defaults::initial")]
    pub initial: bool,
    /// Threads of the node's async runtime (`chorus serve`); absent: one
    /// per core for a node alone on its host, else its share of the cores
    /// among the nodes this file puts on that host ([`Config::runtime_threads`]).
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

mod defaults {
    pub fn n() -> usize {
        3
    }
    pub fn quorum() -> usize {
        2
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn initial() -> bool {
        true
    }
    pub fn timeout_ms() -> u64 {
        5000
    }
    pub fn speculative_read_ms() -> u64 {
        10
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(path.display().to_string(), format!("cannot read: {e}")))?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // Name the place by its line and text, which show the key.
            let place = e
                .span()
                .map(|span| {
                    let start = span.start.min(text.len());
                    let line = text[..start].matches('\n').count() + 1;
                    let source = text.lines().nth(line - 1).unwrap_or("").trim();
                    format!("line {line}: {source}")
                })
                .unwrap_or_else(|| "(file)".into());
            Error::config(place, e.message().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in cluster `chorus dev` runs: `nodes` nodes on consecutive
    /// loopback ports from `base_port`, data under `data_root/<id>`.
    pub fn dev(nodes: usize, base_port: u16, data_root: &Path) -> Config {
        let n = nodes.min(3);
        Config {
            cluster: ClusterConfig {
                name: "chorus-dev".into(),
                n,
                r: n / 2 + 1,
                w: n / 2 + 1,
                pr: 0,
                pw: 0,
                dw: 0,
                timeout_ms: defaults::timeout_ms(),
                speculative_read_ms: defaults::speculative_read_ms(),
                protocol: None,
            },
            limits: Limits::default(),
            storage: StorageConfig::default(),
            ring: RingConfig::default(),
            antientropy: AntiEntropyConfig::default(),
            changes: ChangesConfig::default(),
            // A fresh secret per dev cluster: its peers authenticate as
            // a real cluster's do.
            security: SecurityConfig {
                peer_secret: Some(
                    rand::random::<[u8; 32]>()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                ),
                ..SecurityConfig::default()
            },
            nodes: (0..nodes)
                .map(|i| NodeConfig {
                    id: format!("n{}", i + 1),
                    listen: format!("127.0.0.1:{}", base_port as usize + i),
                    data_dir: data_root.join(format!("n{}", i + 1)),
                    zone: None,
                    weight: 1,
                    initial: true,
                    worker_threads: None,
                })
                .collect(),
        }
    }

    pub fn node(&self, id: &str) -> Result<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let known: Vec<_> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            Error::config(
                "--node",
                format!("no node `{id}` in [[nodes]]; known: {}", known.join(", ")),
            )
        })
    }

    /// Checks what parsing cannot: ranges, uniqueness, addresses.
    pub fn validate(&self) -> Result<()> {
        let c = &self.cluster;
        if c.name.trim().is_empty() {
            return Err(Error::config("cluster.name", "must not be empty"));
        }
        if c.n == 0 || c.n > MAX_N {
            return Err(Error::config(
                "cluster.n",
                format!("is {}; it must be between 1 and {MAX_N}", c.n),
            ));
        }
        if c.n > self.nodes.len().max(1) {
            return Err(Error::config(
                "cluster.n",
                format!(
                    "is {} but only {} nodes are listed; lower n or add [[nodes]]",
                    c.n,
                    self.nodes.len()
                ),
            ));
        }
        for (key, q, min) in [
            ("cluster.r", c.r, 1),
            ("cluster.w", c.w, 1),
            ("cluster.pr", c.pr, 0),
            ("cluster.pw", c.pw, 0),
            ("cluster.dw", c.dw, 0),
        ] {
            if q < min || q > c.n {
                return Err(Error::config(
                    key,
                    format!("is {q}; it must be between {min} and cluster.n ({})", c.n),
                ));
            }
        }
        for (key, part, whole_key, whole) in [
            ("cluster.pr", c.pr, "cluster.r", c.r),
            ("cluster.pw", c.pw, "cluster.w", c.w),
            ("cluster.dw", c.dw, "cluster.w", c.w),
        ] {
            if part > whole {
                return Err(Error::config(
                    key,
                    format!(
                        "is {part}, above {whole_key} ({whole}); it counts among those: lower it or raise {whole_key}"
                    ),
                ));
            }
        }
        if c.dw > 0 && !self.storage.fsyncs_each_write() {
            return Err(Error::config(
                "cluster.dw",
                "is above 0, but no replica fsyncs each write (storage.engine = \"memory\" or storage.sync = \"interval\"): set storage.sync = \"always\" or dw = 0",
            ));
        }
        if c.timeout_ms == 0 || c.timeout_ms > 600_000 {
            return Err(Error::config(
                "cluster.timeout_ms",
                "must be between 1 and 600000 ms",
            ));
        }
        if c.speculative_read_ms > 600_000 {
            return Err(Error::config(
                "cluster.speculative_read_ms",
                "must be at most 600000 ms (0 asks every replica at once)",
            ));
        }
        let l = &self.limits;
        if l.max_key_bytes == 0 || l.max_key_bytes > MAX_KEY_BYTES {
            return Err(Error::config(
                "limits.max_key_bytes",
                format!(
                    "must be between 1 and {MAX_KEY_BYTES} (the storage engine takes keys of at most 65535 bytes, and stores each key after its 8-byte ring position)"
                ),
            ));
        }
        if l.max_value_bytes == 0 || l.max_value_bytes > 64 * 1024 * 1024 {
            return Err(Error::config(
                "limits.max_value_bytes",
                "must be between 1 and 67108864 (64 MiB)",
            ));
        }
        if l.max_batch_bytes < l.max_value_bytes || l.max_batch_bytes > 1024 * 1024 * 1024 {
            return Err(Error::config(
                "limits.max_batch_bytes",
                "must be at least limits.max_value_bytes and at most 1073741824 (1 GiB)",
            ));
        }
        if l.warn_siblings == 0 || l.warn_siblings > l.max_siblings {
            return Err(Error::config(
                "limits.warn_siblings",
                "must be between 1 and limits.max_siblings",
            ));
        }
        if l.max_siblings == 0 || l.max_siblings > 10_000 {
            return Err(Error::config(
                "limits.max_siblings",
                "must be between 1 and 10000",
            ));
        }
        if l.max_set_bytes < l.max_value_bytes || l.max_set_bytes > 1024 * 1024 * 1024 {
            return Err(Error::config(
                "limits.max_set_bytes",
                "must be at least limits.max_value_bytes and at most 1073741824 (1 GiB)",
            ));
        }
        if l.idempotency_ttl_ms == 0 || l.idempotency_ttl_ms > 7 * 86_400_000 {
            return Err(Error::config(
                "limits.idempotency_ttl_ms",
                "must be between 1 and 604800000 ms (a week)",
            ));
        }
        for (key, count) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_inflight", l.max_inflight),
            ("limits.max_watchers", l.max_watchers),
            ("limits.max_peer_inflight", l.max_peer_inflight),
        ] {
            if count == 0 || count > 1_000_000 {
                return Err(Error::config(key, "must be between 1 and 1000000"));
            }
        }
        if !(1..=crate::config::MAX_TIMEOUT_MS).contains(&l.max_watch_ms) {
            return Err(Error::config(
                "limits.max_watch_ms",
                "must be between 1 and 600000 ms (10 minutes)",
            ));
        }
        if !(64 * 1024..=1 << 34).contains(&l.max_watch_bytes) {
            return Err(Error::config(
                "limits.max_watch_bytes",
                "must be between 65536 (64 KiB) and 17179869184 (16 GiB)",
            ));
        }
        let largest = l.max_peer_message() as u64;
        if l.max_peer_inflight_bytes < largest || l.max_peer_inflight_bytes > 1 << 40 {
            return Err(Error::config(
                "limits.max_peer_inflight_bytes",
                format!(
                    "is {}; it must hold the largest peer message, {largest} bytes (twice limits.max_set_bytes and 1 MiB, at least 64 MiB), and be at most 1 TiB",
                    l.max_peer_inflight_bytes
                ),
            ));
        }
        for (key, ms) in [
            ("limits.header_timeout_ms", l.header_timeout_ms),
            ("limits.body_timeout_ms", l.body_timeout_ms),
            ("storage.sync_interval_ms", self.storage.sync_interval_ms),
        ] {
            if ms == 0 || ms > 3_600_000 {
                return Err(Error::config(key, "must be between 1 and 3600000 ms"));
            }
        }
        for (key, mb) in [
            ("storage.cache_mb", self.storage.cache_mb),
            ("storage.row_cache_mb", self.storage.row_cache_mb),
        ] {
            if mb > 1 << 20 {
                return Err(Error::config(key, "must be at most 1048576 MiB (1 TiB)"));
            }
        }
        let ring = &self.ring;
        if ring.tokens == 0 || ring.tokens > 256 {
            return Err(Error::config("ring.tokens", "must be between 1 and 256"));
        }
        if ring.successors < c.n || ring.successors > crate::ring::chord::MAX_SUCCESSORS {
            return Err(Error::config(
                "ring.successors",
                format!(
                    "is {}; it must be at least cluster.n ({}) to route around n-1 failures, and at most {}",
                    ring.successors,
                    c.n,
                    crate::ring::chord::MAX_SUCCESSORS
                ),
            ));
        }
        if ring.fingers_per_tick == 0 || ring.fingers_per_tick > 64 {
            return Err(Error::config(
                "ring.fingers_per_tick",
                "must be between 1 and 64",
            ));
        }
        if ring.handoff_batch == 0 || ring.handoff_batch > MAX_HANDOFF_BATCH {
            return Err(Error::config(
                "ring.handoff_batch",
                format!("must be between 1 and {MAX_HANDOFF_BATCH}"),
            ));
        }
        for (key, ms) in [
            ("ring.stabilize_ms", ring.stabilize_ms),
            ("ring.gossip_ms", ring.gossip_ms),
            ("ring.handoff_interval_ms", ring.handoff_interval_ms),
            ("ring.peer_timeout_ms", ring.peer_timeout_ms),
        ] {
            if !(10..=3_600_000).contains(&ms) {
                return Err(Error::config(key, "must be between 10 and 3600000 ms"));
            }
        }
        self.antientropy.validate()?;
        self.changes.validate()?;
        self.security.validate()?;
        if ring.gossip_fanout == 0 || ring.gossip_fanout > 16 {
            return Err(Error::config(
                "ring.gossip_fanout",
                "must be between 1 and 16",
            ));
        }
        if !(1.0..=50.0).contains(&ring.phi_threshold) {
            return Err(Error::config(
                "ring.phi_threshold",
                "must be between 1 and 50 (8 holds a node down after about 18 beat intervals of silence)",
            ));
        }
        if !self.nodes.iter().any(|n| n.initial) {
            return Err(Error::config(
                "nodes",
                "list at least one [[nodes]] entry with initial = true (the ring's first members)",
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let key = |field: &str| format!("nodes[{i}].{field}");
            if node.id.is_empty()
                || !node
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(Error::config(
                    key("id"),
                    format!(
                        "`{}` must be non-empty ASCII letters, digits, - or _",
                        node.id
                    ),
                ));
            }
            node.listen.parse::<SocketAddr>().map_err(|e| {
                Error::config(
                    key("listen"),
                    format!(
                        "`{}` is not host:port ({e}); for example 127.0.0.1:7001",
                        node.listen
                    ),
                )
            })?;
            if node.weight == 0 || node.weight > 100 {
                return Err(Error::config(key("weight"), "must be between 1 and 100"));
            }
            if node.worker_threads.is_some_and(|t| t == 0 || t > 1024) {
                return Err(Error::config(
                    key("worker_threads"),
                    "must be between 1 and 1024 (leave it out for one per core)",
                ));
            }
            for (j, other) in self.nodes[..i].iter().enumerate() {
                let clash = if other.id == node.id {
                    Some("id")
                } else if other.listen == node.listen && !node.listen.ends_with(":0") {
                    Some("listen")
                } else if other.data_dir == node.data_dir {
                    Some("data_dir")
                } else {
                    None
                };
                if let Some(field) = clash {
                    return Err(Error::config(
                        key(field),
                        format!("is the same as nodes[{j}].{field}; each node needs its own"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
