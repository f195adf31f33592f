//! The watch subsystem of one node: its watchers, the subscriptions it
//! holds for other nodes as a replica, and the leases it keeps at the
//! replicas of the keys its watchers wait on (`mod.rs` has the idea).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::Watchers;
use super::rpc::{Changed, LEASE, Subscribe, Subscriptions};
use crate::config::Limits;
use crate::membership::Cluster;
use crate::peer::Services;
use crate::replica::events::{Event, Subscriber};

pub struct WatchService {
    watchers: Arc<Watchers>,
    subscriptions: Subscriptions,
    cluster: Arc<Cluster>,
}

impl WatchService {
    pub fn new(cluster: Arc<Cluster>, limits: &Limits) -> Arc<WatchService> {
        Arc::new(WatchService {
            watchers: Arc::new(Watchers::new(limits.max_watchers, limits.max_watch_bytes)),
            subscriptions: Subscriptions::new(limits.max_watch_bytes),
            cluster,
        })
    }

    pub fn watchers(&self) -> &Arc<Watchers> {
        &self.watchers
    }

    /// Registers the handlers of `watch.subscribe` and `watch.changed`.
    pub fn serve(self: &Arc<Self>, services: &Services) {
        let service = Arc::clone(self);
        services.register(move |s: Subscribe| {
            let service = Arc::clone(&service);
            async move {
                let now = Instant::now();
                service
                    .subscriptions
                    .subscribe(&s.node, &s.keys, now, now + LEASE);
                Ok(())
            }
        });
        let service = Arc::clone(self);
        services.register(move |c: Changed| {
            let service = Arc::clone(&service);
            async move {
                for key in &c.keys {
                    service.watchers.ring(key);
                }
                Ok(())
            }
        });
    }

    /// Renews this node's leases every third of a lease, for as long as
    /// the node runs.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LEASE / 3);
        loop {
            tick.tick().await;
            self.subscribe(self.watchers.keys());
        }
    }

    /// Subscribes to `key` at its replicas now: its first watcher here,
    /// which must not wait for the next renewal to hear of changes.
    pub fn subscribe_now(&self, key: &str) {
        self.subscribe(vec![key.to_string()]);
    }

    /// Asks the replicas of `keys` that this node is not one of to tell
    /// it of their changes, one message per replica.
    fn subscribe(&self, keys: Vec<String>) {
        let me = self.cluster.me().to_string();
        let mut by_replica: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in keys {
            let replicas = self.cluster.routes().preference_list(&key);
            if replicas.contains(&me) {
                // This node's own replica rings its watchers.
                continue;
            }
            for replica in replicas {
                by_replica.entry(replica).or_default().push(key.clone());
            }
        }
        for (replica, keys) in by_replica {
            let call = self.cluster.transport().rpc(
                &replica,
                Subscribe {
                    node: me.clone(),
                    keys,
                },
            );
            tokio::spawn(async move {
                if let Err(e) = call.await {
                    tracing::debug!(%replica, error = %e, "a watch subscription failed; renewed at the next tick");
                }
            });
        }
    }
}

impl Subscriber for WatchService {
    fn changed(&self, event: &Event<'_>) {
        self.watchers.ring(event.key);
        if self.subscriptions.is_empty() {
            return;
        }
        let nodes = self.subscriptions.subscribers(event.key, Instant::now());
        if nodes.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for node in nodes {
            let call = self.cluster.transport().rpc(
                &node,
                Changed {
                    keys: vec![event.key.to_string()],
                },
            );
            runtime.spawn(async move {
                if let Err(e) = call.await {
                    tracing::debug!(%node, error = %e, "telling a watching node of a change failed");
                }
            });
        }
    }
}
