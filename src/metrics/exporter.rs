//! The Prometheus exporter: installs the process-wide recorder with the
//! histograms' buckets and every metric's help from [`ALL`], and samples
//! the process collector once per scrape.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{
    ALL, ANTIENTROPY_FALLBACKS_TOTAL, ANTIENTROPY_LOG_OPS, ANTIENTROPY_OPS_APPLIED_TOTAL,
    ANTIENTROPY_OPS_BUFFERED, ANTIENTROPY_OPS_TRUNCATED_TOTAL, ANTIENTROPY_TREE_BUILDS_TOTAL,
    BUILD_INFO, Def, FEED_CHANGES_TOTAL, FEED_READERS, FORWARDS_TOTAL, HANDOFF_FAILURES_TOTAL,
    Kind, LOOKUP_HOPS, QUORUM_FAILURES_TOTAL, READ_REPAIRS_TOTAL, READ_SIBLINGS,
    READS_WIDENED_TOTAL, REQUESTS_TOTAL, RING_CHANGES_TOTAL, SIBLING_WARNINGS_TOTAL,
    STORAGE_FSYNC_WRITES, TOMBSTONES_PURGED_TOTAL,
};

/// Labelled counters and the label values they are known to take: each
/// starts at zero, as Prometheus' instrumentation advice asks, so that a
/// dashboard panel shows 0 instead of "No data" on a healthy node and a
/// `rate()` works from the first scrape (tests/prometheus.rs checks every
/// dashboard query has a series on a healthy cluster).
const KNOWN_LABELS: &[(&str, &str, &[&str])] = &[
    (FORWARDS_TOTAL, "result", &["ok", "failed"]),
    (
        READS_WIDENED_TOTAL,
        "reason",
        &["failure", "slow", "session"],
    ),
    (
        ANTIENTROPY_OPS_TRUNCATED_TOTAL,
        "reason",
        &["stable", "overflow"],
    ),
    (
        ANTIENTROPY_FALLBACKS_TOTAL,
        "reason",
        &["truncated", "buffer", "restart"],
    ),
];

/// Seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const SIBLING_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];
const HOP_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0];
const WRITES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// The buckets of a histogram.
fn buckets(def: &Def) -> &'static [f64] {
    match def.name {
        READ_SIBLINGS => SIBLING_BUCKETS,
        LOOKUP_HOPS => HOP_BUCKETS,
        STORAGE_FSYNC_WRITES => WRITES_BUCKETS,
        _ => LATENCY_BUCKETS,
    }
}

pub(super) static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS_COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// The recorder is global, so nodes started in one process (tests) share it;
/// a real deployment runs one node per process.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = Ok(PrometheusBuilder::new());
            for def in ALL.iter().filter(|d| d.kind == Kind::Histogram) {
                builder = builder.and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(def.name.into()), buckets(def))
                });
            }
            let recorder = builder.map(|b| b.build_recorder()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "metric buckets rejected; latencies export as summaries");
                PrometheusBuilder::new().build_recorder()
            });
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            // Counters without labels start at zero, so that a rate over
            // them is 0, not "no data", before the first event.
            for name in [
                READ_REPAIRS_TOTAL,
                SIBLING_WARNINGS_TOTAL,
                HANDOFF_FAILURES_TOTAL,
                RING_CHANGES_TOTAL,
                ANTIENTROPY_TREE_BUILDS_TOTAL,
                ANTIENTROPY_OPS_APPLIED_TOTAL,
                TOMBSTONES_PURGED_TOTAL,
            ] {
                metrics::counter!(name).increment(0);
            }
            zero_labelled();
            PROCESS_COLLECTOR
                .get_or_init(metrics_process::Collector::default)
                .describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Every known label value of a labelled counter at zero, and the
/// gauges that only some modes or events set.
fn zero_labelled() {
    for (name, label, values) in KNOWN_LABELS {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for op in ["read", "write"] {
        for reason in ["quorum_not_met", "session_not_satisfied"] {
            metrics::counter!(QUORUM_FAILURES_TOTAL, "op" => op, "reason" => reason).increment(0);
        }
    }
    // The errors a dashboard plots, for the operations it plots: the
    // labels as `api` counts them (op, status, quorum).
    for (op, status) in [
        ("get", "404"),
        ("get", "503"),
        ("put", "503"),
        ("delete", "503"),
    ] {
        metrics::counter!(REQUESTS_TOTAL, "op" => op, "status" => status, "quorum" => "default")
            .increment(0);
    }
    metrics::counter!(FEED_CHANGES_TOTAL).increment(0);
    for gauge in [FEED_READERS, ANTIENTROPY_LOG_OPS, ANTIENTROPY_OPS_BUFFERED] {
        metrics::gauge!(gauge).set(0.0);
    }
    // Registered without a sample: exported with empty buckets.
    let _ = metrics::histogram!(LOOKUP_HOPS);
}

/// Samples the process collector (CPU, memory, file descriptors): once
/// per scrape.
pub fn collect_process() {
    if let Some(collector) = PROCESS_COLLECTOR.get() {
        collector.collect();
    }
}

fn describe() {
    for def in ALL {
        let help = def.help;
        match (def.kind, def.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(def.name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(def.name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(def.name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(def.name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(def.name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(def.name, help),
        }
    }
}
