//! Watches: clients waiting for a key to change
//! (`GET /kv/{key}?watch=true`, issue 23).
//!
//! # The idea
//!
//! A watcher sends the context of what it has seen. It is answered as soon
//! as the key holds a write that context does not cover (with the answer a
//! GET would give), or with `304 Not Modified` when its `timeout_ms`
//! passes first. Every watch begins with a read of the key, so a client
//! that loops (watch, time out, watch again with the context it holds)
//! never misses a write: one that landed while it was not waiting is found
//! by its next watch's first read. That is etcd's and Garage K2V's
//! long-poll contract, and what a context already is in chorus.
//!
//! Waiting costs nothing but memory: no polling. Each node keeps the keys
//! its watchers wait on ([`Watchers`]); a watcher parks on its key's
//! [`Notify`]. The key is rung when a replica of it changes it:
//! - this node's own replica, through its events (client writes, merges,
//!   read repairs, hints, handoff and anti-entropy: every change the store
//!   commits, `replica::events`);
//! - the other replicas, through `watch.changed` messages to the nodes
//!   that subscribed to the key with them (`watch.subscribe`: a lease a
//!   node renews while it has watchers of the key, `rpc.rs`).
//!
//! A rung watcher reads the key again at its `r` and answers if the read
//! shows a write its context does not cover; otherwise it waits on. A ring
//! that is lost (a message dropped, a replica down) delays the answer to
//! the timeout at worst, never loses the write: the next watch reads.
//!
//! # Bounds
//!
//! At most `limits.max_watchers` watchers wait on one node, and the keys
//! they wait on take at most `limits.max_watch_bytes` (each key's bytes
//! once, plus a fixed cost per watcher); past either a watch is a 503
//! `overloaded` with `Retry-After`. A replica keeps at most
//! `limits.max_watch_bytes` of other nodes' subscriptions too.

pub mod rpc;
mod service;

pub use service::WatchService;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// What one watcher costs beyond its key's bytes: its entry, its task and
/// the request it holds (measured in docs/benchmarks.md, Watches).
pub const WATCHER_BYTES: usize = 512;

const SHARDS: usize = 16;

/// The keys this node's watchers wait on.
pub struct Watchers {
    shards: Vec<Mutex<HashMap<String, Arc<Waiting>>>>,
    hasher: RandomState,
    count: AtomicUsize,
    bytes: AtomicUsize,
    max_count: usize,
    max_bytes: usize,
}

/// The watchers of one key: where they park.
pub struct Waiting {
    notify: Notify,
    watchers: AtomicUsize,
}

impl Waiting {
    /// Resolves at the key's next change.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// One watcher, counted until dropped.
pub struct Watch {
    watchers: Arc<Watchers>,
    key: String,
    waiting: Arc<Waiting>,
}

impl Watch {
    pub fn waiting(&self) -> &Waiting {
        &self.waiting
    }
}

impl Watchers {
    pub fn new(max_count: usize, max_bytes: usize) -> Watchers {
        Watchers {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_count,
            max_bytes,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Arc<Waiting>>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// A watcher of `key`, or a 503 when this node holds as many as it
    /// may; whether it is the key's first (a node that is not a replica
    /// of the key then subscribes to it at once, `rpc.rs`).
    pub fn watch(self: &Arc<Self>, key: &str) -> Result<(Watch, bool)> {
        let cost = key.len() + WATCHER_BYTES;
        if self.count.fetch_add(1, Ordering::SeqCst) >= self.max_count {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded {
                what: "watchers",
                key: "max_watchers",
                limit: self.max_count,
            });
        }
        if self.bytes.fetch_add(cost, Ordering::SeqCst) + cost > self.max_bytes {
            self.bytes.fetch_sub(cost, Ordering::SeqCst);
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded {
                what: "bytes of watched keys",
                key: "max_watch_bytes",
                limit: self.max_bytes,
            });
        }
        let waiting = {
            let mut shard = self.shard(key).lock();
            let waiting = shard.entry(key.to_string()).or_insert_with(|| {
                Arc::new(Waiting {
                    notify: Notify::new(),
                    watchers: AtomicUsize::new(0),
                })
            });
            let first = waiting.watchers.fetch_add(1, Ordering::SeqCst) == 0;
            (Arc::clone(waiting), first)
        };
        let (waiting, first) = waiting;
        let watch = Watch {
            watchers: Arc::clone(self),
            key: key.to_string(),
            waiting,
        };
        Ok((watch, first))
    }

    /// Wakes the watchers of `key`.
    pub fn ring(&self, key: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(waiting) = self.shard(key).lock().get(key) {
            waiting.notify.notify_waiters();
        }
    }

    /// The keys watched here now.
    pub fn keys(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Watchers waiting now, and the bytes they count for.
    pub fn load(&self) -> (usize, usize) {
        (
            self.count.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let cost = self.key.len() + WATCHER_BYTES;
        let mut shard = self.watchers.shard(&self.key).lock();
        if self.waiting.watchers.fetch_sub(1, Ordering::SeqCst) == 1 {
            shard.remove(&self.key);
        }
        drop(shard);
        self.watchers.bytes.fetch_sub(cost, Ordering::SeqCst);
        self.watchers.count.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_keys_watchers_and_no_others() {
        let watchers = Arc::new(Watchers::new(10, 1 << 20));
        let (a, first) = watchers.watch("a").expect("room");
        assert!(first);
        let (a2, first) = watchers.watch("a").expect("room");
        assert!(!first, "a second watcher of one key");
        let (b, _) = watchers.watch("b").expect("room");
        let (wa, wa2, wb) = (
            a.waiting().notified(),
            a2.waiting().notified(),
            b.waiting().notified(),
        );
        tokio::pin!(wa, wa2, wb);
        wa.as_mut().enable();
        wa2.as_mut().enable();
        wb.as_mut().enable();
        watchers.ring("a");
        wa.await;
        wa2.await;
        let b_woken = tokio::time::timeout(std::time::Duration::from_millis(20), wb).await;
        assert!(b_woken.is_err(), "b did not change");
        assert_eq!(watchers.keys().len(), 2);
    }

    #[test]
    fn watchers_are_bounded_in_count_and_bytes_and_give_back_on_drop() {
        let watchers = Arc::new(Watchers::new(3, 2 * WATCHER_BYTES + 10));
        let (one, _) = watchers.watch("k").expect("room");
        let (two, _) = watchers.watch("k").expect("room");
        let e = watchers.watch("k").err().expect("over the bytes");
        assert!(e.to_string().contains("max_watch_bytes"), "{e}");
        drop(one);
        let (three, _) = watchers.watch("k").expect("room again");
        assert_eq!(watchers.load(), (2, 2 * ("k".len() + WATCHER_BYTES)));
        drop((two, three));
        assert_eq!(watchers.load(), (0, 0));
        assert!(
            watchers.keys().is_empty(),
            "the key's entry goes with its last watcher"
        );
        let counted = Arc::new(Watchers::new(1, 1 << 20));
        let (_held, _) = counted.watch("x").expect("room");
        let e = counted.watch("y").err().expect("over the count");
        assert!(e.to_string().contains("max_watchers"), "{e}");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
