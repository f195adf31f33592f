//! Group commit: one thread applies every queued update, another fsyncs.
//!
//! Request tasks queue their read-merge-writes. The committer takes every
//! update queued so far (up to [`MAX_BATCH`]), computes them in order (a
//! later update of the same key sees the earlier one), writes them to the
//! journal as one batch, handed to the OS (it survives a crash of the
//! process from then on), and only then hands each update its new set. A
//! set never leaves the node before the local store holds it: a minted
//! write the coordinator sends on is always in the minter's own copy, and
//! a batch whose commit fails is answered with the error, its sets sent
//! nowhere.
//!
//! With `sync = "always"`, the syncer thread then fsyncs and only after
//! that says the updates are durable. While it fsyncs, the committer goes
//! on computing and writing the next batch, and the fsync after that covers
//! all of it: under load one fsync serves many writes, and computing never
//! waits for the disk; with one writer it costs one fsync per write, as it
//! must. A set handed out before its fsync may be read or sent to other
//! replicas; only its acknowledgement waits for the fsync.
//!
//! With `sync = "interval"` an update is acknowledged once written, and a
//! timer thread fsyncs every interval.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjall::{Database, Keyspace, PersistMode};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::pending::Applied;
use super::{Change, Merge, ObserverSlot, decode_set, encode_set, observed};
use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::version::SiblingSet;

/// Most updates one batch applies; bounds the latency of the first in line.
const MAX_BATCH: usize = 1024;

pub(crate) struct Job {
    pub key: Vec<u8>,
    pub merge: Merge,
    /// The new set, sent as soon as it is computed.
    pub applied: oneshot::Sender<Result<Applied>>,
    /// Sent once the batch holding the update is committed.
    pub durable: oneshot::Sender<Result<()>>,
}

struct Queue {
    jobs: Mutex<Vec<Job>>,
    ready: Condvar,
    stop: AtomicBool,
}

/// Updates written to the journal and waiting for the next fsync.
struct Syncs {
    /// The updates written and not yet fsynced, and when the oldest of
    /// them was handed over.
    waiting: Mutex<(DurableSenders, Option<Instant>)>,
    ready: Condvar,
    /// The committer has stopped: nothing more will wait.
    done: AtomicBool,
}

pub(crate) struct Committer {
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Committer {
    pub fn start(
        db: Database,
        kv: Keyspace,
        policy: SyncPolicy,
        interval: Duration,
        observer: ObserverSlot,
    ) -> Result<Committer> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new(Vec::with_capacity(MAX_BATCH)),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let syncs = match policy {
            SyncPolicy::Always => {
                let syncs = Arc::new(Syncs {
                    waiting: Mutex::new((Vec::new(), None)),
                    ready: Condvar::new(),
                    done: AtomicBool::new(false),
                });
                let (db, waiting) = (db.clone(), Arc::clone(&syncs));
                threads.push(
                    std::thread::Builder::new()
                        .name("chorus-fsync".into())
                        .spawn(move || sync_loop(&db, &waiting))?,
                );
                Some(syncs)
            }
            SyncPolicy::Interval => {
                let (db, queue) = (db.clone(), Arc::clone(&queue));
                threads.push(
                    std::thread::Builder::new()
                        .name("chorus-fsync".into())
                        .spawn(move || sync_every(&db, &queue, interval))?,
                );
                None
            }
        };
        let worker = Arc::clone(&queue);
        // The committer comes first: stopping joins it before the syncer,
        // so its last batch is fsynced.
        threads.insert(
            0,
            std::thread::Builder::new()
                .name("chorus-commit".into())
                .spawn(move || commit_loop(&db, &kv, &worker, syncs.as_deref(), &observer))?,
        );
        Ok(Committer {
            queue,
            threads: Mutex::new(threads),
        })
    }

    pub fn submit(&self, job: Job) {
        if self.queue.stop.load(Ordering::SeqCst) {
            let _ = job
                .applied
                .send(Err(Error::Storage("the store is closing".into())));
            return;
        }
        self.queue.jobs.lock().push(job);
        self.queue.ready.notify_one();
    }

    /// Applies what is queued, fsyncs, and stops the threads.
    pub fn stop(&self) {
        self.queue.stop.store(true, Ordering::SeqCst);
        self.queue.ready.notify_all();
        for handle in self.threads.lock().drain(..) {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Syncs {
    fn push(&self, durable: Vec<oneshot::Sender<Result<()>>>) {
        let mut waiting = self.waiting.lock();
        waiting.1.get_or_insert_with(Instant::now);
        waiting.0.extend(durable);
        drop(waiting);
        self.ready.notify_one();
    }
}

fn commit_loop(
    db: &Database,
    kv: &Keyspace,
    queue: &Queue,
    syncs: Option<&Syncs>,
    observer: &ObserverSlot,
) {
    loop {
        let jobs: Vec<Job> = {
            let mut pending = queue.jobs.lock();
            while pending.is_empty() && !queue.stop.load(Ordering::SeqCst) {
                queue.ready.wait(&mut pending);
            }
            if pending.is_empty() {
                break;
            }
            let take = pending.len().min(MAX_BATCH);
            pending.drain(..take).collect()
        };
        match (apply(db, kv, jobs, observer), syncs) {
            (Ok(durable), Some(syncs)) => syncs.push(durable),
            (Ok(durable), None) => durable.into_iter().for_each(|d| {
                let _ = d.send(Ok(()));
            }),
            (Err((e, durable)), _) => durable.into_iter().for_each(|d| {
                let _ = d.send(Err(Error::Storage(format!("commit failed: {e}"))));
            }),
        }
    }
    if let Some(syncs) = syncs {
        // The syncer fsyncs what is left, then stops.
        let _guard = syncs.waiting.lock();
        syncs.done.store(true, Ordering::SeqCst);
        syncs.ready.notify_one();
    } else if let Err(e) = db.persist(PersistMode::SyncData) {
        tracing::error!(error = %e, "final fsync at shutdown failed");
    }
}

/// Fsyncs whatever was written since the last fsync, then says so to every
/// update it covers; until the committer has stopped and nothing waits.
/// The committer thread is joined before this one.
fn sync_loop(db: &Database, syncs: &Syncs) {
    loop {
        let (durable, since) = {
            let mut waiting = syncs.waiting.lock();
            while waiting.0.is_empty() && !syncs.done.load(Ordering::SeqCst) {
                syncs.ready.wait(&mut waiting);
            }
            std::mem::take(&mut *waiting)
        };
        if durable.is_empty() {
            // The committer stopped and everything it wrote is fsynced.
            break;
        }
        // Per fsync, not per write: the waits behind it, its time, its
        // batch (docs/benchmarks.md, the p99 below the peak).
        let started = Instant::now();
        if let Some(since) = since {
            metrics::histogram!(crate::metrics::STORAGE_FSYNC_WAIT_SECONDS)
                .record(started.duration_since(since).as_secs_f64());
        }
        let synced = db.persist(PersistMode::SyncData);
        metrics::histogram!(crate::metrics::STORAGE_FSYNC_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::STORAGE_FSYNC_WRITES).record(durable.len() as f64);
        if let Err(e) = &synced {
            metrics::counter!(crate::metrics::STORAGE_FAILURES_TOTAL, "stage" => "fsync")
                .increment(durable.len() as u64);
            tracing::error!(error = %e, "fsync failed; the store refuses writes until the node restarts");
        }
        for d in durable {
            let _ = d.send(
                synced
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| Error::Storage(format!("fsync failed: {e}"))),
            );
        }
    }
    if let Err(e) = db.persist(PersistMode::SyncData) {
        tracing::error!(error = %e, "final fsync at shutdown failed");
    }
}

type DurableSenders = Vec<oneshot::Sender<Result<()>>>;

/// Applies one batch of updates, writes the batch to the journal (not
/// fsynced), telling the store's observer, then hands each update its new
/// set (or the commit's error).
/// Returns the durability senders of the updates written, to answer once
/// they are fsynced, or with the error that failed the batch.
fn apply(
    db: &Database,
    kv: &Keyspace,
    jobs: Vec<Job>,
    observer: &ObserverSlot,
) -> std::result::Result<DurableSenders, (fjall::Error, DurableSenders)> {
    let mut batch = db.batch().durability(Some(PersistMode::Buffer));
    let mut durable = Vec::with_capacity(jobs.len());
    let mut answers = Vec::with_capacity(jobs.len());
    let watched = observer.get().is_some();
    let mut changes = Vec::new();
    // A later update of a key in the same batch must see the earlier one:
    // the newest set (and its encoding) of each key that appears more than
    // once is kept here.
    let mut seen = HashSet::with_capacity(jobs.len());
    let repeated: HashSet<Vec<u8>> = jobs
        .iter()
        .filter(|job| !seen.insert(job.key.as_slice()))
        .map(|job| job.key.clone())
        .collect();
    let mut latest: HashMap<Vec<u8>, Option<(SiblingSet, Bytes)>> = HashMap::new();
    for job in jobs {
        let current = match latest.get(&job.key) {
            Some(found) => Ok(found.clone()),
            None => kv.get(&job.key).map_err(Error::from).and_then(|found| {
                found
                    .map(|bytes| Ok((decode_set(&bytes)?, Bytes::copy_from_slice(&bytes))))
                    .transpose()
            }),
        };
        // A panicking merge must not take the committer (and every later
        // write) down with it: it fails its own update only.
        let merge = job.merge;
        let result = current.and_then(|current| {
            let (set, bytes) = current.unzip();
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merge(set)))
                .unwrap_or_else(|_| {
                    Err(Error::Storage(
                        "the update panicked; nothing was written".into(),
                    ))
                })?;
            // Encoded once: the bytes go to disk, to the observer (the
            // Merkle trees hash them) and back to the caller (a coordinator
            // sends them to the other replicas).
            let encoded = (!next.is_empty())
                .then(|| encode_set(&next).map(Bytes::from))
                .transpose()?;
            match &encoded {
                Some(encoded) => batch.insert(kv, job.key.as_slice(), encoded.as_ref()),
                None => batch.remove(kv, job.key.as_slice()),
            }
            if repeated.contains(&job.key) {
                let kept = encoded.clone().map(|e| (next.clone(), e));
                latest.insert(job.key.clone(), kept);
            }
            if watched {
                changes.push(Change {
                    storage_key: job.key,
                    old: bytes,
                    new: encoded.clone(),
                });
            }
            Ok((next, encoded))
        });
        if result.is_ok() {
            durable.push(job.durable);
        }
        answers.push((job.applied, result));
    }
    let mut batch = Some(batch);
    let mut committed = Ok(());
    observed(observer, || {
        committed = batch.take().map_or(Ok(()), |b| b.commit());
        match committed {
            Ok(()) => std::mem::take(&mut changes),
            Err(_) => Vec::new(),
        }
    });
    // The requester may have gone away (client hung up); nothing to do.
    for (applied, result) in answers {
        let result = match &committed {
            Ok(()) => result,
            Err(e) => {
                metrics::counter!(crate::metrics::STORAGE_FAILURES_TOTAL, "stage" => "commit")
                    .increment(1);
                Err(Error::Storage(format!("commit failed: {e}")))
            }
        };
        let _ = applied.send(result);
    }
    match committed {
        Ok(()) => Ok(durable),
        Err(e) => Err((e, durable)),
    }
}

fn sync_every(db: &Database, queue: &Queue, interval: Duration) {
    while !queue.stop.load(Ordering::SeqCst) {
        // `stop` unparks this thread, so shutdown does not wait an interval.
        std::thread::park_timeout(interval);
        if let Err(e) = db.persist(PersistMode::SyncData) {
            // Counted so that ChorusStorageFailing fires now, not at the
            // next commit the poisoned store refuses.
            metrics::counter!(crate::metrics::STORAGE_FAILURES_TOTAL, "stage" => "fsync")
                .increment(1);
            tracing::error!(error = %e, "periodic fsync failed; the store refuses writes until the node restarts");
        }
    }
}
