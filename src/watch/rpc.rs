//! The watch subsystem's peer messages, and the replica side of them.
//!
//! | request | reply | what for |
//! |---|---|---|
//! | [`Subscribe`] | `()` | a node with watchers of keys it does not replicate asks their replicas to tell it of changes, for a lease |
//! | [`Changed`] | `()` | a replica tells a subscribed node that keys changed |
//!
//! A subscription is a lease ([`LEASE`]): the subscribing node renews it
//! every third of a lease while it has watchers of the key, and a replica
//! forgets it when it runs out, so a node that stopped, or whose watchers
//! left, costs a replica nothing after a lease. A `Changed` that is lost
//! (a message dropped, the subscriber down) delays a watcher's answer to
//! its timeout at worst: its next watch reads the key (`mod.rs`).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::peer::versions::CRDT_PROTOCOL;
use crate::peer::{Rpc, Service};

/// How long a subscription lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(9);

/// Tell `node` of every change of `keys` until the lease runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub node: String,
    pub keys: Vec<String>,
}

impl Rpc for Subscribe {
    const SERVICE: Service = Service::new("watch.subscribe", 1)
        .batchable()
        .since(CRDT_PROTOCOL);
    type Reply = ();
}

/// These keys changed on the sending replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub keys: Vec<String>,
}

impl Rpc for Changed {
    const SERVICE: Service = Service::new("watch.changed", 1)
        .batchable()
        .since(CRDT_PROTOCOL);
    type Reply = ();
}

/// What a replica holds of other nodes' subscriptions: for each key, the
/// nodes to tell and until when. Bounded in bytes: a subscription past the
/// bound is not taken (its watchers then learn at their timeouts).
pub struct Subscriptions {
    by_key: Mutex<HashMap<String, Vec<(String, Instant)>>>,
    bytes: Mutex<usize>,
    max_bytes: usize,
}

/// What one subscription costs beyond its key's and node's bytes.
const SUBSCRIPTION_BYTES: usize = 64;

impl Subscriptions {
    pub fn new(max_bytes: usize) -> Subscriptions {
        Subscriptions {
            by_key: Mutex::new(HashMap::new()),
            bytes: Mutex::new(0),
            max_bytes,
        }
    }

    /// Takes (or renews) `node`'s subscription to `keys`, until `until`;
    /// forgets every lease that ran out by `now`.
    pub fn subscribe(&self, node: &str, keys: &[String], now: Instant, until: Instant) {
        let mut by_key = self.by_key.lock();
        let mut bytes = self.bytes.lock();
        by_key.retain(|key, nodes| {
            nodes.retain(|(n, expires)| {
                let live = *expires > now;
                if !live {
                    *bytes -= cost(key, n);
                }
                live
            });
            !nodes.is_empty()
        });
        for key in keys {
            let nodes = by_key.entry(key.clone()).or_default();
            match nodes.iter_mut().find(|(n, _)| n == node) {
                Some((_, expires)) => *expires = until,
                None if *bytes + cost(key, node) <= self.max_bytes => {
                    *bytes += cost(key, node);
                    nodes.push((node.to_string(), until));
                }
                None => {}
            }
        }
        by_key.retain(|_, nodes| !nodes.is_empty());
    }

    /// The nodes subscribed to `key` whose leases still run at `now`.
    pub fn subscribers(&self, key: &str, now: Instant) -> Vec<String> {
        let by_key = self.by_key.lock();
        by_key.get(key).map_or_else(Vec::new, |nodes| {
            nodes
                .iter()
                .filter(|(_, expires)| *expires > now)
                .map(|(n, _)| n.clone())
                .collect()
        })
    }

    /// Whether any node subscribed to anything (a cheap test on the write
    /// path).
    pub fn is_empty(&self) -> bool {
        self.by_key.lock().is_empty()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        *self.bytes.lock()
    }
}

fn cost(key: &str, node: &str) -> usize {
    key.len() + node.len() + SUBSCRIPTION_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_run_out_renew_and_stay_within_their_bytes() {
        let subs = Subscriptions::new(2 * cost("k", "n2") + 5);
        let t0 = Instant::now();
        let lease = |t: Instant| t + LEASE;
        subs.subscribe("n2", &["k".into()], t0, lease(t0));
        subs.subscribe("n3", &["k".into()], t0, lease(t0));
        assert_eq!(subs.subscribers("k", t0), ["n2", "n3"]);
        // Past the bound: not taken.
        subs.subscribe("n4", &["k".into()], t0, lease(t0));
        assert_eq!(subs.subscribers("k", t0).len(), 2);
        // n2 renews, n3 does not: after the first lease only n2 is told.
        let t1 = t0 + LEASE / 2;
        subs.subscribe("n2", &["k".into()], t1, lease(t1));
        let t2 = t0 + LEASE + Duration::from_millis(1);
        assert_eq!(subs.subscribers("k", t2), ["n2"]);
        // A later subscription sweeps what ran out, and gives its bytes back.
        subs.subscribe("n4", &["k".into()], t2, lease(t2));
        assert_eq!(subs.subscribers("k", t2), ["n2", "n4"]);
        assert_eq!(subs.bytes(), 2 * cost("k", "n2"));
        let t3 = t2 + 2 * LEASE;
        subs.subscribe("n5", &[], t3, lease(t3));
        assert!(subs.is_empty());
        assert_eq!(subs.bytes(), 0);
    }
}
