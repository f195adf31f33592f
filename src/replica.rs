//! The replica: what a node does with a [`PeerRequest`] addressed to it.
//!
//! It owns the node's store and dot minter. Writes are answered only once
//! durable, so an acknowledgement from a replica means the data survives a
//! crash of that replica. [`Replica::coordinate`] is the one exception, for
//! this node's own coordinator: it hands back the minted set before the
//! fsync, with what says when the fsync is done. A [`PeerRequest::Batch`]
//! runs its requests concurrently and answers each in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::clock::Clock;
use crate::config::{Limits, MAX_HANDOFF_BATCH};
use crate::error::{Error, Result};
use crate::peer::{PeerRequest, PeerResponse, WireError, batch};
use crate::store::{Durable, Identity, Pending, Store};
use crate::version::{Content, Context, Dot, MAX_REQUEST_ID, SiblingSet};
use futures_util::future::join_all;

/// Told of every write this replica coordinates (mints a dot for), with
/// the set it left: operation-transfer anti-entropy logs them as ops.
pub trait WriteLog: Send + Sync + 'static {
    fn local_write(&self, key: &str, set: &SiblingSet);
}

pub struct Replica {
    store: Arc<dyn Store>,
    /// Where coordinated writes are logged, once set.
    writes: std::sync::OnceLock<Arc<dyn WriteLog>>,
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
            writes: std::sync::OnceLock::new(),
            closed: AtomicBool::new(false),
            durable,
            identity,
            warn_siblings: limits.warn_siblings,
            idempotency_ttl_ms: limits.idempotency_ttl_ms,
            hints: AtomicUsize::new(0),
            max_hints: limits.max_hints,
            max_siblings: limits.max_siblings,
            max_set_bytes: limits.max_set_bytes,
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

    /// Logs every later coordinated write to `log` (a second is ignored).
    pub fn log_writes_to(&self, log: Arc<dyn WriteLog>) {
        let _ = self.writes.set(log);
    }

    /// Refuses every later write: a leaving node's last step before its
    /// final handoff, so that nothing lands after it.
    pub fn close_for_writes(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub async fn handle(&self, request: PeerRequest) -> Result<PeerResponse> {
        let (op, started) = (request.kind(), std::time::Instant::now());
        let result = match request {
            PeerRequest::Batch(requests) => self.handle_batch(requests).await,
            request => self.handle_one(request).await,
        };
        metrics::histogram!(crate::metrics::REPLICA_DURATION_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Hints held for unreachable owners (approximate).
    pub fn hints_pending(&self) -> usize {
        self.hints.load(Ordering::Relaxed)
    }

    /// Runs a batch's requests concurrently, so that its writes share one
    /// group commit, and answers each in order.
    async fn handle_batch(&self, requests: Vec<PeerRequest>) -> Result<PeerResponse> {
        if requests.len() > batch::MAX_BATCH {
            return Err(Error::Protocol(format!(
                "a batch of {} requests; at most {} are taken",
                requests.len(),
                batch::MAX_BATCH
            )));
        }
        if requests.iter().any(|r| !r.is_batchable()) {
            return Err(Error::Protocol(
                "a batch may hold only reads, merges and hints".into(),
            ));
        }
        let replies = join_all(requests.into_iter().map(|r| self.handle_one(r))).await;
        Ok(PeerResponse::Batch(
            replies
                .into_iter()
                .map(|r| r.map_err(|e| WireError::from_error(&e)))
                .collect(),
        ))
    }

    async fn handle_one(&self, request: PeerRequest) -> Result<PeerResponse> {
        // `coordinate` checks for itself: this node's coordinator calls it directly.
        let writes = matches!(
            request,
            PeerRequest::Merge { .. }
                | PeerRequest::Hint { .. }
                | PeerRequest::Handoff(_)
                | PeerRequest::Purge(_)
        );
        if writes && self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        match request {
            PeerRequest::Read { key } => Ok(PeerResponse::Value(self.store.get(&key)?)),
            PeerRequest::Coordinate {
                key,
                context,
                content,
                request_id,
            } => {
                let (dot, set, durable) =
                    self.coordinate(key, context, content, request_id).await?;
                // Minted and committed is minted: a failed fsync is not an
                // error here (the coordinator would have another replica
                // mint the write again), only a copy this replica lacks.
                // A failed commit returned an error above: the set was
                // never handed out, so the write exists nowhere.
                let kept = durable
                    .wait()
                    .await
                    .map(|()| self.durable)
                    .map_err(|e| e.to_string());
                Ok(PeerResponse::Coordinated { dot, set, kept })
            }
            PeerRequest::Merge { key, set } => {
                self.merge(key, set)?.wait().await?;
                Ok(PeerResponse::Merged {
                    durable: self.durable,
                })
            }
            PeerRequest::Hint { owner, key, set } => {
                let held = self.hints.load(Ordering::Relaxed);
                if held >= self.max_hints {
                    metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "dropped")
                        .increment(1);
                    tracing::warn!(
                        held,
                        max = self.max_hints,
                        %owner,
                        "hint store full (limits.max_hints); refusing a hint"
                    );
                    return Err(Error::Unavailable {
                        node: self.identity.actor().node,
                        reason: format!("holds {held} hints, the limit (limits.max_hints)"),
                    });
                }
                self.merge(key, set)?.wait().await?;
                self.hints.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "queued").increment(1);
                Ok(PeerResponse::Merged {
                    durable: self.durable,
                })
            }
            PeerRequest::Handoff(entries) => {
                check_batch(entries.len())?;
                // Queue every merge before waiting, so they share fsyncs.
                let pending = entries
                    .into_iter()
                    .map(|(key, set)| self.merge(key, set))
                    .collect::<Result<Vec<_>>>()?;
                for p in pending {
                    p.wait().await?;
                }
                Ok(PeerResponse::Merged {
                    durable: self.durable,
                })
            }
            PeerRequest::Purge(entries) => {
                check_batch(entries.len())?;
                let pending: Vec<Pending> = entries
                    .into_iter()
                    .map(|(key, expected)| {
                        self.store.update(
                            &key,
                            Box::new(move |current| {
                                Ok(match current {
                                    Some(set) if set == expected && set.is_tombstoned() => {
                                        set.grave()
                                    }
                                    other => other.unwrap_or_default(),
                                })
                            }),
                        )
                    })
                    .collect();
                for p in pending {
                    p.wait().await?;
                }
                Ok(PeerResponse::Merged {
                    durable: self.durable,
                })
            }
            PeerRequest::Fetch(keys) => {
                check_batch(keys.len())?;
                let sets = keys
                    .iter()
                    .map(|k| self.store.get(k))
                    .collect::<Result<Vec<_>>>()?;
                Ok(PeerResponse::Sets(sets))
            }
            other => Err(Error::Protocol(format!(
                "not a replica request: {}",
                format!("{other:?}").chars().take(40).collect::<String>()
            ))),
        }
    }

    /// Mints a dot for a client write and stores it: the dot, the new
    /// sibling set as soon as it is computed, and what resolves once it is
    /// durable (the coordinator sends the set on meanwhile). A retry of a
    /// write this replica holds (same request id) answers with its first
    /// dot and stores nothing new.
    pub async fn coordinate(
        &self,
        key: String,
        context: Context,
        content: Content,
        request_id: Option<String>,
    ) -> Result<(Dot, SiblingSet, Durable)> {
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
        let (set, durable) = self
            .store
            .update(&key, Box::new(mint_and_write))
            .applied()
            .await?;
        // A retry answers with its first attempt's dot.
        let first = request_id
            .as_deref()
            .and_then(|id| set.request(id, expired_before))
            .map(|r| r.dot.clone());
        let dot = first.or_else(|| minted.lock().take()).ok_or_else(|| {
            Error::Storage("the store applied the write without minting it".into())
        })?;
        if let Some(log) = self.writes.get() {
            log.local_write(&key, &set);
        }
        Ok((dot, set, durable))
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

fn check_batch(len: usize) -> Result<()> {
    if len > MAX_HANDOFF_BATCH {
        return Err(Error::Protocol(format!(
            "a batch of {len} keys; at most {MAX_HANDOFF_BATCH}"
        )));
    }
    Ok(())
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

    #[tokio::test]
    async fn a_batch_is_answered_in_order_one_reply_per_request() {
        let replica = replica();
        let batch = PeerRequest::Batch(vec![
            PeerRequest::Merge {
                key: "a".into(),
                set: set_of("1"),
            },
            PeerRequest::Read { key: "a".into() },
            PeerRequest::Read { key: "b".into() },
        ]);
        let PeerResponse::Batch(replies) = replica.handle(batch).await.expect("batch") else {
            panic!("not a batch reply");
        };
        assert_eq!(replies.len(), 3);
        assert!(matches!(
            replies[0],
            Ok(PeerResponse::Merged { durable: true })
        ));
        // Requests in one batch run concurrently: the read of `a` may or
        // may not see the merge, but a read after the batch does.
        assert!(matches!(replies[1], Ok(PeerResponse::Value(_))));
        assert_eq!(replies[2], Ok(PeerResponse::Value(None)));
        let after = replica.handle(PeerRequest::Read { key: "a".into() }).await;
        assert_eq!(after.expect("read"), PeerResponse::Value(Some(set_of("1"))));
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
        let merge = PeerRequest::Merge {
            key: "k".into(),
            set,
        };
        replica.handle(merge).await.expect("merge");
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
        let (_, first, durable) = replica
            .coordinate("k".into(), Context::default(), value("1"), None)
            .await
            .expect("first write");
        durable.wait().await.expect("durable");
        let elsewhere = first.clone();
        assert_eq!(replica.release(vec![("k".into(), first)]).await, 1);
        assert_eq!(replica.stored("k").expect("get"), None);
        let (_, second, _) = replica
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

    #[tokio::test]
    async fn a_batch_too_large_or_holding_other_requests_is_refused_whole() {
        let replica = replica();
        let reads = vec![PeerRequest::Read { key: "a".into() }; batch::MAX_BATCH + 1];
        let err = replica.handle(PeerRequest::Batch(reads)).await.unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        for inner in [
            PeerRequest::Fetch(vec!["a".into()]),
            PeerRequest::Batch(vec![]),
            PeerRequest::Coordinate {
                key: "a".into(),
                context: Context::default(),
                content: Content::Tombstone,
                request_id: None,
            },
        ] {
            let batch = PeerRequest::Batch(vec![PeerRequest::Read { key: "a".into() }, inner]);
            let err = replica.handle(batch).await.unwrap_err();
            assert!(
                err.to_string().contains("only reads, merges and hints"),
                "{err}"
            );
        }
        // Nothing of a refused batch ran.
        assert_eq!(replica.store.get("a").expect("get"), None);
    }
}
