//! Group commit: many writers, one fsync.
//!
//! Writers append to the engine's journal (which reaches the OS at once),
//! take a ticket and wait. One sync thread loops: note the newest ticket,
//! fsync, publish that every ticket up to it is durable. While one fsync runs,
//! the writers that arrive pile up and the next fsync serves them all, so the
//! cost of an fsync is shared by every write that was concurrent with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::config::SyncPolicy;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    upto: u64,
    failed: bool,
}

/// Resolves when a write is durable under the store's sync policy.
#[must_use = "a write is not acknowledged until it is durable"]
pub struct Durable(Option<(watch::Receiver<Synced>, u64)>);

impl Durable {
    /// Already durable (or durability is not this store's business).
    pub fn now() -> Self {
        Durable(None)
    }

    pub async fn wait(self) -> Result<()> {
        let Some((mut rx, ticket)) = self.0 else {
            return Ok(());
        };
        let synced = *rx
            .wait_for(|s| s.upto >= ticket || s.failed)
            .await
            .map_err(|_| Error::Storage("the store closed before the write was synced".into()))?;
        if synced.upto >= ticket {
            Ok(())
        } else {
            Err(Error::Storage(
                "fsync failed; the write may not be durable".into(),
            ))
        }
    }
}

pub(crate) struct GroupCommit {
    policy: SyncPolicy,
    issued: AtomicU64,
    dirty: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    synced: watch::Sender<Synced>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the sync thread; `sync` makes everything written so far durable.
    pub fn start(
        policy: SyncPolicy,
        interval: Duration,
        sync: impl Fn() -> Result<()> + Send + 'static,
    ) -> Result<Arc<GroupCommit>> {
        let commit = Arc::new(GroupCommit {
            policy,
            issued: AtomicU64::new(0),
            dirty: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            synced: watch::Sender::new(Synced::default()),
            thread: Mutex::new(None),
        });
        let worker = Arc::clone(&commit);
        let handle = std::thread::Builder::new()
            .name("chorus-sync".into())
            .spawn(move || worker.run(interval, sync))?;
        *commit.thread.lock() = Some(handle);
        Ok(commit)
    }

    /// Call after a write reached the journal; the result resolves when it is durable.
    pub fn after_write(&self) -> Durable {
        match self.policy {
            SyncPolicy::Interval => Durable::now(),
            SyncPolicy::Always => {
                let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
                *self.dirty.lock() = true;
                self.wake.notify_one();
                Durable(Some((self.synced.subscribe(), ticket)))
            }
        }
    }

    fn run(&self, interval: Duration, sync: impl Fn() -> Result<()>) {
        loop {
            let stopping = {
                let mut dirty = self.dirty.lock();
                match self.policy {
                    SyncPolicy::Always => {
                        while !*dirty && !self.stop.load(Ordering::SeqCst) {
                            self.wake.wait(&mut dirty);
                        }
                    }
                    SyncPolicy::Interval => {
                        if !self.stop.load(Ordering::SeqCst) {
                            self.wake.wait_for(&mut dirty, interval);
                        }
                    }
                }
                *dirty = false;
                self.stop.load(Ordering::SeqCst)
            };
            let target = self.issued.load(Ordering::SeqCst);
            let result = sync();
            if let Err(e) = &result {
                tracing::error!(error = %e, "fsync failed; writes waiting on it fail");
            }
            self.synced.send_modify(|s| {
                if result.is_ok() {
                    s.upto = s.upto.max(target);
                } else {
                    s.failed = true;
                }
            });
            if stopping {
                return;
            }
        }
    }

    /// Syncs once more and stops the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}
