//! What the coordinator tells operators: its latency per operation, and
//! its quorum failures, counted and summarised in the log at most once
//! per [`SUMMARY_EVERY`] (a node losing its quorums would otherwise log
//! every request).

use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::metrics as m;

/// The shortest interval between two quorum failure summaries.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Failures since the last summary: when it was logged, how many, the latest.
static FAILURES: Mutex<Option<(Instant, u64, String)>> = Mutex::new(None);

/// Runs the coordinator's part of a request (`op`: read or write), timing
/// it and counting a failure to reach its quorum.
pub async fn measured<T>(
    node: &str,
    op: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = work.await;
    static DURATIONS: m::Handles<&str, metrics::Histogram> = m::Handles::new();
    DURATIONS
        .get(
            op,
            || metrics::histogram!(m::COORDINATOR_DURATION_SECONDS, "op" => op),
        )
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let reason = match e {
            Error::QuorumNotMet { .. } => Some("quorum_not_met"),
            Error::SessionNotSatisfied => Some("session_not_satisfied"),
            _ => None,
        };
        if let Some(reason) = reason {
            metrics::counter!(m::QUORUM_FAILURES_TOTAL, "op" => op, "reason" => reason)
                .increment(1);
            summarise(node, op, e);
        }
    }
    result
}

fn summarise(node: &str, op: &str, e: &Error) {
    let mut failures = FAILURES.lock();
    let now = Instant::now();
    let (since, count, latest) =
        failures.get_or_insert_with(|| (now - SUMMARY_EVERY, 0, String::new()));
    *count += 1;
    *latest = format!("{op}: {e}");
    if now.duration_since(*since) >= SUMMARY_EVERY {
        tracing::warn!(
            node,
            failures = *count,
            over_secs = now.duration_since(*since).as_secs(),
            latest = %latest,
            "client requests failed to reach their quorum"
        );
        *since = now;
        *count = 0;
    }
}
