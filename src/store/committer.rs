//! Group commit: one thread applies every queued update, then fsyncs.
//!
//! Request tasks queue their read-merge-writes. The committer takes every
//! update queued so far (up to [`MAX_BATCH`]), computes them in order (a
//! later update of the same key sees the earlier one; a key's current set
//! comes from the row cache when it holds it, [`super::rows`]), writes them
//! to the journal as one batch, handed to the OS (it survives a crash of
//! the process from then on), records the new sets in the row cache, and
//! only then hands each update its new set. A
//! set never leaves the node before the local store holds it: a minted
//! write the coordinator sends on is always in the minter's own copy, and
//! a batch whose commit fails is answered with the error, its sets sent
//! nowhere.
//!
//! With `sync = "always"`, the committer then fsyncs the journal and only
//! after that says the updates are durable. Updates queued meanwhile make
//! the next batch: under load one fsync serves many writes; with one
//! writer it costs one fsync per write, as it must. A set handed out
//! before its fsync may be read or sent to other replicas (their fsyncs
//! overlap this one); only its acknowledgement waits for the fsync.
//!
//! The fsync is the committer's own step, not another thread's: fjall
//! holds its journal's lock through an fsync, so a batch could not be
//! written while the previous one is fsynced anyway, and a second thread
//! only added a hand-off and a convoy on that lock per batch (issue 21:
//! docs/benchmarks.md, "One thread commits and fsyncs").
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

use super::changes::{ChangeLog, Logged, dots_of};
use super::pending::Applied;
use super::rows::Rows;
use super::{Change, Merge, ObserverSlot, decode_set, encode_set, observed, user_key};
use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::version::{Dot, SiblingSet};

/// Most updates one batch applies; bounds the latency of the first in line.
const MAX_BATCH: usize = 1024;

pub(crate) struct Job {
    pub key: Vec<u8>,
    pub merge: Merge,
    /// Append what it brought to the change log, in its batch: the dots
    /// a node sent with it (none for a write minted here).
    pub log: Option<Vec<Dot>>,
    /// The new set, sent as soon as it is computed.
    pub applied: oneshot::Sender<Result<Applied>>,
    /// Sent once the update is durable: with `sync = "always"` after the
    /// fsync that covers it, else once its batch is written.
    pub durable: oneshot::Sender<Result<()>>,
    /// When it was queued: what its fsync waited is counted from here.
    pub queued: Instant,
}

struct Queue<J = Job> {
    jobs: Mutex<Vec<J>>,
    ready: Condvar,
    stop: AtomicBool,
}

impl<J> Queue<J> {
    fn new(capacity: usize) -> Queue<J> {
        Queue {
            jobs: Mutex::new(Vec::with_capacity(capacity)),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// Up to `max` jobs, waiting for one; `None` once the queue is closed
    /// and empty.
    fn take(&self, max: usize) -> Option<Vec<J>> {
        let mut pending = self.jobs.lock();
        while pending.is_empty() && !self.stop.load(Ordering::SeqCst) {
            self.ready.wait(&mut pending);
        }
        if pending.is_empty() {
            return None;
        }
        let take = pending.len().min(max);
        Some(pending.drain(..take).collect())
    }

    /// Wakes the committer to finish what is queued and stop. The flag is
    /// set under the jobs' lock: set between the committer's check of it
    /// and its wait, the wakeup would be lost and the stop hang forever
    /// (a node's shutdown did, in the test suite).
    fn close(&self) {
        {
            let _jobs = self.jobs.lock();
            self.stop.store(true, Ordering::SeqCst);
        }
        self.ready.notify_all();
    }
}

pub(crate) struct Committer {
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Committer {
    pub fn start(
        db: Database,
        stores: Stores,
        policy: SyncPolicy,
        interval: Duration,
    ) -> Result<Committer> {
        let queue = Arc::new(Queue::new(MAX_BATCH));
        let mut threads = Vec::new();
        if policy == SyncPolicy::Interval {
            let (db, queue) = (db.clone(), Arc::clone(&queue));
            threads.push(
                std::thread::Builder::new()
                    .name("chorus-fsync".into())
                    .spawn(move || sync_every(&db, &queue, interval))?,
            );
        }
        let worker = Arc::clone(&queue);
        let always = policy == SyncPolicy::Always;
        // The committer comes first: stopping joins it before the timer.
        threads.insert(
            0,
            std::thread::Builder::new()
                .name("chorus-commit".into())
                .spawn(move || commit_loop(&db, &stores, &worker, always))?,
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
        self.queue.close();
        for handle in self.threads.lock().drain(..) {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

/// What the committer writes to and tells.
pub(crate) struct Stores {
    pub kv: Keyspace,
    pub by_key: Keyspace,
    pub changes: Arc<ChangeLog>,
    pub observer: ObserverSlot,
    pub rows: Arc<Rows>,
}

fn commit_loop(db: &Database, stores: &Stores, queue: &Queue, always: bool) {
    while let Some(jobs) = queue.take(MAX_BATCH) {
        let oldest = jobs.iter().map(|job| job.queued).min();
        let started = Instant::now();
        let applied = apply(db, stores, jobs);
        metrics::histogram!(crate::metrics::STORAGE_COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match applied {
            Ok(durable) if always => sync(db, durable, oldest),
            Ok(durable) => durable.into_iter().for_each(|d| {
                let _ = d.send(Ok(()));
            }),
            Err((e, durable)) => durable.into_iter().for_each(|d| {
                let _ = d.send(Err(Error::Storage(format!("commit failed: {e}"))));
            }),
        }
    }
    // Every batch of `always` is fsynced already; the timer's last
    // interval may not be.
    if !always && let Err(e) = db.persist(PersistMode::SyncData) {
        tracing::error!(error = %e, "final fsync at shutdown failed");
    }
}

/// Fsyncs the journal, which holds every batch written so far, and says so
/// to each update of the last one; `oldest` is when the first of them was
/// queued.
fn sync(db: &Database, durable: DurableSenders, oldest: Option<Instant>) {
    if durable.is_empty() {
        return;
    }
    // Per fsync, not per write: the wait before it, its time, its batch
    // (docs/benchmarks.md, the p99 below the peak).
    let started = Instant::now();
    if let Some(oldest) = oldest {
        metrics::histogram!(crate::metrics::STORAGE_FSYNC_WAIT_SECONDS)
            .record(started.duration_since(oldest).as_secs_f64());
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

type DurableSenders = Vec<oneshot::Sender<Result<()>>>;

/// The log entry of a write of the key stored under `storage_key`.
fn logged(
    storage_key: &[u8],
    held: &[Dot],
    sent: &[Dot],
    new: &SiblingSet,
    now_ms: u64,
) -> Option<Logged> {
    let key = user_key(storage_key).ok()?;
    super::changes::logged(&key, held, sent, new, now_ms)
}

/// Applies one batch of updates, writes the batch to the journal (not
/// fsynced), telling the store's observer and the row cache, then hands
/// each update its new set (or the commit's error).
/// Returns the durability senders of the updates written, to answer once
/// they are fsynced, or with the error that failed the batch.
fn apply(
    db: &Database,
    stores: &Stores,
    jobs: Vec<Job>,
) -> std::result::Result<DurableSenders, (fjall::Error, DurableSenders)> {
    let Stores {
        kv,
        by_key,
        changes: log,
        observer,
        rows,
    } = stores;
    // What the change log stamps its entries with and trims by.
    let now_ms = crate::clock::system_ms();
    let mut batch = db.batch().durability(Some(PersistMode::Buffer));
    let mut durable = Vec::with_capacity(jobs.len());
    let mut answers = Vec::with_capacity(jobs.len());
    let watched = observer.get().is_some();
    let mut changes = Vec::new();
    let mut written = Vec::with_capacity(jobs.len());
    // The change log's entries in this batch, counted once it commits.
    let mut appended = Vec::new();
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
            None => rows
                .read_through(kv, &job.key)
                .map_err(Error::from)
                .and_then(|found| {
                    found
                        .map(|set| Ok((decode_set(set.bytes())?, set.into_bytes())))
                        .transpose()
                }),
        };
        // A panicking merge must not take the committer (and every later
        // write) down with it: it fails its own update only.
        let merge = job.merge;
        let result = current.and_then(|current| {
            let (set, bytes) = current.unzip();
            let held = job.log.as_ref().map(|_| dots_of(set.as_ref()));
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merge(set)))
                .unwrap_or_else(|_| {
                    Err(Error::Storage(
                        "the update panicked; nothing was written".into(),
                    ))
                })?;
            // Encoded once: the bytes go to disk, to the observer (the
            // Merkle trees hash them) and back to the caller (a coordinator
            // sends them to the other replicas).
            // Exact-size (`encode_set`): the row cache keeps these bytes,
            // and a grown Vec's spare capacity would be kept with them.
            let encoded = (!next.is_empty())
                .then(|| encode_set(&next).map(Bytes::from))
                .transpose()?;
            // The log entry first: one that cannot be made fails the update
            // before anything of it is in the batch.
            if let (Some(held), Some(sent)) = (&held, &job.log)
                && let Some(entry) = logged(&job.key, held, sent, &next, now_ms)
            {
                appended.push(log.append_to(&mut batch, entry)?);
            }
            match &encoded {
                Some(encoded) => batch.insert(kv, job.key.as_slice(), encoded.as_ref()),
                None => batch.remove(kv, job.key.as_slice()),
            }
            // The key index (`by_key.rs`) changes only where a key appears
            // or goes, in the same atomic batch as its set.
            if let Some((position, key)) = job.key.split_at_checked(8) {
                match (&bytes, &encoded) {
                    (None, Some(_)) => batch.insert(by_key, key, position),
                    (Some(_), None) => batch.remove(by_key, key),
                    _ => {}
                }
            }
            if repeated.contains(&job.key) {
                let kept = encoded.clone().map(|e| (next.clone(), e));
                latest.insert(job.key.clone(), kept);
            }
            if watched {
                changes.push(Change {
                    storage_key: job.key.clone(),
                    old: bytes,
                    new: encoded.clone(),
                });
            }
            written.push((job.key, encoded.clone()));
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
    // Before any update is answered: a read that starts after an
    // acknowledgement must not find the older set in the cache.
    if committed.is_ok() {
        log.committed(&appended);
        for (key, set) in written {
            rows.committed(key, set);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A committer stopped at any moment of its start stops. Run 50,000
    /// times: with the flag set outside the lock, a stop that landed
    /// between the committer's check of it and its wait hung it (tried:
    /// round 11,923 of one run never stopped).
    #[test]
    fn a_queue_closed_at_any_moment_lets_its_committer_stop() {
        for round in 0..50_000u32 {
            let queue: Arc<Queue<u32>> = Arc::new(Queue::new(1));
            let worker = Arc::clone(&queue);
            let (done, stopped) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                while worker.take(1).is_some() {}
                let _ = done.send(());
            });
            // Spread the close over the committer's start.
            for _ in 0..(round % 64) {
                std::hint::spin_loop();
            }
            queue.close();
            assert!(
                stopped.recv_timeout(Duration::from_secs(10)).is_ok(),
                "round {round}: the committer never saw the stop"
            );
        }
    }
}
