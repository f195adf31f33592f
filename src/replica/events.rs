//! What the replica tells of its writes: every change it commits, with its
//! cause, on one channel that any number of subscribers read.
//!
//! Writes flow down (api, coordinator, replica, store) and events flow
//! out: the replica, once the store has applied a change, publishes the
//! key, the set it now holds and why it changed ([`Cause`]). Subscribers
//! live above it and the replica imports none of them: operation-transfer
//! anti-entropy turns client writes into ops (`antientropy::operation`),
//! and watchers (`watch`) and the change feed (`feed`) subscribe the same
//! way.
//!
//! The Merkle trees do not subscribe here: a tree rebuild scans the store
//! while writes go on, and must see each change exactly once, so the trees
//! observe the store itself, under the lock its writes take
//! (`store::Observer`).
//!
//! A subscriber is called on the writer's path, synchronously, once the
//! change is visible to reads: a client write this node coordinated before
//! it is durable (the coordinator sends the set on meanwhile), every other
//! change once the store has said whether it is durable (so its task is
//! woken once, not twice). It must be quick (append to a bounded log, wake
//! a waiter) and never block.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::version::SiblingSet;

/// Why a key changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A client write this replica coordinated (minted the dot of).
    Client,
    /// Replication or read repair: a set another node sent (`Merge`).
    Merge,
    /// A set kept for an unreachable owner (sloppy quorum).
    Hint,
    /// Ownership handoff or anti-entropy repair.
    Handoff,
    /// Tombstones every replica held were purged.
    Purge,
    /// Values whose TTL ran out were dropped from a key nobody wrote since.
    Expiry,
}

impl Cause {
    /// Whether the store's change log keeps changes of this cause
    /// (`store::changes`): the writes a replica takes part in as they are
    /// made (its own mints, a coordinator's sets, read repairs, hints), not
    /// the moves of writes some replica logged already (handoff,
    /// anti-entropy) nor the removals of purge and expiry.
    pub fn is_logged(self) -> bool {
        matches!(self, Cause::Client | Cause::Merge | Cause::Hint)
    }
}

/// One change, as the store applied it.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    pub key: &'a str,
    /// The set the key holds now.
    pub set: &'a SiblingSet,
    pub cause: Cause,
}

/// Reads the replica's changes.
pub trait Subscriber: Send + Sync + 'static {
    fn changed(&self, event: &Event<'_>);
}

/// The channel: every subscriber hears every change, in the order the
/// replica publishes them.
#[derive(Default)]
pub struct Events {
    subscribers: RwLock<Vec<Arc<dyn Subscriber>>>,
}

impl Events {
    /// Adds a subscriber of every later change.
    pub fn subscribe(&self, subscriber: Arc<dyn Subscriber>) {
        self.subscribers.write().push(subscriber);
    }

    /// Tells every subscriber of a change.
    pub fn publish(&self, key: &str, set: &SiblingSet, cause: Cause) {
        let subscribers = self.subscribers.read();
        if subscribers.is_empty() {
            return;
        }
        let event = Event { key, set, cause };
        for subscriber in subscribers.iter() {
            subscriber.changed(&event);
        }
    }
}
