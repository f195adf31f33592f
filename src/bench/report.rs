//! What a run prints: the Markdown table of a summary, and the progress
//! bar while a workload runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::workload::Workload;
use super::{Options, Run, Summary};

/// The Markdown table of a summary: a header, then one line per run.
pub fn table(summary: &Summary) -> String {
    let mut out = String::from(
        "| target | workload | keys | conns | rate/s | ops/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &summary.runs {
        out.push_str(&row(summary, run));
        out.push('\n');
    }
    out
}

/// One run as one Markdown table line.
pub fn row(summary: &Summary, run: &Run) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let rate = match run.rate_per_sec {
        0 => "closed".to_string(),
        r => r.to_string(),
    };
    let cpu = run
        .server_cpu
        .as_ref()
        .map_or_else(|| "-".to_string(), |c| format!("{:.1}", c.us_per_request));
    format!(
        "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
        summary.label,
        run.workload.name(),
        run.distribution.name(),
        summary.concurrency,
        rate,
        run.throughput_per_sec,
        ms(run.latency.p50_us),
        ms(run.latency.p99_us),
        ms(run.latency.p999_us),
        run.errors,
        cpu
    )
}

pub(super) fn progress_bar(
    options: &Options,
    workload: Workload,
    done: Arc<AtomicU64>,
) -> Option<ProgressBar> {
    if !options.progress {
        return None;
    }
    let seconds = options.duration.as_secs().max(1);
    let bar = ProgressBar::new(seconds);
    if let Ok(style) = ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len}s {msg}") {
        bar.set_style(style);
    }
    bar.set_prefix(workload.name());
    let ticker = bar.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !ticker.is_finished() && started.elapsed().as_secs() <= seconds {
            tick.tick().await;
            let elapsed = started.elapsed().as_secs_f64().max(0.001);
            ticker.set_position(elapsed as u64);
            let n = done.load(Ordering::Relaxed);
            ticker.set_message(format!("{n} operations, {:.0}/s", n as f64 / elapsed));
        }
    });
    Some(bar)
}
