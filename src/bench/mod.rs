//! `chorus bench`: YCSB's core workloads against chorus and its peers,
//! from one client, with latency histograms.
//!
//! A run loads `records` records (unmeasured but timed), then runs each
//! asked [`workload::Workload`] in turn for `duration`, with `concurrency`
//! workers. Each operation's record comes from the workload's
//! [`keys::Distribution`] (or `--distribution`).
//!
//! - **Closed loop** (the default): each worker keeps one operation in
//!   flight, so throughput is what the target sustains at that concurrency.
//! - **Open loop** (`--rate R`): operations are due at a fixed rate, `R`
//!   per second over all workers, each worker on its own evenly spaced
//!   schedule, and an operation's latency counts from when it was *due*,
//!   not from when a busy worker got round to sending it. A stalled server
//!   then shows as latency instead of hiding as fewer requests (coordinated
//!   omission; the correction wrk2 makes).
//!
//! Latencies go into hdrhistograms (microseconds), per operation and over
//! all, and into a per-second [`timeline::Timeline`] that [`plot`] draws.
//! The targets ([`target::Target`]): chorus (one node, or round-robin over
//! several), the in-process [`null::NullServer`] (the machine's HTTP
//! ceiling, which chorus's figures are read against as ratios from the
//! same run), etcd's JSON gateway, and Redis.
//!
//! Beside throughput and latency, each run reports the servers' CPU time
//! per request ([`cpu`]): of the processes named with `--server-pid`, or
//! of the null server's own threads.

pub mod cpu;
pub mod etcd;
pub mod keys;
pub mod null;
pub mod plot;
mod records;
mod report;
pub mod target;
pub mod timeline;
pub mod watchers;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use keys::{Distribution, KeyChooser};
use report::progress_bar;
pub use report::{row, table};
pub use target::Target;
use target::{Backend, Outcome, Session};
use workload::{MAX_SCAN_LENGTH, Operation, Workload};

/// What to measure; also the flags of `chorus bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The chorus node, etcd member or Redis server to load; several
    /// comma-separated chorus nodes are used round-robin, one per worker.
    #[arg(long, default_value = crate::client::DEV_URL, value_delimiter = ',')]
    pub url: Vec<String>,
    #[arg(long, value_enum, default_value_t = Target::Chorus)]
    pub target: Target,
    /// The workloads to run, in order, after one load (comma-separated).
    #[arg(
        long = "workload",
        value_enum,
        value_delimiter = ',',
        default_value = "a"
    )]
    pub workloads: Vec<Workload>,
    /// The key distribution, for every workload (default: each workload's own).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Records loaded before the runs, and the key space they draw from.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    pub no_load: bool,
    /// How long to measure each workload, for example 15s or 1m.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Workers, each with one operation in flight at a time.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: operations per second over all workers, due at fixed
    /// intervals (0: closed loop, as fast as the target answers).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// chorus only: each worker sends its operations this many at a time
    /// in one `POST /batch` (1: one request per operation). Each op counts
    /// as one request, timed as its batch; reads, updates and inserts
    /// only (not workload F's read-modify-writes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Server processes whose CPU time (user + system, every thread) each
    /// run reports per request: the PIDs of the nodes loaded, comma
    /// separated. The null server measures its own threads.
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// The target's name in the printed table (default: the target kind).
    #[arg(long)]
    pub label: Option<String>,
    /// Also write the JSON summary to this file, with throughput and
    /// latency plots per workload beside it
    /// (`<stem>-<workload>-throughput.png`, `<stem>-<workload>-latency.png`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Instead of the workloads: open this many watches on one node
    /// (`--url`, `--server-pid`), hold them for `--duration`, then write
    /// `--notify` of their keys; reports memory per watcher and the node's
    /// CPU ([`watchers`]).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// With `--watchers`: how many of the watched keys to write, one at a
    /// time, timing each watcher's answer.
    #[arg(long, default_value_t = 1000)]
    pub notify: usize,
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

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One kind of operation within a run.
#[derive(Debug, Serialize)]
pub struct OperationSummary {
    pub count: u64,
    pub latency: Latency,
}

/// The load phase.
#[derive(Debug, Serialize)]
pub struct Load {
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub errors: u64,
}

/// One workload's run.
#[derive(Debug, Serialize)]
pub struct Run {
    pub workload: Workload,
    pub distribution: Distribution,
    /// The open-loop rate asked for (0: closed loop).
    pub rate_per_sec: u64,
    pub seconds: f64,
    /// Operations answered (errors not included).
    pub requests: u64,
    pub errors: u64,
    /// Reads of records that were not there (workload D reading an insert
    /// still in flight); answered, so counted in `requests`.
    pub not_found: u64,
    pub throughput_per_sec: f64,
    /// Over every operation of the run.
    pub latency: Latency,
    pub operations: BTreeMap<&'static str, OperationSummary>,
    /// Operations and latency in each second of the run.
    pub timeline: Vec<timeline::Second>,
    /// The servers' CPU over the run, when they were named
    /// (`--server-pid`) or are the null server.
    pub server_cpu: Option<cpu::ServerCpu>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub target: Target,
    pub label: String,
    pub urls: Vec<String>,
    pub concurrency: usize,
    pub value_size: usize,
    pub records: u64,
    pub load: Option<Load>,
    /// With `--no-load`, on chorus: every record read once, unmeasured,
    /// to learn its context (`learn`).
    pub learned: Option<Load>,
    pub runs: Vec<Run>,
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
        _ => None,
    };
    let urls = match &ceiling {
        Some(server) => vec![format!("http://{}", server.addr)],
        None => options.url.clone(),
    };
    let servers = match (&ceiling, options.server_pids.is_empty()) {
        (Some(_), true) => Some(cpu::Servers::Threads(cpu::NULL_THREADS)),
        (Some(_), false) => {
            return Err(Error::Config {
                key: "--server-pid".into(),
                message: "the null server runs in the bench and measures its own threads".into(),
            });
        }
        (None, false) => Some(cpu::Servers::Processes(options.server_pids.clone())),
        (None, true) => None,
    };
    if options.batch > 1 && options.target != Target::Chorus {
        return Err(Error::Config {
            key: "--batch".into(),
            message: "only chorus takes batches".into(),
        });
    }
    if options.workloads.contains(&Workload::E)
        && (options.target != Target::Chorus || options.batch > 1)
    {
        return Err(Error::Config {
            key: "--workload".into(),
            message: "workload E scans, which only chorus does, one request per scan: leave out E or --batch".into(),
        });
    }
    if options.batch > 1 && options.workloads.contains(&Workload::F) {
        return Err(Error::Config {
            key: "--batch".into(),
            message: "a batch cannot read-modify-write: leave workload F out".into(),
        });
    }
    // A PID that names no process is a clear error before any load.
    if let Some(servers) = &servers {
        servers.sample()?;
    }
    let backend = Backend::new(options.target, &urls)?;
    let concurrency = options.concurrency.max(1);
    let mut sessions = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        sessions.push(backend.session(w).await?);
    }
    let value = value_of_size(options.value_size);
    let records = options.records.max(1);
    // Only updates carry a record's context (inserts write new records).
    let updates = options.workloads.iter().any(|w| {
        w.mix()
            .iter()
            .any(|(op, _)| matches!(op, Operation::Update | Operation::ReadModifyWrite))
    });
    let (load, learned) = if options.no_load && options.target == Target::Chorus && updates {
        // The records are there, but this process has not seen their
        // contexts: a write without one would add a sibling.
        let (learned, sessions_back) = records::learn(sessions, records).await?;
        sessions = sessions_back;
        (None, Some(learned))
    } else if options.no_load {
        (None, None)
    } else {
        let (loaded, sessions_back) = records::load(sessions, records, &value).await?;
        sessions = sessions_back;
        (Some(loaded), None)
    };
    // Inserts (workload D) add records past the loaded ones.
    let count = Arc::new(AtomicU64::new(records));
    let mut runs = Vec::new();
    for &workload in &options.workloads {
        let spec = Spec {
            workload,
            distribution: options.distribution.unwrap_or(workload.distribution()),
            rate: options.rate,
            concurrency,
            duration: options.duration,
            value: value.clone(),
            records: Arc::clone(&count),
            batch: usize::from(options.batch),
        };
        let (run, back) = run_workload(&options, spec, sessions, servers.as_ref()).await?;
        sessions = back;
        runs.push(run);
    }
    Ok(Summary {
        target: options.target,
        label: options
            .label
            .clone()
            .unwrap_or_else(|| options.target.name().to_string()),
        urls,
        concurrency,
        value_size: options.value_size,
        records,
        load,
        learned,
        runs,
    })
}

/// What one workload run needs, shared by its workers.
#[derive(Clone)]
struct Spec {
    workload: Workload,
    distribution: Distribution,
    rate: u64,
    concurrency: usize,
    duration: Duration,
    value: Bytes,
    records: Arc<AtomicU64>,
    /// Operations per request (`--batch`).
    batch: usize,
}

impl Spec {
    /// The gap between one worker's operations in an open-loop run.
    fn interval(&self) -> Option<Duration> {
        (self.rate > 0).then(|| Duration::from_secs_f64(self.concurrency as f64 / self.rate as f64))
    }
}

/// One worker's histograms and counts.
struct Tally {
    all: Histogram<u64>,
    by_op: BTreeMap<&'static str, Histogram<u64>>,
    errors: u64,
    not_found: u64,
}

impl Tally {
    fn new() -> Result<Tally> {
        let mut by_op = BTreeMap::new();
        for op in Operation::ALL {
            by_op.insert(op.name(), new_histogram()?);
        }
        Ok(Tally {
            all: new_histogram()?,
            by_op,
            errors: 0,
            not_found: 0,
        })
    }

    fn add(&mut self, other: &Tally) -> Result<()> {
        let merge = |a: &mut Histogram<u64>, b: &Histogram<u64>| {
            a.add(b).map_err(|e| Error::Protocol(e.to_string()))
        };
        merge(&mut self.all, &other.all)?;
        for (name, h) in &other.by_op {
            if let Some(mine) = self.by_op.get_mut(name) {
                merge(mine, h)?;
            }
        }
        self.errors += other.errors;
        self.not_found += other.not_found;
        Ok(())
    }
}

async fn run_workload(
    options: &Options,
    spec: Spec,
    sessions: Vec<Session>,
    servers: Option<&cpu::Servers>,
) -> Result<(Run, Vec<Session>)> {
    let cpu_before = servers.map(cpu::Servers::sample).transpose()?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(options, spec.workload, Arc::clone(&done));
    let started = Instant::now();
    let timeline = Arc::new(timeline::Timeline::new(started));
    let workers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(w, session)| {
            let (spec, done, timeline) = (spec.clone(), Arc::clone(&done), Arc::clone(&timeline));
            tokio::spawn(async move { work(w, session, spec, started, done, &timeline).await })
        })
        .collect();
    let mut total = Tally::new()?;
    let mut back = Vec::new();
    for w in workers {
        let (session, tally) = w
            .await
            .map_err(|e| Error::Protocol(format!("a bench worker died: {e}")))??;
        total.add(&tally)?;
        back.push(session);
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = total.all.len();
    let server_cpu = match (servers, cpu_before) {
        (Some(servers), Some(before)) => Some(servers.over(&before, &servers.sample()?, requests)),
        _ => None,
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let operations = total
        .by_op
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let summary = OperationSummary {
                count: h.len(),
                latency: Latency::of(h),
            };
            (*name, summary)
        })
        .collect();
    let run = Run {
        workload: spec.workload,
        distribution: spec.distribution,
        rate_per_sec: spec.rate,
        seconds,
        requests,
        errors: total.errors,
        not_found: total.not_found,
        throughput_per_sec: requests as f64 / seconds,
        latency: Latency::of(&total.all),
        operations,
        timeline: timeline.summary(),
        server_cpu,
    };
    Ok((run, back))
}

/// One worker's loop until the run's deadline.
async fn work(
    w: usize,
    mut session: Session,
    spec: Spec,
    started: Instant,
    done: Arc<AtomicU64>,
    timeline: &timeline::Timeline,
) -> Result<(Session, Tally)> {
    let deadline = started + spec.duration;
    let mut tally = Tally::new()?;
    let mut recorder = timeline.recorder()?;
    let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
    let mut chooser = KeyChooser::new(spec.distribution);
    // Open loop: when the next operation is due, and the gap to the one
    // after. Worker w's first is due w/concurrency of a gap in, so the
    // arrivals over all workers are evenly spaced.
    let mut schedule = spec.interval().map(|gap| {
        let first = started + gap.mul_f64(w as f64 / spec.concurrency as f64);
        (first, gap)
    });
    loop {
        let intended = match &mut schedule {
            Some((due, gap)) => {
                let this = *due;
                *due += *gap;
                this
            }
            None => Instant::now(),
        };
        if intended >= deadline {
            break;
        }
        // An operation a busy worker sends late is timed from when it was
        // due (the server's slowness made it late); one an idle worker
        // sends is timed from when it goes out, so the timer's own
        // lateness (up to a millisecond in tokio) is not counted.
        let intended = if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
            Instant::now()
        } else {
            intended
        };
        let mut ops: Vec<(Operation, u64)> = Vec::with_capacity(spec.batch);
        for _ in 0..spec.batch {
            let op = spec.workload.next(&mut rng);
            // A batch's ops run concurrently: two writes of one record in
            // one batch would be siblings. Draw another (a few times).
            let mut i = 0;
            for _ in 0..8 {
                i = match op {
                    Operation::Insert => spec.records.fetch_add(1, Ordering::Relaxed),
                    _ => chooser.choose(&mut rng, spec.records.load(Ordering::Relaxed)),
                };
                if !ops.iter().any(|(_, j)| *j == i) {
                    break;
                }
            }
            ops.push((op, i));
        }
        // A scan counts once per record it read, as a batch counts once
        // per op: so CPU per request is per record read either way.
        let mut records = 1;
        let outcomes = match ops[..] {
            [(Operation::Scan, i)] => {
                let length = rand::Rng::random_range(&mut rng, 1..=MAX_SCAN_LENGTH);
                let (outcome, read) = session.scan(i, length).await;
                records = read.max(1);
                vec![outcome]
            }
            [(op, i)] => vec![match op {
                Operation::Insert => session.insert(i, &spec.value).await,
                Operation::Read => session.read(i).await,
                Operation::Update => session.update(i, &spec.value).await,
                Operation::ReadModifyWrite => session.read_modify_write(i, &spec.value).await,
                Operation::Scan => Outcome::Failed,
            }],
            _ => session.batch(&ops, &spec.value).await,
        };
        let micros = (intended.elapsed().as_micros() as u64).max(1);
        for ((op, _), outcome) in ops.iter().zip(outcomes) {
            match outcome {
                Outcome::Failed => tally.errors += 1,
                answered => {
                    tally.not_found += u64::from(answered == Outcome::NotFound);
                    for _ in 0..records {
                        tally.all.saturating_record(micros);
                        if let Some(h) = tally.by_op.get_mut(op.name()) {
                            h.saturating_record(micros);
                        }
                        recorder.record(intended, micros);
                    }
                }
            }
        }
        done.fetch_add(ops.len() as u64 * records, Ordering::Relaxed);
    }
    drop(recorder);
    Ok((session, tally))
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| Error::Protocol(e.to_string()))
}
