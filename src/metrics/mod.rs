//! Every metric chorus exports, named once.
//!
//! Names carry the `chorus_` prefix and their base unit; labels are low
//! cardinality (an operation, a status code, never a key). Latencies are
//! histograms with fixed buckets so they aggregate across nodes. [`ALL`]
//! lists every name with its type and help: the exporter describes them
//! from it, and the dashboards' test checks every expression against it.
//! The process collector (`metrics-process`) adds the standard `process_*`
//! series ([`PROCESS`]): CPU, memory, open file descriptors, threads.

use metrics::Unit;

mod exporter;
mod handles;

pub use exporter::{collect_process, install};
pub use handles::Handles;

/// Requests served, by `op` (get, put, delete, batch, scan, health, metrics, peer, admin,
/// other), `status`, and `quorum` (the `r` of a read, the `w` of a write).
pub const REQUESTS_TOTAL: &str = "chorus_requests_total";
/// Latency of client requests, by `op`.
pub const REQUEST_DURATION_SECONDS: &str = "chorus_request_duration_seconds";
/// Siblings returned per read.
pub const READ_SIBLINGS: &str = "chorus_read_siblings";
/// Keys in the local store (approximate for the durable engine).
pub const STORE_KEYS: &str = "chorus_store_keys";
/// Bytes the local store occupies on disk.
pub const STORE_DISK_BYTES: &str = "chorus_store_disk_bytes";
/// Always 1, labelled with the chorus `version`.
pub const BUILD_INFO: &str = "chorus_build_info";
/// Nodes asked to reach a replica for a forwarded request, the forward included
/// (1 when the lookup cache knew the replica).
pub const LOOKUP_HOPS: &str = "chorus_lookup_hops";
/// Client requests forwarded to a replica, by `result` (ok, failed).
pub const FORWARDS_TOTAL: &str = "chorus_forwards_total";
/// Members of the ring, by `status` (active, leaving, removed).
pub const RING_MEMBERS: &str = "chorus_ring_members";
/// Share of the ring this node holds as primary owner (0 to 1).
pub const RING_OWNERSHIP: &str = "chorus_ring_ownership";
/// Keys moved by ownership handoff, by `kind` (pushed, released).
pub const HANDOFF_KEYS_TOTAL: &str = "chorus_handoff_keys_total";
/// Client writes that left a key with more than `limits.warn_siblings` siblings.
pub const SIBLING_WARNINGS_TOTAL: &str = "chorus_sibling_warnings_total";
/// Hinted handoff, by `event`: queued (a fallback took a write for an
/// unreachable replica), delivered (handed to the owner and dropped),
/// dropped (refused: the fallback's hint limit was reached).
pub const HINTS_TOTAL: &str = "chorus_hints_total";
/// Replicas brought up to date by read repair.
pub const READ_REPAIRS_TOTAL: &str = "chorus_read_repairs_total";
/// Reads that asked the replicas beyond their first `r`, by `reason`:
/// failure (one asked failed), slow (none answered within
/// `cluster.speculative_read_ms`), session (the answers had not seen the
/// client's context).
pub const READS_WIDENED_TOTAL: &str = "chorus_reads_widened_total";
/// Peer requests refused before anything was applied, by `reason`:
/// missing, malformed, bad_mac (a wrong secret or changed bytes),
/// misdirected (signed for another node), stale (timestamp outside
/// `security.peer_clock_skew_ms`), replayed.
pub const PEER_AUTH_REFUSED_TOTAL: &str = "chorus_peer_auth_refused_total";
/// Client requests refused for their token, by `reason`: unauthenticated
/// (401: none, or unknown), forbidden (403: a scope it lacks).
pub const CLIENT_AUTH_REFUSED_TOTAL: &str = "chorus_client_auth_refused_total";
/// Connections closed before a request because their TLS handshake did
/// not complete, by `reason`: failed (plain HTTP, a refused certificate,
/// no shared protocol), timeout (not done within the header timeout).
pub const TLS_HANDSHAKES_FAILED_TOTAL: &str = "chorus_tls_handshakes_failed_total";
/// Peer streams ended (`peer::stream`), by `side` (opener, accepter) and
/// `reason`: idle (no call for a while), closed (the other end closed it),
/// stopped (this node stops), broken (a socket error or a silent peer),
/// refused (a frame that did not decode or failed its MAC).
pub const PEER_STREAMS_ENDED_TOTAL: &str = "chorus_peer_streams_ended_total";
/// Peer calls this node took in, by `service` and by how they came
/// (`via`: post, batch, stream).
pub const PEER_CALLS_TOTAL: &str = "chorus_peer_calls_total";
/// Peer streams opened, by `side` (opener, accepter).
pub const PEER_STREAMS_OPENED_TOTAL: &str = "chorus_peer_streams_opened_total";
/// Time one group-commit fsync of the journal took.
pub const STORAGE_FSYNC_SECONDS: &str = "chorus_storage_fsync_seconds";
/// How long the oldest write an fsync covers waited for that fsync to
/// begin (written, queued behind the fsync before it).
pub const STORAGE_FSYNC_WAIT_SECONDS: &str = "chorus_storage_fsync_wait_seconds";
/// Writes one group-commit fsync made durable.
pub const STORAGE_FSYNC_WRITES: &str = "chorus_storage_fsync_writes";
/// Time the committer took to compute one batch and write it to the
/// journal, before its fsync: every write of the node waits behind it,
/// so the engine's own pauses show here.
pub const STORAGE_COMMIT_SECONDS: &str = "chorus_storage_commit_seconds";
/// Handoff sweeps that could not finish and will be retried.
pub const HANDOFF_FAILURES_TOTAL: &str = "chorus_handoff_failures_total";
/// Anti-entropy rounds, by `mode` (state) and `result`: in_sync (the peer
/// held the same data), repaired (keys differed and were exchanged),
/// unbuilt (a shared range had no complete tree on one side yet), failed
/// (the peer did not answer), idle (no complete tree or no peer).
pub const ANTIENTROPY_ROUNDS_TOTAL: &str = "chorus_antientropy_rounds_total";
/// Keys found to differ between this node and a peer, by `mode`.
pub const ANTIENTROPY_DIFFERING_KEYS_TOTAL: &str = "chorus_antientropy_differing_keys_total";
/// Keys whose sibling set changed on either side of an exchange, by `mode`.
pub const ANTIENTROPY_KEYS_REPAIRED_TOTAL: &str = "chorus_antientropy_keys_repaired_total";
/// Bytes of anti-entropy messages, by `mode` and `direction` (sent, received).
pub const ANTIENTROPY_BYTES_TOTAL: &str = "chorus_antientropy_bytes_total";
/// Operation mode: ops applied from peers' logs.
pub const ANTIENTROPY_OPS_APPLIED_TOTAL: &str = "chorus_antientropy_ops_applied_total";
/// Operation mode: ops waiting for their causal dependencies.
pub const ANTIENTROPY_OPS_BUFFERED: &str = "chorus_antientropy_ops_buffered";
/// Operation mode: ops held in this node's logs.
pub const ANTIENTROPY_LOG_OPS: &str = "chorus_antientropy_log_ops";
/// Operation mode: ops dropped from the logs, by `reason`: stable (every
/// replica has them) or overflow (`antientropy.max_log_ops`).
pub const ANTIENTROPY_OPS_TRUNCATED_TOTAL: &str = "chorus_antientropy_ops_truncated_total";
/// Operation mode: range exchanges that fell back to state transfer, by
/// `reason`: truncated (the log no longer held what was needed), buffer
/// (too many ops waiting), restart (a log that starts empty owes its
/// fellows a state exchange).
pub const ANTIENTROPY_FALLBACKS_TOTAL: &str = "chorus_antientropy_fallbacks_total";
/// Deletes purged (tombstone siblings removed, the grave kept) on every
/// replica, counted by the primary that decided it.
pub const TOMBSTONES_PURGED_TOTAL: &str = "chorus_tombstones_purged_total";
/// Merkle trees (one per replicated range) built from the store.
pub const ANTIENTROPY_TREE_BUILDS_TOTAL: &str = "chorus_antientropy_tree_builds_total";

/// Latency of the coordinator's part of a client request (quorum reached
/// or failed), by `op` (read, write).
pub const COORDINATOR_DURATION_SECONDS: &str = "chorus_coordinator_duration_seconds";
/// Latency of a replica's handling of one peer request, by `op` (read,
/// coordinate, merge, hint, handoff, fetch, purge, batch).
pub const REPLICA_DURATION_SECONDS: &str = "chorus_replica_duration_seconds";
/// Client requests that failed for want of a quorum (503), by `op` (read,
/// write) and `reason` (quorum_not_met, session_not_satisfied).
pub const QUORUM_FAILURES_TOTAL: &str = "chorus_quorum_failures_total";
/// Hints this node holds for unreachable owners (approximate).
pub const HINTS_PENDING: &str = "chorus_hints_pending";
/// Watchers (`GET /kv/{key}?watch=true`) waiting on this node.
pub const WATCHERS: &str = "chorus_watchers";
/// Bytes the watchers on this node count against `limits.max_watch_bytes`.
pub const WATCH_BYTES: &str = "chorus_watch_bytes";
/// Change feed requests (`GET /changes`) waiting on this node.
pub const FEED_READERS: &str = "chorus_feed_readers";
/// Changes the change feed served from this node.
pub const FEED_CHANGES_TOTAL: &str = "chorus_feed_changes_total";
/// Entries this node's change log holds (`store::changes`).
pub const CHANGE_LOG_ENTRIES: &str = "chorus_change_log_entries";
/// Bytes this node's change log holds, against `changes.max_bytes`.
pub const CHANGE_LOG_BYTES: &str = "chorus_change_log_bytes";
/// Members by `liveness` as this node's failure detector sees them (up,
/// down, unknown), this node included.
pub const MEMBERS_LIVENESS: &str = "chorus_members_liveness";
/// Ring positions (tokens) this node owns.
pub const RING_TOKENS: &str = "chorus_ring_tokens";
/// Worker threads of this node's async runtime (`[[nodes]] worker_threads`).
pub const RUNTIME_WORKERS: &str = "chorus_runtime_workers";
/// Changes of the members document this node applied (joins, leaves,
/// removals, address changes).
pub const RING_CHANGES_TOTAL: &str = "chorus_ring_changes_total";
/// Ranges the current handoff sweep still has to hand off.
pub const HANDOFF_RANGES_PENDING: &str = "chorus_handoff_ranges_pending";
/// Times this node retired its actor mid-life, by `reason` (released: it
/// dropped a copy holding its own writes; amnesia: a merge brought one of
/// its own writes its copy had lost).
pub const ACTOR_RETIREMENTS_TOTAL: &str = "chorus_actor_retirements_total";
/// Writes the local store failed to make durable, by `stage` (write,
/// commit, fsync): the replica acknowledged none of them.
pub const STORAGE_FAILURES_TOTAL: &str = "chorus_storage_failures_total";

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, unit and help text.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

/// Every metric chorus defines.
pub const ALL: &[Def] = &[
    Def {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Client requests served, by operation, status code and quorum.",
    },
    Def {
        name: REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Latency of client requests, by operation.",
    },
    Def {
        name: COORDINATOR_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Latency of the coordinator's part of a client request, by operation.",
    },
    Def {
        name: REPLICA_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Latency of a replica's handling of one peer request, by operation.",
    },
    Def {
        name: QUORUM_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Client requests that failed for want of a quorum, by operation and reason.",
    },
    Def {
        name: READ_SIBLINGS,
        kind: Kind::Histogram,
        unit: None,
        help: "Siblings returned per read.",
    },
    Def {
        name: STORE_KEYS,
        kind: Kind::Gauge,
        unit: None,
        help: "Keys in the local store (approximate).",
    },
    Def {
        name: STORE_DISK_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes the local store occupies on disk.",
    },
    Def {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1, labelled with the chorus version.",
    },
    Def {
        name: LOOKUP_HOPS,
        kind: Kind::Histogram,
        unit: None,
        help: "Nodes asked to reach a replica for a forwarded request, the forward included.",
    },
    Def {
        name: FORWARDS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Client requests forwarded to a replica, by result.",
    },
    Def {
        name: RING_MEMBERS,
        kind: Kind::Gauge,
        unit: None,
        help: "Members of the ring, by status.",
    },
    Def {
        name: MEMBERS_LIVENESS,
        kind: Kind::Gauge,
        unit: None,
        help: "Members by liveness as this node's failure detector sees them.",
    },
    Def {
        name: RING_OWNERSHIP,
        kind: Kind::Gauge,
        unit: None,
        help: "Share of the ring this node holds as primary owner.",
    },
    Def {
        name: RING_TOKENS,
        kind: Kind::Gauge,
        unit: None,
        help: "Ring positions (tokens) this node owns.",
    },
    Def {
        name: RUNTIME_WORKERS,
        kind: Kind::Gauge,
        unit: None,
        help: "Worker threads of this node's async runtime.",
    },
    Def {
        name: RING_CHANGES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Changes of the members document this node applied.",
    },
    Def {
        name: HANDOFF_KEYS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Keys moved by ownership handoff, by kind.",
    },
    Def {
        name: HANDOFF_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Handoff sweeps that could not finish and will be retried.",
    },
    Def {
        name: HANDOFF_RANGES_PENDING,
        kind: Kind::Gauge,
        unit: None,
        help: "Ranges the current handoff sweep still has to hand off.",
    },
    Def {
        name: HINTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Hinted handoff events: queued, delivered, dropped.",
    },
    Def {
        name: HINTS_PENDING,
        kind: Kind::Gauge,
        unit: None,
        help: "Hints this node holds for unreachable owners.",
    },
    Def {
        name: WATCHERS,
        kind: Kind::Gauge,
        unit: None,
        help: "Watchers waiting on this node.",
    },
    Def {
        name: WATCH_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes the watchers on this node count against limits.max_watch_bytes.",
    },
    Def {
        name: FEED_READERS,
        kind: Kind::Gauge,
        unit: None,
        help: "Change feed requests waiting on this node.",
    },
    Def {
        name: FEED_CHANGES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Changes the change feed served from this node.",
    },
    Def {
        name: CHANGE_LOG_ENTRIES,
        kind: Kind::Gauge,
        unit: None,
        help: "Entries this node's change log holds.",
    },
    Def {
        name: CHANGE_LOG_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes this node's change log holds, against changes.max_bytes.",
    },
    Def {
        name: READ_REPAIRS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Replicas brought up to date by read repair.",
    },
    Def {
        name: READS_WIDENED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Reads that asked the replicas beyond their first r, by reason.",
    },
    Def {
        name: PEER_AUTH_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Peer requests refused before anything was applied, by reason (missing, malformed, bad_mac, bad_body, misdirected, misrouted, stale, before_start, replayed).",
    },
    Def {
        name: CLIENT_AUTH_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Client requests refused for their token, by reason (unauthenticated, forbidden).",
    },
    Def {
        name: TLS_HANDSHAKES_FAILED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Connections closed because their TLS handshake failed or timed out, by reason (failed, timeout).",
    },
    Def {
        name: STORAGE_FSYNC_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time one group-commit fsync of the journal took.",
    },
    Def {
        name: STORAGE_FSYNC_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "How long the oldest write an fsync covers waited, from being queued to the committer until that fsync began.",
    },
    Def {
        name: STORAGE_FSYNC_WRITES,
        kind: Kind::Histogram,
        unit: None,
        help: "Writes one group-commit fsync made durable.",
    },
    Def {
        name: STORAGE_COMMIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time the committer took to compute one batch of writes and write it to the journal, before its fsync (the storage engine's own pauses show here, such as fjall installing a flushed or compacted table).",
    },
    Def {
        name: PEER_CALLS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Peer calls this node took in, by service and by how they came (post, batch, stream).",
    },
    Def {
        name: PEER_STREAMS_OPENED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Peer streams opened, by side (opener, accepter).",
    },
    Def {
        name: PEER_STREAMS_ENDED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Peer streams ended, by side (opener, accepter) and reason (idle, closed, stopped, broken, refused).",
    },
    Def {
        name: SIBLING_WARNINGS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Client writes that left a key with more siblings than limits.warn_siblings.",
    },
    Def {
        name: ANTIENTROPY_ROUNDS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Anti-entropy rounds, by mode and result (in_sync, repaired, unbuilt, failed, idle).",
    },
    Def {
        name: ANTIENTROPY_DIFFERING_KEYS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Keys (or ops) found to differ between this node and a peer, by mode.",
    },
    Def {
        name: ANTIENTROPY_KEYS_REPAIRED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Keys (or ops) an anti-entropy exchange applied, by mode.",
    },
    Def {
        name: ANTIENTROPY_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes of anti-entropy messages, by mode and direction.",
    },
    Def {
        name: ANTIENTROPY_OPS_APPLIED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Operation mode: ops applied from peers' logs.",
    },
    Def {
        name: ANTIENTROPY_OPS_BUFFERED,
        kind: Kind::Gauge,
        unit: None,
        help: "Operation mode: ops waiting for their causal dependencies.",
    },
    Def {
        name: ANTIENTROPY_LOG_OPS,
        kind: Kind::Gauge,
        unit: None,
        help: "Operation mode: ops held in this node's logs.",
    },
    Def {
        name: ANTIENTROPY_OPS_TRUNCATED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Operation mode: ops dropped from the logs, by reason (stable, overflow).",
    },
    Def {
        name: ANTIENTROPY_FALLBACKS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Operation mode: range exchanges that fell back to state transfer, by reason.",
    },
    Def {
        name: ANTIENTROPY_TREE_BUILDS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Merkle trees built from the store (start, ring change, on demand).",
    },
    Def {
        name: TOMBSTONES_PURGED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Deletes purged on every replica once causally stable.",
    },
    Def {
        name: ACTOR_RETIREMENTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Times this node retired its actor mid-life (later writes minted by a new incarnation), by reason.",
    },
    Def {
        name: STORAGE_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Writes the local store failed to make durable, by stage (write, commit, fsync); none was acknowledged.",
    },
];

/// The series the process collector exports.
pub const PROCESS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_carry_their_unit() {
        let mut names: Vec<&str> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a metric is defined twice");
        for def in ALL {
            assert!(def.name.starts_with("chorus_"), "{}", def.name);
            if def.kind == Kind::Counter {
                assert!(def.name.ends_with("_total"), "{}", def.name);
            }
            if def.unit == Some(Unit::Seconds) {
                assert!(def.name.ends_with("_seconds"), "{}", def.name);
            }
            if def.unit == Some(Unit::Bytes) {
                assert!(def.name.contains("_bytes"), "{}", def.name);
            }
        }
    }
}
