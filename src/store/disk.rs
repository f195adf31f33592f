//! A model of the disk under the in-memory engine, for the simulation:
//! what a power loss keeps, and the faults a real disk has.
//!
//! A write goes to the *page cache* at once (reads see it, and a crash of
//! the process keeps it) and reaches the *durable image* only when a sync
//! covers it; a power loss keeps the durable image alone. One sync task
//! per store makes the queued writes durable together (group commit, as
//! the fjall engine's committer does), after the disk's latency.
//!
//! Faults, set by the nemesis while the node runs:
//! - a write fails (`EIO`, or `ENOSPC` while the disk is full): the update
//!   is not applied and its caller gets the error;
//! - a sync fails: the writes it was to make durable are answered with the
//!   error and never reach the durable image by that sync (as Linux marks
//!   the pages clean after a failed fsync), and the store is *poisoned*:
//!   every later write fails until the node restarts, as fjall poisons its
//!   database after a failed fsync;
//! - a slow disk: every sync takes the given latency.
//!
//! The image survives the node's lives through [`Disk`], which the
//! simulation keeps per node: [`Disk::power_loss`] drops what was not
//! synced, [`Disk::snapshot`] and [`Disk::restore`] take the whole disk
//! back to an earlier state (a restored backup).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::error::{Error, Result};
use crate::version::SiblingSet;

/// One node's disk across its lives.
#[derive(Default)]
pub struct Disk {
    state: Mutex<State>,
    /// Wakes the sync task of the store running on this disk.
    wake: Notify,
}

/// The disk's contents: storage key to set, absent for a removed key.
pub type Image = BTreeMap<Vec<u8>, SiblingSet>;

#[derive(Default)]
struct State {
    durable: Image,
    /// Written since the last sync, in order: in the page cache only.
    dirty: Vec<(Vec<u8>, Option<SiblingSet>)>,
    /// Updates waiting for the sync that covers them.
    waiting: Vec<oneshot::Sender<Result<()>>>,
    faults: Faults,
    /// A sync failed in this life: every write fails until a restart.
    poisoned: bool,
    /// Bumped by every life, so a dead life's sync task stops.
    life: u64,
}

/// What goes wrong with the disk, as the nemesis sets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Writes fail with this error (`EIO`, `ENOSPC`).
    pub write_error: Option<&'static str>,
    /// This many of the next syncs fail.
    pub failing_syncs: u32,
    /// How long each sync takes.
    pub sync_latency: Duration,
}

impl Disk {
    pub fn new() -> Arc<Disk> {
        Arc::default()
    }

    /// Sets the disk's faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.state.lock().faults.clone()
    }

    /// The power fails: everything not synced is gone; writes waiting for a
    /// sync never hear of it.
    pub fn power_loss(&self) {
        let mut state = self.state.lock();
        state.dirty.clear();
        state.waiting.clear();
    }

    /// A copy of the durable image (a backup taken of the disk).
    pub fn snapshot(&self) -> Image {
        self.state.lock().durable.clone()
    }

    /// The whole disk goes back to `image`: nothing newer survives.
    pub fn restore(&self, image: Image) {
        let mut state = self.state.lock();
        state.durable = image;
        state.dirty.clear();
        state.waiting.clear();
    }

    /// Starts a new life on this disk: what it holds now (durable image and
    /// page cache; after a power loss, the durable image only), with the
    /// poison of the last life cleared.
    pub(super) fn open(&self) -> (Image, u64) {
        let mut state = self.state.lock();
        state.poisoned = false;
        state.life += 1;
        state.waiting.clear();
        let mut image = state.durable.clone();
        for (key, set) in &state.dirty {
            apply(&mut image, key, set.clone());
        }
        (image, state.life)
    }

    /// Checks that a write may go to the disk now.
    pub(super) fn check_write(&self) -> Result<()> {
        let state = self.state.lock();
        if state.poisoned {
            return Err(Error::Storage(
                "the disk is poisoned: an fsync failed; restart the node".into(),
            ));
        }
        match state.faults.write_error {
            Some(errno) => Err(Error::Storage(format!("write failed: {errno}"))),
            None => Ok(()),
        }
    }

    /// Queues a written change for the next sync; `durable` hears when it
    /// is synced.
    pub(super) fn written(
        &self,
        key: Vec<u8>,
        set: Option<SiblingSet>,
        durable: oneshot::Sender<Result<()>>,
    ) {
        let mut state = self.state.lock();
        state.dirty.push((key, set));
        state.waiting.push(durable);
        drop(state);
        self.wake.notify_one();
    }

    /// Syncs for the store of `life` until that life ends: each round takes
    /// what is queued, waits the disk's latency, then makes it durable or
    /// fails it.
    pub(super) async fn sync_loop(self: Arc<Disk>, life: u64) {
        loop {
            self.wake.notified().await;
            let latency = self.state.lock().faults.sync_latency;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut state = self.state.lock();
            if state.life != life {
                // A dead life's task may take a wake-up meant for the
                // live life's task (a node whose start failed and was
                // tried again opened the disk twice): pass it on.
                drop(state);
                self.wake.notify_one();
                return;
            }
            let dirty = std::mem::take(&mut state.dirty);
            let waiting = std::mem::take(&mut state.waiting);
            let failed = state.faults.failing_syncs > 0 || state.poisoned;
            if failed {
                state.faults.failing_syncs = state.faults.failing_syncs.saturating_sub(1);
                state.poisoned = true;
                metrics::counter!(crate::metrics::STORAGE_FAILURES_TOTAL, "stage" => "fsync")
                    .increment(waiting.len() as u64);
            } else {
                for (key, set) in dirty {
                    apply(&mut state.durable, &key, set);
                }
            }
            drop(state);
            for tx in waiting {
                let _ = tx.send(if failed {
                    Err(Error::Storage("fsync failed: EIO".into()))
                } else {
                    Ok(())
                });
            }
        }
    }
}

fn apply(image: &mut Image, key: &[u8], set: Option<SiblingSet>) {
    match set {
        Some(set) => {
            image.insert(key.to_vec(), set);
        }
        None => {
            image.remove(key);
        }
    }
}
