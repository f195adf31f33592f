//! Group commit: one thread applies every queued update and fsyncs once.
//!
//! Request tasks queue their read-merge-writes and wait. The committer takes
//! every update queued so far (up to [`MAX_BATCH`]), applies them in order
//! (a later update of the same key sees the earlier one), writes them to the
//! journal as one batch and, with `sync = "always"`, fsyncs before the
//! batch reaches the memtable and before anyone is answered. While it
//! fsyncs, the next batch queues up, so under load one fsync serves many
//! writes; with one writer it costs one fsync per write, as it must.
//!
//! With `sync = "interval"` the batch is handed to the OS (it survives a
//! crash of the process) and a timer thread fsyncs every interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, Keyspace, PersistMode};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::{Merge, decode_set, encode_set};
use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::version::SiblingSet;

/// Most updates one batch applies; bounds the latency of the first in line.
const MAX_BATCH: usize = 1024;

pub(crate) struct Job {
    pub key: Vec<u8>,
    pub merge: Merge,
    pub reply: oneshot::Sender<Result<SiblingSet>>,
}

struct Queue {
    jobs: Mutex<Vec<Job>>,
    ready: Condvar,
    stop: AtomicBool,
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
    ) -> Result<Committer> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new(Vec::with_capacity(MAX_BATCH)),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let mode = match policy {
            SyncPolicy::Always => PersistMode::SyncData,
            SyncPolicy::Interval => PersistMode::Buffer,
        };
        if policy == SyncPolicy::Interval {
            let (db, queue) = (db.clone(), Arc::clone(&queue));
            threads.push(
                std::thread::Builder::new()
                    .name("chorus-fsync".into())
                    .spawn(move || sync_every(&db, &queue, interval))?,
            );
        }
        let worker = Arc::clone(&queue);
        threads.push(
            std::thread::Builder::new()
                .name("chorus-commit".into())
                .spawn(move || commit_loop(&db, &kv, &worker, mode))?,
        );
        Ok(Committer {
            queue,
            threads: Mutex::new(threads),
        })
    }

    pub fn submit(&self, job: Job) {
        if self.queue.stop.load(Ordering::SeqCst) {
            let _ = job
                .reply
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

fn commit_loop(db: &Database, kv: &Keyspace, queue: &Queue, mode: PersistMode) {
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
        apply(db, kv, jobs, mode);
    }
    if let Err(e) = db.persist(PersistMode::SyncData) {
        tracing::error!(error = %e, "final fsync at shutdown failed");
    }
}

/// Applies one batch of updates and answers each once the batch is durable.
fn apply(db: &Database, kv: &Keyspace, jobs: Vec<Job>, mode: PersistMode) {
    let mut batch = db.batch().durability(Some(mode));
    let mut results: Vec<Result<SiblingSet>> = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    // Where in `results` the newest set of each key written so far lies: a
    // later update of a key in the same batch must see the earlier one.
    let mut latest: HashMap<Vec<u8>, usize> = HashMap::with_capacity(jobs.len());
    for job in jobs {
        let current = match latest.get(&job.key) {
            Some(&at) => Ok(results[at]
                .as_ref()
                .ok()
                .filter(|set| !set.is_empty())
                .cloned()),
            None => kv
                .get(&job.key)
                .map_err(Error::from)
                .and_then(|found| found.map(|bytes| decode_set(&bytes)).transpose()),
        };
        // A panicking merge must not take the committer (and every later
        // write) down with it: it fails its own update only.
        let merge = job.merge;
        let result = current.and_then(|current| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merge(current)))
                .unwrap_or_else(|_| {
                    Err(Error::Storage(
                        "the update panicked; nothing was written".into(),
                    ))
                })
        });
        let result = match result.and_then(|next| encode_set(&next).map(|bytes| (next, bytes))) {
            Ok((next, _)) if next.is_empty() => {
                batch.remove(kv, job.key.as_slice());
                latest.insert(job.key, results.len());
                Ok(next)
            }
            Ok((next, bytes)) => {
                batch.insert(kv, job.key.as_slice(), bytes);
                latest.insert(job.key, results.len());
                Ok(next)
            }
            Err(e) => Err(e),
        };
        results.push(result);
        replies.push(job.reply);
    }
    let committed = batch.commit();
    for (reply, result) in replies.into_iter().zip(results) {
        let result = match (&committed, result) {
            (Ok(()), result) => result,
            (Err(e), Ok(_)) => Err(Error::Storage(format!("commit failed: {e}"))),
            (Err(_), Err(e)) => Err(e),
        };
        // The requester may have gone away (client hung up); nothing to do.
        let _ = reply.send(result);
    }
}

fn sync_every(db: &Database, queue: &Queue, interval: Duration) {
    while !queue.stop.load(Ordering::SeqCst) {
        // `stop` unparks this thread, so shutdown does not wait an interval.
        std::thread::park_timeout(interval);
        if let Err(e) = db.persist(PersistMode::SyncData) {
            tracing::error!(error = %e, "periodic fsync failed");
        }
    }
}
