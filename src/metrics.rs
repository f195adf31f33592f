//! Every metric chorus exports, named once.
//!
//! Names carry the `chorus_` prefix and their base unit; labels are low
//! cardinality (an operation, a status code, never a key). Latencies are
//! histograms with fixed buckets so they aggregate across nodes.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests served, by `op` (get, put, delete, health, metrics, peer, admin,
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
/// refused (the fallback's hint limit was reached).
pub const HINTS_TOTAL: &str = "chorus_hints_total";
/// Replicas brought up to date by read repair.
pub const READ_REPAIRS_TOTAL: &str = "chorus_read_repairs_total";
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

/// Seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const SIBLING_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];
const HOP_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// The recorder is global, so nodes started in one process (tests) share it;
/// a real deployment runs one node per process.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_DURATION_SECONDS.into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(READ_SIBLINGS.into()), SIBLING_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(LOOKUP_HOPS.into()), HOP_BUCKETS))
                .map(|b| b.build_recorder());
            let recorder = recorder.unwrap_or_else(|e| {
                tracing::error!(error = %e, "metric buckets rejected; latencies export as summaries");
                PrometheusBuilder::new().build_recorder()
            });
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        "Client requests served, by operation and status code."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of client requests, by operation."
    );
    describe_histogram!(READ_SIBLINGS, "Siblings returned per read.");
    describe_gauge!(STORE_KEYS, "Keys in the local store (approximate).");
    describe_gauge!(
        STORE_DISK_BYTES,
        Unit::Bytes,
        "Bytes the local store occupies on disk."
    );
    describe_gauge!(BUILD_INFO, "Always 1, labelled with the chorus version.");
    describe_histogram!(
        LOOKUP_HOPS,
        "Nodes asked to reach a replica for a forwarded request, the forward included."
    );
    describe_counter!(
        FORWARDS_TOTAL,
        "Client requests forwarded to a replica, by result."
    );
    describe_gauge!(RING_MEMBERS, "Members of the ring, by status.");
    describe_gauge!(
        RING_OWNERSHIP,
        "Share of the ring this node holds as primary owner."
    );
    describe_counter!(
        HANDOFF_KEYS_TOTAL,
        "Keys moved by ownership handoff, by kind."
    );
    describe_counter!(
        HINTS_TOTAL,
        "Hinted handoff events: queued, delivered, refused."
    );
    describe_counter!(
        READ_REPAIRS_TOTAL,
        "Replicas brought up to date by read repair."
    );
    describe_counter!(
        SIBLING_WARNINGS_TOTAL,
        "Client writes that left a key with more siblings than limits.warn_siblings."
    );
    describe_counter!(
        HANDOFF_FAILURES_TOTAL,
        "Handoff sweeps that could not finish and will be retried."
    );
    describe_counter!(
        ANTIENTROPY_ROUNDS_TOTAL,
        "Anti-entropy rounds, by mode and result (in_sync, repaired, unbuilt, failed, idle)."
    );
    describe_counter!(
        ANTIENTROPY_DIFFERING_KEYS_TOTAL,
        "Keys found to differ between this node and a peer, by mode."
    );
    describe_counter!(
        ANTIENTROPY_KEYS_REPAIRED_TOTAL,
        "Keys whose sibling set an anti-entropy exchange changed, by mode."
    );
    describe_counter!(
        ANTIENTROPY_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of anti-entropy messages, by mode and direction."
    );
    describe_counter!(
        ANTIENTROPY_OPS_APPLIED_TOTAL,
        "Operation mode: ops applied from peers' logs."
    );
    describe_gauge!(
        ANTIENTROPY_OPS_BUFFERED,
        "Operation mode: ops waiting for their causal dependencies."
    );
    describe_gauge!(
        ANTIENTROPY_LOG_OPS,
        "Operation mode: ops held in this node's logs."
    );
    describe_counter!(
        ANTIENTROPY_OPS_TRUNCATED_TOTAL,
        "Operation mode: ops dropped from the logs, by reason (stable, overflow)."
    );
    describe_counter!(
        ANTIENTROPY_FALLBACKS_TOTAL,
        "Operation mode: range exchanges that fell back to state transfer, by reason."
    );
    describe_counter!(
        TOMBSTONES_PURGED_TOTAL,
        "Deletes purged on every replica once causally stable."
    );
    describe_counter!(
        ANTIENTROPY_TREE_BUILDS_TOTAL,
        "Merkle trees built from the store (start, ring change, on demand)."
    );
}
