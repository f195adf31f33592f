//! `[limits]`: what a node accepts from clients and peers, in bytes and in
//! counts, before it refuses with a typed error.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// A key holding more siblings than this is logged and counted.
    pub warn_siblings: usize,
    /// A client write that would leave more siblings than this is refused
    /// (503); replication, repair and handoff are never refused.
    pub max_siblings: usize,
    /// Largest `POST /batch` body accepted, in bytes, and the most bytes
    /// of values its answer carries (reads past it answer 413 alone).
    pub max_batch_bytes: usize,
    /// A client write that would leave a key's siblings holding more value
    /// bytes than this, all together, is refused (503).
    pub max_set_bytes: usize,
    /// Most hints (writes kept for an unreachable replica) a node holds.
    pub max_hints: usize,
    /// How long a write's `Idempotency-Key` is remembered with its key.
    pub idempotency_ttl_ms: u64,
    /// A client must finish sending its request headers within this time.
    pub header_timeout_ms: u64,
    /// A client must finish sending its request body within this time.
    pub body_timeout_ms: u64,
    /// Most open connections, clients' and peers' together; beyond it a
    /// connection gets one 503 `overloaded` with `Retry-After` and is closed.
    pub max_connections: usize,
    /// Most client requests served at once; beyond it a request is a 503
    /// `overloaded` with `Retry-After`. Peer requests (replication,
    /// repair, hints, handoff) are not counted: they are never refused for
    /// load, only bounded by their own queues.
    pub max_inflight: usize,
    /// Most peer requests served at once; beyond it a peer request is a 503
    /// `overloaded` (retryable: the sender tries again or counts the
    /// replica as failed for that request).
    pub max_peer_inflight: usize,
    /// Most bytes of peer request bodies held at once, counted from the
    /// signed length before any byte is read; a request waits up to
    /// `body_timeout_ms` for room, then is a 503 `overloaded`. At least
    /// the largest peer message ([`Limits::max_peer_message`]).
    pub max_peer_inflight_bytes: u64,
    /// Most watchers (`GET /kv/{key}?watch=true`) waiting on one node at
    /// once; beyond it a watch is a 503 `overloaded` with `Retry-After`.
    /// Watchers do not count against `max_inflight`.
    pub max_watchers: usize,
    /// Most bytes the watched keys may take on one node: each watcher
    /// counts its key's bytes and a fixed cost (`watch::WATCHER_BYTES`);
    /// a replica holds at most this much of other nodes' subscriptions too.
    pub max_watch_bytes: usize,
    /// The longest a watch waits, whatever its `timeout_ms` asks (it then
    /// answers 304 and the client watches again): keep it under the idle
    /// timeout of any load balancer in front of the nodes (60 s on many).
    pub max_watch_ms: u64,
}

/// The longest `timeout_ms` a request may ask for.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The longest `ttl_ms` a write may ask for: 20 years, Cassandra's limit.
pub const MAX_TTL_MS: u64 = 20 * 365 * 86_400_000;

/// The longest key any configuration allows: fjall's keys are at most
/// 65535 bytes, and a stored key is its 8-byte ring position and the key.
pub const MAX_KEY_BYTES: usize = 65_000;

/// The largest peer message when `max_set_bytes` does not call for more.
pub const MIN_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl Limits {
    /// The largest peer message a node sends or accepts: room for two full
    /// sibling sets (a merge and its reply) and their envelope.
    pub fn max_peer_message(&self) -> usize {
        (self.max_set_bytes.saturating_mul(2).saturating_add(1 << 20)).max(MIN_PEER_MESSAGE_BYTES)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            warn_siblings: 25,
            max_siblings: 100,
            max_set_bytes: 16 * 1024 * 1024,
            idempotency_ttl_ms: 600_000,
            max_hints: 100_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_connections: 4096,
            max_inflight: 1024,
            max_watchers: 16_384,
            max_watch_bytes: 32 << 20,
            max_watch_ms: MAX_TIMEOUT_MS,
            max_peer_inflight: 1024,
            max_peer_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}
