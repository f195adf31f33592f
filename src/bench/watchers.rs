//! `chorus bench --watchers N`: what N waiting watchers cost one node.
//!
//! Opens N watches (`GET /kv/{key}?watch=true`) of distinct keys that
//! nobody writes, multiplexed over HTTP/2 connections of at most
//! [`STREAMS_PER_CONNECTION`] streams each (a node's HTTP/2 connections
//! take 200), waits until the node counts them all (`chorus_watchers`),
//! and measures, of the node named by `--server-pid`:
//!
//! - **memory per watcher**: its resident memory (`VmRSS`) with the
//!   watchers waiting, less before they came, over N (the HTTP/2 stream,
//!   the request's task, the registry's entry and its `Notify`);
//! - **idle CPU**: its CPU over `--duration` while they wait, beside its
//!   CPU over as long before they came: what holding them costs, which is
//!   nothing per watcher when nothing polls;
//! - **notification**: writes to `--notify` of the watched keys, one at a
//!   time: from each write's start to its watcher's answer (p50, p99), and
//!   the node's CPU per write with its watcher's answer.
//!
//! Then it drops every watch and reports the memory the node keeps after.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;

use super::cpu::Servers;
use super::{Latency, Options};
use crate::client::{Client, key_path};
use crate::error::{Error, Result};

/// Watches per HTTP/2 connection: within the 200 streams a node's
/// connection takes.
pub const STREAMS_PER_CONNECTION: usize = 150;

/// What a watcher run measured.
#[derive(Debug, Serialize)]
pub struct WatchSummary {
    pub watchers: usize,
    pub connections: usize,
    /// How long opening them took, until the node counted them all.
    pub open_seconds: f64,
    pub rss_before_bytes: u64,
    pub rss_waiting_bytes: u64,
    pub rss_after_bytes: u64,
    /// Resident memory the waiting watchers added, each.
    pub bytes_per_watcher: f64,
    /// What the node counts against `limits.max_watch_bytes`, each.
    pub accounted_bytes_per_watcher: f64,
    pub idle_seconds: f64,
    /// The node's CPU over as long before the watchers came, as a share
    /// of one core: what it spends idle anyway (gossip, timers).
    pub baseline_cpu_percent: f64,
    /// The node's CPU while they waited, as a share of one core.
    pub idle_cpu_percent: f64,
    pub notified: u64,
    /// From a write's start to its watcher's answer.
    pub notify_latency: Latency,
    /// The node's CPU per write with its watcher's answer.
    pub cpu_us_per_notification: f64,
    /// Watches that ended other than as expected (an answer before their
    /// key was written, a failure, none after the write).
    pub errors: u64,
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| Error::Config {
            key: "--server-pid".into(),
            message: format!("no VmRSS for process {pid}"),
        })
}

/// A gauge's value summed over its series in the node's `/metrics`.
async fn gauge(client: &Client, name: &str) -> Result<f64> {
    let reply = client
        .request(http::Method::GET, "/metrics", &[], Bytes::new())
        .await?;
    let text = String::from_utf8_lossy(&reply.body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Waits until the node's watcher gauge is `wanted` (or `within` passes).
async fn await_watchers(client: &Client, wanted: f64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if gauge(client, crate::metrics::WATCHERS).await? == wanted {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Config {
                key: "--watchers".into(),
                message: format!("the node did not reach {wanted} watchers in {within:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(options: &Options) -> Result<WatchSummary> {
    let n = options.watchers;
    let [pid] = options.server_pids[..] else {
        return Err(Error::Config {
            key: "--server-pid".into(),
            message: "--watchers measures one node: give its PID".into(),
        });
    };
    let base = options.url.first().cloned().unwrap_or_default();
    let client = Client::new(&base);
    let servers = Servers::Processes(vec![pid]);
    let run_id: u32 = rand::random();
    let key = |i: usize| format!("bench-watch/{run_id:08x}/{i}");
    let timeout_ms = (options.duration.as_millis() as u64 + 120_000).min(600_000);

    // The node alone, as long as it will hold the watchers.
    let before = servers.sample()?;
    let baseline = Instant::now();
    tokio::time::sleep(options.duration).await;
    let baseline_cpu =
        servers.over(&before, &servers.sample()?, 1).seconds[0] / baseline.elapsed().as_secs_f64();

    let rss_before = rss(pid)?;
    let connections = n.div_ceil(STREAMS_PER_CONNECTION);
    let pools: Vec<_> = (0..connections)
        .map(|_| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Pool::builder(TokioExecutor::new())
                .http2_only(true)
                .build::<_, Empty<Bytes>>(connector)
        })
        .collect();
    let (answered, mut answers) = mpsc::unbounded_channel::<(usize, Instant, bool)>();
    let mut watches = tokio::task::JoinSet::new();
    let opened = Instant::now();
    for i in 0..n {
        let uri = format!(
            "{base}{}?watch=true&timeout_ms={timeout_ms}",
            key_path(&key(i))
        );
        let pool = pools[i % connections].clone();
        let answered = answered.clone();
        watches.spawn(async move {
            let request = Request::get(uri).body(Empty::new());
            let ok = match request {
                Ok(request) => match pool.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        status == StatusCode::OK
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            };
            let _ = answered.send((i, Instant::now(), ok));
        });
    }
    await_watchers(&client, n as f64, Duration::from_secs(120)).await?;
    let open_seconds = opened.elapsed().as_secs_f64();
    let rss_waiting = rss(pid)?;
    let accounted = gauge(&client, crate::metrics::WATCH_BYTES).await?;

    // Holding them: the node's CPU while nothing happens.
    let before = servers.sample()?;
    let idle = Instant::now();
    tokio::time::sleep(options.duration).await;
    let idle_seconds = idle.elapsed().as_secs_f64();
    let idle_cpu = servers.over(&before, &servers.sample()?, 1).seconds[0];
    let mut errors = 0;
    while let Ok((_, _, _)) = answers.try_recv() {
        errors += 1;
    }

    // Each write answers its one watcher.
    let notify = options.notify.min(n);
    let stride = (n / notify.max(1)).max(1);
    let mut latency = Histogram::<u64>::new(3).map_err(|e| Error::Protocol(e.to_string()))?;
    let before = servers.sample()?;
    for j in 0..notify {
        let i = j * stride;
        let started = Instant::now();
        let put = client.put(&key(i), "1".to_string(), None).await;
        if !put.is_ok_and(|r| r.status == StatusCode::NO_CONTENT) {
            errors += 1;
            continue;
        }
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match answers.recv().await {
                    Some((who, at, ok)) if who == i => return Some((at, ok)),
                    Some(_) => errors += 1,
                    None => return None,
                }
            }
        })
        .await;
        match answer {
            Ok(Some((at, true))) => {
                let _ = latency.record(at.duration_since(started).as_micros() as u64);
            }
            _ => errors += 1,
        }
    }
    let notified = latency.len();
    let notify_cpu = servers.over(&before, &servers.sample()?, notified.max(1));

    // Gone: every watch dropped, the node's memory after.
    watches.abort_all();
    drop(pools);
    await_watchers(&client, 0.0, Duration::from_secs(60)).await?;
    let rss_after = rss(pid)?;
    Ok(WatchSummary {
        watchers: n,
        connections,
        open_seconds,
        rss_before_bytes: rss_before,
        rss_waiting_bytes: rss_waiting,
        rss_after_bytes: rss_after,
        bytes_per_watcher: rss_waiting.saturating_sub(rss_before) as f64 / n.max(1) as f64,
        accounted_bytes_per_watcher: accounted / n.max(1) as f64,
        idle_seconds,
        baseline_cpu_percent: baseline_cpu * 100.0,
        idle_cpu_percent: idle_cpu / idle_seconds * 100.0,
        notified,
        notify_latency: Latency::of(&latency),
        cpu_us_per_notification: notify_cpu.us_per_request,
        errors,
    })
}

/// The run as a Markdown table.
pub fn table(s: &WatchSummary) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "| watchers | conns | open s | RSS before MiB | RSS waiting MiB | bytes/watcher | accounted bytes/watcher | CPU % before | CPU % waiting | notified | p50 ms | p99 ms | CPU µs/notification | RSS after MiB | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.0} | {:.1} | {} |\n",
        s.watchers,
        s.connections,
        s.open_seconds,
        s.rss_before_bytes as f64 / 1048576.0,
        s.rss_waiting_bytes as f64 / 1048576.0,
        s.bytes_per_watcher,
        s.accounted_bytes_per_watcher,
        s.baseline_cpu_percent,
        s.idle_cpu_percent,
        s.notified,
        ms(s.notify_latency.p50_us),
        ms(s.notify_latency.p99_us),
        s.cpu_us_per_notification,
        s.rss_after_bytes as f64 / 1048576.0,
        s.errors,
    )
}
