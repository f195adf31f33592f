//! The replica: what a node does with the reads and writes addressed to
//! its store ([`rpc`]: the messages and their answers).
//!
//! It owns the node's store and dot minter. Writes are answered only once
//! durable, so an acknowledgement from a replica means the data survives a
//! crash of that replica. [`Replica::coordinate`] is the one exception, for
//! this node's own coordinator: it hands back the minted set before the
//! fsync, with what says when the fsync is done.

pub mod events;
pub mod rpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::clock::Clock;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::store::{Durable, Identity, Pending, Store};
use crate::version::{Content, Context, Dot, MAX_REQUEST_ID, SiblingSet};

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
        let pending = self.merge(key.clone(), set)?;
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
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        if request_id
            .as_ref()
            .is_some_and(|id| id.len() > MAX_REQUEST_ID)
        {
            return Err(Error::Protocol("a request id over 128 bytes".into()));
        }
        let now = self.clock.now_ms();
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
            if id
                .as_ref()
                .is_some_and(|id| set.request(id, expired_before).is_some())
            {
                // A retry of a write this replica already holds.
                return Ok(set);
            }
            let dot = identity.mint(|actor| set.min_counter(&context, actor));
            *minted_here.lock() = Some(dot.clone());
            set.write(&context, dot.clone(), content);
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
        let (set, bytes, durable) = self
            .store
            .update(&key, Box::new(mint_and_write))
            .applied_with_bytes()
            .await?;
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

    /// Queues the merge of a set another node sent.
    fn merge(&self, key: String, set: SiblingSet) -> Result<Pending> {
        if !set.is_well_formed() {
            return Err(Error::Protocol(format!(
                "the sibling set sent for `{key}` breaks its invariants"
            )));
        }
        let identity = Arc::clone(&self.identity);
        let expired_before = self.idempotency_cutoff();
        let name = key.clone();
        let merge = move |current: Option<SiblingSet>| {
            let mut local = current.unwrap_or_default();
            // One of this actor's own writes that the local copy lacks: the
            // node lost it, and must not mint on top of the gap (Riak
            // learned in 2017 to check for amnesia on writes a replica does
            // not coordinate too).
            identity.check_amnesia(&name, local.context(), set.context());
            local.merge(&set);
            // Records this replica expired stay expired, whoever still
            // holds them: the TTL holds cluster-wide.
            local.expire_requests(expired_before);
            Ok(local)
        };
        Ok(self.store.update(&key, Box::new(merge)))
    }
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
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::MemoryStore;
    use crate::version::Actor;

    fn replica() -> Replica {
        let store = Arc::new(MemoryStore::new());
        Replica::new(
            store,
            Arc::new(Identity::ephemeral("n1")),
            &Limits::default(),
            true,
            Clock::system(),
        )
    }

    fn set_of(value: &str) -> SiblingSet {
        let mut set = SiblingSet::new();
        let dot = Dot::new(Actor::new("n9", 1), 1);
        let content = Content::Value(Bytes::from(value.to_string()));
        set.write(&Context::default(), dot, content);
        set
    }

    /// A batch of the replica's frames is answered in order, one reply per
    /// frame; a frame of a service that may not travel in a batch fails
    /// alone, and nothing of a batch over the limit runs.
    #[tokio::test]
    async fn a_batch_is_answered_in_order_one_reply_per_frame() {
        use crate::peer::batch::{Batch, Framed, MAX_BATCH};
        use crate::peer::rpc::reply;
        use crate::peer::{Frame, Rpc, Services};
        let replica = Arc::new(replica());
        let services = Services::new();
        replica.serve(&services);
        let framed = |frame: Frame| Framed {
            service: frame.service.to_string(),
            version: frame.version,
            body: frame.body,
        };
        let merge = rpc::Merge {
            key: "a".into(),
            set: rpc::EncodedSet::encode(&set_of("1")).expect("encode"),
        };
        let read = |key: &str| rpc::Read { key: key.into() };
        let frames = vec![
            framed(Frame::of(&merge).expect("encode")),
            framed(Frame::of(&read("a")).expect("encode")),
            framed(Frame::of(&read("b")).expect("encode")),
            framed(Frame::of(&rpc::Fetch(vec!["a".into()])).expect("encode")),
        ];
        let run = |frames: Vec<Framed>| {
            let frame = Frame::of(&Batch(frames)).expect("encode");
            crate::peer::dispatch(&services, Batch::SERVICE.name, 1, false, frame.body)
        };
        let bytes = run(frames).expect("a batch").await.expect("answered");
        let replies = reply::<Batch>("n1", &bytes).expect("replies");
        assert_eq!(replies.len(), 4);
        let merged = reply::<rpc::Merge>("n1", replies[0].as_ref().expect("merged"));
        assert_eq!(merged.expect("merged"), rpc::Merged { durable: true });
        // Frames in one batch run concurrently: the read of `a` may or may
        // not see the merge, but a read after the batch does.
        let b = reply::<rpc::Read>("n1", replies[2].as_ref().expect("read b"));
        assert_eq!(b.expect("read b"), None);
        let refused = replies[3].as_ref().expect_err("fetch is not batchable");
        assert!(refused.message.contains("batch"), "{refused:?}");
        assert_eq!(replica.stored("a").expect("get"), Some(set_of("1")));
        // A read from a peer is answered with the stored bytes, a read from
        // this node with the set: the same answer either way.
        let frame = Frame::of(&read("a")).expect("encode");
        let bytes = services
            .dispatch(frame.service, frame.version, false, frame.body)
            .expect("dispatched")
            .await
            .expect("answered");
        let local = services.local::<rpc::Read>().expect("registered");
        assert_eq!(
            reply::<rpc::Read>("n1", &bytes).expect("read a"),
            local(read("a")).await.expect("read a here")
        );
        assert_eq!(
            reply::<rpc::Read>("n1", &bytes).expect("read a"),
            Some(set_of("1"))
        );

        let too_many = vec![framed(Frame::of(&read("a")).expect("encode")); MAX_BATCH + 1];
        let e = run(too_many).err().expect("refused whole");
        assert!(e.to_string().contains("at most"), "{e}");
        let merge_c = rpc::v1::Merge {
            key: "c".into(),
            set: set_of("1"),
        };
        let mut too_many = vec![framed(Frame::of(&merge_c).expect("encode"))];
        too_many.extend(vec![
            framed(Frame::of(&read("a")).expect("encode"));
            MAX_BATCH
        ]);
        assert!(run(too_many).is_err());
        assert_eq!(
            replica.stored("c").expect("get"),
            None,
            "a refused batch ran"
        );
    }

    /// Issue 19, hole 6: a record another replica still holds does not
    /// come back through a merge once it has expired; a fresh one does.
    #[tokio::test]
    async fn an_expired_idempotency_record_does_not_grow_back_through_a_merge() {
        let replica = replica();
        let mut set = set_of("1");
        let dot = set.siblings()[0].dot.clone();
        set.record_request("old", dot.clone(), 1);
        set.record_request("new", dot, crate::clock::system_ms());
        replica
            .handoff(vec![("k".into(), set)])
            .await
            .expect("merge");
        let stored = replica.stored("k").expect("get").expect("stored");
        assert!(
            stored.request("old", 0).is_none(),
            "the expired record came back"
        );
        assert!(stored.request("new", 0).is_some());
    }

    /// A node hands a key off (the ring moved it away) and drops its copy;
    /// the ring moves it back and the node coordinates a blind write before
    /// the key's data returns. Minted by the same actor on top of the empty
    /// copy, the new dot would claim the first write, which the other
    /// replicas hold, and delete it there: the actor is retired on release.
    #[tokio::test]
    async fn a_write_after_dropping_a_handed_off_key_never_claims_the_dropped_writes() {
        let replica = replica();
        let value = |v: &str| Content::Value(Bytes::from(v.to_string()));
        let Minted {
            set: first,
            durable,
            ..
        } = replica
            .coordinate("k".into(), Context::default(), value("1"), None)
            .await
            .expect("first write");
        durable.wait().await.expect("durable");
        let elsewhere = first.clone();
        assert_eq!(replica.release(vec![("k".into(), first)]).await, 1);
        assert_eq!(replica.stored("k").expect("get"), None);
        let Minted { set: second, .. } = replica
            .coordinate("k".into(), Context::default(), value("2"), None)
            .await
            .expect("second write");
        let mut merged = elsewhere;
        merged.merge(&second);
        assert_eq!(
            merged.siblings().len(),
            2,
            "the second write deleted the first: {merged:?}"
        );
    }

    /// Every change the replica commits reaches every subscriber, in
    /// order, with its cause and the set the key holds after it.
    #[tokio::test]
    async fn every_committed_change_is_published_with_its_cause() {
        use crate::peer::Services;
        use events::{Cause, Event, Subscriber};

        #[derive(Default)]
        struct Heard(parking_lot::Mutex<Vec<(String, Cause, SiblingSet)>>);
        impl Subscriber for Heard {
            fn changed(&self, e: &Event<'_>) {
                self.0.lock().push((e.key.into(), e.cause, e.set.clone()));
            }
        }

        let replica = Arc::new(replica());
        let (first, second) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
        replica.events().subscribe(first.clone());
        replica.events().subscribe(second.clone());
        let services = Services::new();
        replica.serve(&services);
        let value = Content::Value(Bytes::from_static(b"1"));
        let Minted { durable, .. } = replica
            .coordinate("a".into(), Context::default(), value, None)
            .await
            .expect("coordinated");
        durable.wait().await.expect("durable");
        let merge = services.local::<rpc::Merge>().expect("served");
        let encoded = rpc::EncodedSet::encode(&set_of("2")).expect("encode");
        merge(rpc::Merge {
            key: "b".into(),
            set: encoded,
        })
        .await
        .expect("merged");
        let hint = services.local::<rpc::Hint>().expect("served");
        hint(rpc::Hint {
            owner: "n3".into(),
            key: "c".into(),
            set: set_of("3"),
        })
        .await
        .expect("hinted");
        replica
            .handoff(vec![("d".into(), set_of("4"))])
            .await
            .expect("handed off");
        replica
            .purge(vec![("d".into(), set_of("4"))])
            .await
            .expect("purged");
        let causes: Vec<(String, Cause)> = first
            .0
            .lock()
            .iter()
            .map(|(k, c, _)| (k.clone(), *c))
            .collect();
        let expected = [
            ("a", Cause::Client),
            ("b", Cause::Merge),
            ("c", Cause::Hint),
            ("d", Cause::Handoff),
            ("d", Cause::Purge),
        ];
        assert_eq!(
            causes,
            expected.map(|(k, c)| (k.to_string(), c)).to_vec(),
            "every change, in order"
        );
        for (key, _, set) in first.0.lock().iter() {
            assert_eq!(
                replica.stored(key).expect("get").unwrap_or_default(),
                *set,
                "{key}: the set published is the set stored"
            );
        }
        assert_eq!(first.0.lock().len(), second.0.lock().len());
    }

    /// A fetch answers as many sets as fit half the peer message limit
    /// (at least one), so its reply never passes the limit the asker reads
    /// replies with; `by_bytes` cuts a repair or handoff the same way.
    #[tokio::test]
    async fn a_fetch_answers_a_prefix_within_the_message_budget() {
        use crate::peer::Services;
        let replica = Arc::new(replica());
        let budget = replica.message_budget();
        assert_eq!(budget, Limits::default().max_peer_message() / 2);
        let big = "x".repeat(1 << 20);
        let keys: Vec<String> = (0..40).map(|i| format!("big-{i}")).collect();
        let entries: Vec<(String, SiblingSet)> =
            keys.iter().map(|k| (k.clone(), set_of(&big))).collect();
        let runs = rpc::by_bytes(entries.clone(), budget);
        assert!(runs.len() >= 2, "40 MiB in one run of {budget} bytes");
        assert!(runs.iter().all(|r| !r.is_empty()));
        let sizes: Vec<usize> = runs
            .iter()
            .map(|r| r.iter().map(|(_, s)| s.value_bytes()).sum())
            .collect();
        assert!(sizes.iter().all(|&b| b <= budget), "{sizes:?}");
        assert_eq!(
            runs.concat(),
            entries,
            "by_bytes kept every entry, in order"
        );
        let alone = rpc::by_bytes(entries[..2].to_vec(), 10);
        assert_eq!(alone.len(), 2, "a set over the budget is a run of its own");
        for run in runs {
            replica.handoff(run).await.expect("stored");
        }
        let services = Services::new();
        replica.serve(&services);
        let fetch = services.local::<rpc::Fetch>().expect("served");
        let answered = fetch(rpc::Fetch(keys.clone())).await.expect("fetched");
        assert!(
            !answered.is_empty() && answered.len() < keys.len(),
            "{} of 40 sets of 1 MiB in one answer within {budget} bytes",
            answered.len()
        );
        let bytes: usize = answered.iter().flatten().map(|s| s.value_bytes()).sum();
        assert!(bytes <= budget, "{bytes} bytes answered");
    }
}
