//! The replica: what a node does with the reads and writes addressed to
//! its store ([`rpc`]: the messages and their answers).
//!
//! It owns the node's store and dot minter. Writes are answered only once
//! durable, so an acknowledgement from a replica means the data survives a
//! crash of that replica. [`Replica::coordinate`] is the one exception, for
//! this node's own coordinator: it hands back the minted set before the
//! fsync, with what says when the fsync is done.

mod answers;
pub mod events;
pub mod rpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::clock::Clock;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::store::{Durable, Identity, Pending, Store};
use crate::version::{Content, Context, Dot, MAX_REQUEST_RECORD, SiblingSet};

pub struct Replica {
    store: Arc<dyn Store>,
    /// Every change this replica commits, with its cause, for whoever
    /// subscribes (the op log; later watchers and the change feed).
    events: events::Events,
    /// Set by a node at the end of a graceful leave: it takes no more data.
    closed: AtomicBool,
    /// Whether a stored write is fsynced before it is acknowledged.
    durable: bool,
    identity: Arc<Identity>,
    warn_siblings: usize,
    max_siblings: usize,
    max_set_bytes: usize,
    idempotency_ttl_ms: u64,
    /// Hints held for unreachable owners (approximate: accepted minus
    /// handed off), and the most this node takes.
    hints: AtomicUsize,
    max_hints: usize,
    /// The most bytes of sets one peer message should carry: half the peer
    /// message limit (one set larger than that still goes, alone).
    budget: usize,
    clock: Clock,
}

impl Replica {
    /// The limits bound what a client write may leave behind (sibling count
    /// and bytes); merges from other replicas are never refused, so no
    /// stored write is lost.
    pub fn new(
        store: Arc<dyn Store>,
        identity: Arc<Identity>,
        limits: &Limits,
        durable: bool,
        clock: Clock,
    ) -> Replica {
        Replica {
            store,
            events: events::Events::default(),
            closed: AtomicBool::new(false),
            durable,
            identity,
            warn_siblings: limits.warn_siblings,
            idempotency_ttl_ms: limits.idempotency_ttl_ms,
            hints: AtomicUsize::new(0),
            max_hints: limits.max_hints,
            max_siblings: limits.max_siblings,
            max_set_bytes: limits.max_set_bytes,
            budget: limits.max_peer_message() / 2,
            clock,
        }
    }

    /// Keys this node handed off to their owners and dropped: hints
    /// delivered, among others.
    pub fn handed_off(&self, keys: u64) {
        let delivered = (keys as usize).min(self.hints.load(Ordering::Relaxed));
        self.hints.fetch_sub(delivered, Ordering::Relaxed);
        metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "delivered")
            .increment(delivered as u64);
    }

    /// The channel of this replica's changes ([`events`]).
    pub fn events(&self) -> &events::Events {
        &self.events
    }

    /// Waits until `pending`, a change of `key`, is applied and the store
    /// has said whether it is durable, tells the subscribers, and answers
    /// with its durability.
    async fn publish(&self, key: &str, pending: Pending, cause: events::Cause) -> Result<()> {
        // Nothing here needs the set before it is durable: waiting for both
        // at once wakes this task once per write instead of twice (a wake-up
        // costs more CPU than the merge on shared cores, issue 21).
        let (set, durable) = pending.settled().await?;
        self.events.publish(key, &set, cause);
        durable
    }

    /// Merges a set another node sent into `key`, tells the subscribers,
    /// and returns once it is stored.
    async fn merge_and_publish(
        &self,
        key: String,
        set: SiblingSet,
        cause: events::Cause,
    ) -> Result<()> {
        let pending = self.merge(key.clone(), set, cause)?;
        self.publish(&key, pending, cause).await
    }

    /// Refuses every later write: a leaving node's last step before its
    /// final handoff, so that nothing lands after it.
    pub fn close_for_writes(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Hints held for unreachable owners (approximate).
    pub fn hints_pending(&self) -> usize {
        self.hints.load(Ordering::Relaxed)
    }

    /// Mints a dot for a client write and stores it: the dot, the new
    /// sibling set as soon as it is computed (with its bytes as stored,
    /// when the store hands them back), and what resolves once it is
    /// durable (the coordinator sends the set on meanwhile). A retry of a
    /// write this replica holds (same request id) answers with its first
    /// dot and stores nothing new.
    pub async fn coordinate(
        &self,
        key: String,
        context: Context,
        content: Content,
        request_id: Option<String>,
    ) -> Result<Minted> {
        self.coordinate_until(key, context, content, request_id, Until::Applied)
            .await
    }

    /// As [`Replica::coordinate`], answered when `until` says: once the
    /// set is computed, or once it is also durable here (its `durable`
    /// then ready), for a caller with no other replica to send the set to
    /// meanwhile, whose task then wakes once, not twice.
    pub async fn coordinate_until(
        &self,
        key: String,
        context: Context,
        content: Content,
        request_id: Option<String>,
        until: Until,
    ) -> Result<Minted> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        if request_id
            .as_ref()
            .is_some_and(|id| id.len() > MAX_REQUEST_RECORD)
        {
            return Err(Error::Protocol("a request id over 145 bytes".into()));
        }
        let now = self.clock.now_ms();
        let expiry = self.clock.expiry_ms();
        let expired_before = now.saturating_sub(self.idempotency_ttl_ms);
        let id = request_id.clone();
        let identity = Arc::clone(&self.identity);
        let (max_siblings, max_set_bytes) = (self.max_siblings, self.max_set_bytes);
        let warn_siblings = self.warn_siblings;
        let key_for_warning = key.clone();
        // The dot minted, for the answer (a retry mints none).
        let minted: Arc<parking_lot::Mutex<Option<Dot>>> = Arc::default();
        let minted_here = Arc::clone(&minted);
        let mint_and_write = move |current: Option<SiblingSet>| {
            let mut set = current.unwrap_or_default();
            set.expire_requests(expired_before);
            set.expire(expiry);
            if let Some(id) = &id
                && let Some(first) = set.request(id, expired_before)
            {
                if first.reused_by(id) {
                    let key = crate::version::request_key(id).to_string();
                    return Err(Error::IdempotencyKeyReused(key));
                }
                // A retry of a write this replica already holds.
                return Ok(set);
            }
            // A key's type is fixed by its first write. An update of a
            // CRDT key applies to the fold of its siblings here.
            let fold = match &content {
                Content::Update(op) => Some(set.crdt_for(op.update.kind())?),
                // A CRDT state is only ever made here, by applying an
                // update; a coordinator (a peer) that sends one is refused.
                Content::Crdt(_) => {
                    return Err(Error::Protocol(
                        "a write carries a CRDT state; a coordinator sends updates".into(),
                    ));
                }
                _ => {
                    set.check_plain()?;
                    None
                }
            };
            let dot = identity.mint(|actor| set.min_counter(&context, actor));
            *minted_here.lock() = Some(dot.clone());
            match (fold, content) {
                (Some(mut state), Content::Update(op)) => {
                    // Applied as the actor that mints the dot, on top of
                    // everything this copy holds (the fold), and written
                    // over all of it: the key keeps one sibling here.
                    state.apply(&op.update, &dot.actor, &op.seen)?;
                    let folded = Context::read(set.context().clone());
                    set.write(&folded, dot.clone(), Content::Crdt(state));
                }
                (_, content) => set.write(&context, dot.clone(), content),
            }
            if let Some(id) = &id {
                set.record_request(id, dot, now);
            }
            if set.siblings().len() > warn_siblings {
                warn_of_siblings(&key_for_warning, set.siblings().len());
            }
            if set.siblings().len() > max_siblings {
                return Err(Error::TooManySiblings {
                    count: set.siblings().len(),
                    max: max_siblings,
                });
            }
            if set.value_bytes() > max_set_bytes {
                return Err(Error::SiblingsTooLarge {
                    bytes: set.value_bytes(),
                    max: max_set_bytes,
                });
            }
            Ok(set)
        };
        let pending = self
            .store
            .update_logged(&key, Box::new(mint_and_write), Vec::new());
        let (set, bytes, durable) = match until {
            Until::Durable => pending.settled_with_bytes().await?,
            Until::Applied => pending.applied_with_bytes().await?,
        };
        // A retry answers with its first attempt's dot.
        let first = request_id
            .as_deref()
            .and_then(|id| set.request(id, expired_before))
            .map(|r| r.dot.clone());
        let dot = first.or_else(|| minted.lock().take()).ok_or_else(|| {
            Error::Storage("the store applied the write without minting it".into())
        })?;
        self.events.publish(&key, &set, events::Cause::Client);
        Ok(Minted {
            dot,
            set,
            encoded: bytes.map(rpc::EncodedSet::stored),
            durable,
        })
    }

    fn closed_error(&self) -> Error {
        Error::Unavailable {
            node: self.identity.actor().node,
            reason: "this node has left the ring and takes no more writes".into(),
        }
    }

    /// The actor this node mints as now.
    pub fn actor(&self) -> crate::version::Actor {
        self.identity.actor()
    }

    /// Drops each key whose set is still the one handed off to its new
    /// owners; returns how many. Dropping a copy that holds writes this
    /// node's actor minted would leave it minting on top of a copy that
    /// lacks them (a later write would claim, and delete, them): the actor
    /// is retired first.
    pub async fn release(&self, entries: Vec<(String, SiblingSet)>) -> u64 {
        let me = self.identity.actor();
        if let Some((key, _)) = entries.iter().find(|(_, set)| set.context().get(&me) > 0) {
            let detail = format!(
                "dropping `{}` (and maybe more) after handing it off",
                key.chars().take(128).collect::<String>()
            );
            self.identity.retire("released", &detail);
        }
        let pending: Vec<_> = entries
            .into_iter()
            .map(|(key, sent)| {
                let remove = move |current: Option<SiblingSet>| match current {
                    Some(now) if now == sent => Ok(SiblingSet::default()),
                    _ => Err(Error::Storage("changed since the handoff".into())),
                };
                self.store.update(&key, Box::new(remove))
            })
            .collect();
        let mut released = 0;
        for p in pending {
            if p.wait().await.is_ok() {
                released += 1;
            }
        }
        released
    }

    /// What this node itself stores for `key`.
    pub fn stored(&self, key: &str) -> Result<Option<SiblingSet>> {
        self.store.get(key)
    }

    /// Idempotency records older than this (ms since the Unix epoch) are
    /// expired: a retry after it is a new write.
    /// What values expire by here, in ms since the Unix epoch: the
    /// fastest clock this node has heard from ([`Clock::expiry_ms`]).
    pub fn now_ms(&self) -> u64 {
        self.clock.expiry_ms()
    }

    pub fn idempotency_cutoff(&self) -> u64 {
        self.clock.now_ms().saturating_sub(self.idempotency_ttl_ms)
    }

    /// The most bytes of sets one peer message should carry (handoff,
    /// repair, fetch answers): half the peer message limit.
    pub fn message_budget(&self) -> usize {
        self.budget
    }

    /// Whether this replica's acknowledgements mean durable (fsynced).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// Queues the merge of a set another node sent, logged as a change
    /// when `cause` brings a write this replica takes part in
    /// ([`events::Cause::is_logged`]).
    fn merge(&self, key: String, set: SiblingSet, cause: events::Cause) -> Result<Pending> {
        if !set.is_well_formed() {
            return Err(Error::Protocol(format!(
                "the sibling set sent for `{key}` breaks its invariants"
            )));
        }
        let identity = Arc::clone(&self.identity);
        let now = self.clock.expiry_ms();
        let expired_before = self.idempotency_cutoff();
        let name = key.clone();
        let sent = cause
            .is_logged()
            .then(|| crate::store::changes::dots_of(Some(&set)));
        let merge = move |current: Option<SiblingSet>| {
            let mut local = current.unwrap_or_default();
            // One of this actor's own writes that the local copy lacks: the
            // node lost it, and must not mint on top of the gap (Riak
            // learned in 2017 to check for amnesia on writes a replica does
            // not coordinate too).
            identity.check_amnesia(&name, local.context(), set.context());
            local.merge(&set);
            // Records this replica expired stay expired, whoever still
            // holds them: the TTL holds cluster-wide. So do values.
            local.expire_requests(expired_before);
            local.expire(now);
            Ok(local)
        };
        Ok(match sent {
            Some(sent) => self.store.update_logged(&key, Box::new(merge), sent),
            None => self.store.update(&key, Box::new(merge)),
        })
    }
}

/// When a mint answers: once its set is computed, or once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    Applied,
    Durable,
}

/// A client write minted and stored here ([`Replica::coordinate`]).
pub struct Minted {
    pub dot: Dot,
    /// The key's new sibling set, as soon as it is computed.
    pub set: SiblingSet,
    /// The set's bytes as the store wrote them, when it hands them back:
    /// the coordinator sends these instead of encoding the set again.
    pub encoded: Option<rpc::EncodedSet>,
    /// Resolves once the set is durable here.
    pub durable: Durable,
}

/// A key with many siblings: clients are writing without contexts, or not
/// resolving what they read. Logged and counted, never refused here.
fn warn_of_siblings(key: &str, count: usize) {
    metrics::counter!(crate::metrics::SIBLING_WARNINGS_TOTAL).increment(1);
    tracing::warn!(
        key = %key.chars().take(128).collect::<String>(),
        siblings = count,
        "a key holds many siblings; clients should read it and write with its context"
    );
}

#[cfg(test)]
mod tests;
