//! `chorus bench`: a closed-loop load generator with latency histograms.
//!
//! `concurrency` workers each keep one request in flight over pooled
//! keep-alive connections for `duration`. The `keys` are dealt out among
//! the workers and each picks uniformly among its own; a worker writes with
//! the context its previous write of that key returned, as a well-behaved
//! client does, so the benchmark measures steady-state writes rather than a
//! pile of siblings from blind concurrent writers. Latencies go into
//! hdrhistograms (microseconds). GET and mixed runs load the keys first,
//! unmeasured. Against `--target null` the same client
//! drives the in-process [`null::NullServer`], the ceiling that chorus's
//! figures are read against (as ratios from the same run).

pub mod etcd;
pub mod null;
pub mod plot;
pub mod timeline;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{Client, Reply};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Get,
    /// Half reads, half writes.
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The chorus node at `--url`.
    Chorus,
    /// The in-process null server: the HTTP ceiling of this machine.
    Null,
    /// An etcd member at `--url`, through its v3 JSON gateway.
    Etcd,
}

/// What to measure; also the flags of `chorus bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The chorus node (or etcd member) to load.
    #[arg(long, default_value = crate::client::DEV_URL)]
    pub url: String,
    #[arg(long, value_enum, default_value_t = Target::Chorus)]
    pub target: Target,
    #[arg(long, value_enum, default_value_t = Op::Put)]
    pub op: Op,
    /// How long to measure, for example 15s or 1m.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests kept in flight, one per worker.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys, dealt out among the workers.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Also write the JSON summary to this file, with latency-over-time
    /// and throughput-over-time plots beside it (`<stem>-latency.png`,
    /// `<stem>-throughput.png`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Draw a progress bar on stderr (when it is a terminal).
    #[arg(skip = true)]
    pub progress: bool,
}

/// Parses `15s`, `500ms` or `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 15s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{text}`: use ms, s or m")),
    }
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub target: Target,
    pub op: Op,
    pub url: String,
    pub concurrency: usize,
    pub value_size: usize,
    pub keys: u64,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub throughput_per_sec: f64,
    pub latency: Latency,
    /// Requests and latency in each second of the run.
    pub timeline: Vec<timeline::Second>,
}

/// A JSON value of exactly `size` bytes (at least the 2 of `""`).
pub fn value_of_size(size: usize) -> Bytes {
    let inner = size.saturating_sub(2);
    Bytes::from(format!("\"{}\"", "x".repeat(inner)))
}

pub async fn run(options: Options) -> Result<Summary> {
    // Kept alive until the run ends; dropping it stops the null server.
    let ceiling = match options.target {
        Target::Null => Some(null::NullServer::start(2)?),
        Target::Chorus | Target::Etcd => None,
    };
    let url = match &ceiling {
        Some(server) => format!("http://{}", server.addr),
        None => options.url.clone(),
    };
    let client = Client::new(&url);
    let value = value_of_size(options.value_size);
    let concurrency = options.concurrency.max(1);
    let keys = options.keys.max(concurrency as u64);
    let mut shares: Vec<Share> = (0..concurrency as u64)
        .map(|w| Share::new(options.target, w, concurrency as u64, keys))
        .collect();
    if options.op != Op::Put {
        let loaders: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let (client, value) = (client.clone(), value.clone());
                tokio::spawn(async move { share.preload(&client, &value).await })
            })
            .collect();
        shares = Vec::with_capacity(concurrency);
        for l in loaders {
            shares.push(
                l.await
                    .map_err(|e| Error::Protocol(format!("a loader died: {e}")))??,
            );
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(&options, Arc::clone(&done));
    let started = Instant::now();
    let deadline = started + options.duration;
    let timeline = Arc::new(timeline::Timeline::new(started));
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (client, value, done) = (client.clone(), value.clone(), Arc::clone(&done));
            let (op, timeline) = (options.op, Arc::clone(&timeline));
            tokio::spawn(async move {
                share
                    .run(client, op, value, deadline, done, &timeline)
                    .await
            })
        })
        .collect();
    let mut histogram = new_histogram()?;
    let mut errors = 0;
    for w in workers {
        let (h, e) = w
            .await
            .map_err(|e| Error::Protocol(format!("a bench worker died: {e}")))??;
        histogram
            .add(&h)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let requests = histogram.len();
    Ok(Summary {
        target: options.target,
        op: options.op,
        url,
        concurrency,
        value_size: options.value_size,
        keys,
        seconds,
        requests,
        errors,
        throughput_per_sec: requests as f64 / seconds,
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        },
        timeline: timeline.summary(),
    })
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| Error::Protocol(e.to_string()))
}

fn key(i: u64) -> String {
    format!("bench-{i}")
}

/// One worker's keys (every `stride`-th from `first`) and the context its
/// last write of each returned.
struct Share {
    target: Target,
    first: u64,
    stride: u64,
    count: u64,
    contexts: HashMap<u64, String>,
}

impl Share {
    fn new(target: Target, first: u64, stride: u64, keys: u64) -> Share {
        let count = (keys - first).div_ceil(stride);
        Share {
            target,
            first,
            stride,
            count,
            contexts: HashMap::with_capacity(count as usize),
        }
    }

    fn key_index(&self, nth: u64) -> u64 {
        self.first + nth * self.stride
    }

    async fn write(&mut self, client: &Client, i: u64, value: &Bytes) -> Result<Reply> {
        if self.target == Target::Etcd {
            return etcd::put(client, &key(i), value).await;
        }
        let reply = client
            .put(
                &key(i),
                value.clone(),
                self.contexts.get(&i).map(String::as_str),
            )
            .await?;
        if let Some(ctx) = reply.context() {
            self.contexts.insert(i, ctx.to_string());
        }
        Ok(reply)
    }

    async fn read(&self, client: &Client, i: u64) -> Result<Reply> {
        match self.target {
            Target::Etcd => etcd::get(client, &key(i)).await,
            Target::Chorus | Target::Null => client.get(&key(i)).await,
        }
    }

    /// Writes each of the worker's keys once, with the context of a read
    /// first, so a key left by an earlier run does not gain a sibling.
    async fn preload(mut self, client: &Client, value: &Bytes) -> Result<Share> {
        for nth in 0..self.count {
            let i = self.key_index(nth);
            if let Some(ctx) = self.read(client, i).await?.context() {
                self.contexts.insert(i, ctx.to_string());
            }
            let reply = self.write(client, i, value).await?;
            if !reply.status.is_success() {
                return Err(Error::Protocol(format!(
                    "preload PUT answered {}",
                    reply.status
                )));
            }
        }
        Ok(self)
    }

    async fn run(
        mut self,
        client: Client,
        op: Op,
        value: Bytes,
        deadline: Instant,
        done: Arc<AtomicU64>,
        timeline: &timeline::Timeline,
    ) -> Result<(Histogram<u64>, u64)> {
        let mut histogram = new_histogram()?;
        let mut recorder = timeline.recorder()?;
        let mut errors = 0;
        let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
        while Instant::now() < deadline {
            let i = self.key_index(rng.random_range(0..self.count));
            let write = match op {
                Op::Put => true,
                Op::Get => false,
                Op::Mixed => rng.random_bool(0.5),
            };
            let started = Instant::now();
            let reply = if write {
                self.write(&client, i, &value).await
            } else {
                self.read(&client, i).await
            };
            let micros = started.elapsed().as_micros() as u64;
            match reply {
                // 300 is a successful read of siblings (another client's run).
                Ok(r)
                    if r.status.is_success() || r.status == http::StatusCode::MULTIPLE_CHOICES =>
                {
                    histogram.saturating_record(micros.max(1));
                    recorder.record(started, micros);
                }
                _ => errors += 1,
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok((histogram, errors))
    }
}

fn progress_bar(options: &Options, done: Arc<AtomicU64>) -> Option<ProgressBar> {
    if !options.progress {
        return None;
    }
    let seconds = options.duration.as_secs().max(1);
    let bar = ProgressBar::new(seconds);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}") {
        bar.set_style(style);
    }
    let ticker = bar.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !ticker.is_finished() && started.elapsed().as_secs() <= seconds {
            tick.tick().await;
            let elapsed = started.elapsed().as_secs_f64().max(0.001);
            ticker.set_position(elapsed as u64);
            let n = done.load(Ordering::Relaxed);
            ticker.set_message(format!("{n} requests, {:.0}/s", n as f64 / elapsed));
        }
    });
    Some(bar)
}
