//! The coordinator: the replica-facing side of one client request.
//!
//! A request that reaches a node outside the key's preference list is
//! forwarded once, to a replica found through the ring
//! ([`Cluster::find_replicas`]); the receiver coordinates it and never
//! forwards again. If no replica answers the forward, this node coordinates
//! itself: coordinating needs no local data, only the transport.
//!
//! A write goes to one replica of the preference list, this node when it is
//! one, which mints the dot and stores it (`Coordinate`); the resulting
//! sibling set is then merged into the other replicas (`Merge`) in
//! parallel, and the write is acknowledged once `w` replicas (the minting
//! one included) hold it, `pw` of them primaries and `dw` of them durably.
//! The remaining merges finish in the background. A read (`read.rs`) asks `r`
//! replicas (`Read`; this node first, then the others in random order so
//! reads spread), merges their answers with the one sibling merge and
//! returns. It asks the remaining replicas only when one of the first
//! fails, when none has answered within `cluster.speculative_read_ms`
//! (Cassandra's speculative retry), or when the answers have not seen the
//! client's context (session guarantees: the read waits until the merge
//! has seen all of it); `speculative_read_ms = 0` asks all N at once, as
//! Riak does. Asking `r` instead of N saves (N - r) calls per read, the
//! largest share of a read's cost. A [`Tally`] counts the answers; the
//! whole request is bounded by the client's deadline (`timeout_ms`), and
//! failing the quorum is a 503 that names the replicas that failed and why.
//! The client's [`Quorum`] travels with a forwarded request. A read whose
//! replies differ repairs the stale replicas in the background
//! (`read_repair.rs`); it repairs only the replicas it asked, and
//! anti-entropy reaches the rest.

mod calls;
pub mod condition;
pub mod coverage;
mod observe;
pub mod outbox;
pub mod quorum;
mod read;
mod read_repair;
mod replicate;
pub mod rpc;
pub mod scan;
pub mod tally;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::error::Elapsed;
use tokio::time::{Instant, timeout_at};

use crate::error::{Error, Result};
use crate::membership::{Cluster, Liveness};
use crate::metrics as m;
use crate::peer::{Rpc, Transport};
use crate::replica::rpc::{Coordinate, Coordinated, EncodedSet, Merged};
use crate::replica::{Replica, Until};
use crate::ring::position;
use crate::version::{Content, Context, Dot, SiblingSet};
use calls::Calls;
pub use condition::Condition;
use outbox::Outbox;
use quorum::Quorum;
use replicate::Replication;
use tally::{Outcome, Tally};

pub struct Coordinator {
    cluster: Arc<Cluster>,
    transport: Arc<dyn Transport>,
    /// This node's replica, which mints without a round trip.
    replica: Arc<Replica>,
    /// How long a read waits on the replicas it asked before asking the
    /// others; zero asks every replica at once.
    speculative_read: Duration,
    /// The token ranges of the ring a scan last covered, kept while the
    /// ring is the same one (`scan`).
    ranges: scan::RangesCache,
}

/// What a client writes to a key.
#[derive(Clone, Debug)]
pub struct Write {
    /// The context the client read (what the write supersedes).
    pub context: Context,
    pub content: Content,
    /// The client's `Idempotency-Key`, if it sent one.
    pub request_id: Option<String>,
    /// The outbox of the client batch the write is one of: its merges (and
    /// a conditional write's read) go to each replica with the batch's
    /// others (`outbox.rs`).
    pub outbox: Option<Arc<Outbox>>,
}

/// A write that its write quorum acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub dot: Dot,
    pub set: SiblingSet,
}

/// What a replica that minted a write answered: the dot, the set, and
/// whether it keeps its own copy (`Err`: it could not, and says why).
struct Minted {
    dot: Dot,
    set: SiblingSet,
    /// The set's bytes as the minting store wrote them, when minted here.
    encoded: Option<EncodedSet>,
    kept: std::result::Result<(), String>,
}

/// Forwards a request at most this many times (to the owner, then the next
/// nodes) before coordinating it here.
const FORWARD_TRIES: usize = 3;

impl Coordinator {
    pub fn new(cluster: Arc<Cluster>, replica: Arc<Replica>, speculative_read: Duration) -> Self {
        let transport = Arc::clone(cluster.transport());
        Coordinator {
            cluster,
            transport,
            replica,
            speculative_read,
            ranges: scan::RangesCache::default(),
        }
    }

    /// An outbox for the ops of one client batch (`outbox.rs`).
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(Arc::clone(&self.transport)))
    }

    /// A client write with the quorum it asked for, due by `deadline`.
    /// `forwarded` is true when another node sent it here.
    pub async fn write(
        &self,
        key: &str,
        write: Write,
        quorum: Quorum,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Written> {
        let replicas = self.cluster.routes().preference_list(key);
        if !forwarded && !replicas.iter().any(|r| r == self.cluster.me()) {
            let op = rpc::ForwardWrite {
                key: key.to_string(),
                context: write.context.clone(),
                content: write.content.clone(),
                quorum,
                timeout_ms: remaining_ms(deadline),
                request_id: write.request_id.clone(),
            };
            if let Some(result) = self.forward(key, op, false, deadline).await {
                return result;
            }
        }
        // A retry of a write the replicas already hold returns its first
        // outcome: look for the request id before minting anything.
        // The read overlaps every w replicas that acknowledged a first attempt.
        if let Some(id) = &write.request_id
            && let Ok(Some(set)) = self
                .coordinate_read(
                    key,
                    replicas.clone(),
                    overlapping(quorum),
                    deadline,
                    None,
                    None,
                )
                .await
            && let Some(first) = set.request(id, self.replica.idempotency_cutoff())
        {
            if first.reused_by(id) {
                return Err(reused(id));
            }
            let dot = first.dot.clone();
            let set = self
                .replicate_retry(key, replicas, set, quorum, deadline)
                .await?;
            return Ok(Written { dot, set });
        }
        let written = self.coordinate_write(key, replicas, write, quorum, deadline);
        observe::measured(self.cluster.me(), "write", written).await
    }

    /// A client write that goes ahead only if `condition` holds for the
    /// key's set as a read at the request's `r` finds it (`condition.rs`
    /// says what that does and does not promise). A refused write is a
    /// 412 and mints nothing. A retry of a write that was applied (its
    /// `Idempotency-Key` is on the set the check read) skips the check,
    /// which its own first attempt would now fail, and returns the first
    /// outcome from that set, never minting again; its read overlaps every
    /// `w` replicas that acknowledged the first attempt. Gives the context
    /// the write carried beside its outcome.
    pub async fn write_if(
        &self,
        key: &str,
        mut write: Write,
        condition: Option<&Condition>,
        quorum: Quorum,
        deadline: Instant,
    ) -> Result<(Written, Context)> {
        if let Some(condition) = condition {
            let read = match write.request_id {
                Some(_) => Quorum {
                    pr: quorum.pr,
                    ..overlapping(quorum)
                },
                None => quorum,
            };
            let current = self
                .read(key, read, deadline, None, false, write.outbox.as_deref())
                .await?;
            let cutoff = self.replica.idempotency_cutoff();
            let first = match (&write.request_id, &current) {
                (Some(id), Some(set)) => match set.request(id, cutoff) {
                    Some(r) if r.reused_by(id) => return Err(reused(id)),
                    Some(r) => Some(r.dot.clone()),
                    None => None,
                },
                _ => None,
            };
            if let (Some(dot), Some(set)) = (first, current.clone()) {
                // A retry of a write that was applied: its first outcome,
                // made to reach `w` replicas, and never a second mint.
                let replicas = self.cluster.routes().preference_list(key);
                let set = self
                    .replicate_retry(key, replicas, set, quorum, deadline)
                    .await?;
                let context = match condition {
                    Condition::Unchanged(given) => given.clone(),
                    _ => write.context,
                };
                return Ok((Written { dot, set }, context));
            }
            write.context = condition
                .check(current.as_ref(), write.context)
                .map_err(Error::PreconditionFailed)?;
        }
        let context = write.context.clone();
        let written = self.write(key, write, quorum, deadline, false).await?;
        Ok((written, context))
    }

    /// The merged sibling set of `key` over `r` replicas (`pr` of them
    /// primaries); `None` if none has it. With a `session` context, the
    /// answer has seen everything the context has: the read waits for more
    /// replicas if the first `r` have not, or fails with
    /// `session_not_satisfied`. `outbox`: the batch's, when the read is
    /// one of a client batch's (its first asks go with the batch's others).
    pub async fn read(
        &self,
        key: &str,
        quorum: Quorum,
        deadline: Instant,
        session: Option<Context>,
        forwarded: bool,
        outbox: Option<&Outbox>,
    ) -> Result<Option<SiblingSet>> {
        let replicas = self.cluster.routes().preference_list(key);
        if !forwarded && !replicas.iter().any(|r| r == self.cluster.me()) {
            let op = rpc::ForwardRead {
                key: key.to_string(),
                quorum,
                timeout_ms: remaining_ms(deadline),
                session: session.clone(),
            };
            if let Some(result) = self.forward(key, op, true, deadline).await {
                return result;
            }
        }
        let read = self.coordinate_read(key, replicas, quorum, deadline, session, outbox);
        observe::measured(self.cluster.me(), "read", read).await
    }

    /// Sends `op` to a replica. `None` when no replica could be reached
    /// (the caller then coordinates); an error a replica returned is the
    /// request's answer.
    async fn forward<R: Rpc + Clone>(
        &self,
        key: &str,
        op: R,
        is_read: bool,
        deadline: Instant,
    ) -> Option<Result<R::Reply>> {
        let (mut candidates, _) = self.cluster.find_replicas(position(key.as_bytes())).await;
        // Replicas the failure detector holds down are tried last.
        candidates.sort_by_key(|r| self.cluster.detector().liveness(r) == Liveness::Down);
        // A write that may have reached its target is not sent to another:
        // both could mint a dot for it, and one write would become two
        // siblings. A read can go anywhere.
        for to in candidates.into_iter().take(FORWARD_TRIES) {
            let call = self.transport.rpc(&to, op.clone());
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Err(e))
                    if matches!(e, Error::Unavailable { .. })
                        || is_read && matches!(e, Error::Indeterminate { .. }) =>
                {
                    tracing::debug!(node = %to, error = %e, "forward failed; trying the next node");
                    metrics::counter!(m::FORWARDS_TOTAL, "result" => "failed").increment(1);
                    self.cluster.routes().forward_failed(&to);
                }
                Ok(result) => {
                    metrics::counter!(m::FORWARDS_TOTAL, "result" => "ok").increment(1);
                    return Some(result);
                }
                Err(_) => {
                    return Some(Err(Error::Indeterminate {
                        node: to,
                        reason: "the forwarded request did not finish within timeout_ms".into(),
                    }));
                }
            }
        }
        None
    }

    async fn coordinate_write(
        &self,
        key: &str,
        mut replicas: Vec<String>,
        write: Write,
        quorum: Quorum,
        deadline: Instant,
    ) -> Result<Written> {
        let mut tally = Tally::new(
            quorum.need_to_write(),
            replicas.iter().map(|r| (r.clone(), true)),
        );
        // This node mints when it is a replica; else the first that answers,
        // trying those the failure detector holds down last.
        replicas.sort_by_key(|r| self.cluster.detector().liveness(r) == Liveness::Down);
        if let Some(at) = replicas.iter().position(|r| r == self.cluster.me()) {
            let me = replicas.remove(at);
            replicas.insert(0, me);
        }
        let mut calls = Calls::new(Arc::clone(&self.transport));
        // A write of a client batch holds the batch's merges back until it
        // has posted its own (`outbox.rs`).
        let outbox = write.outbox.as_ref().map(|o| (Arc::clone(o), o.minting()));
        let mut minted = None;
        // Replicas that must not get the set as a merge: their copy goes to
        // a fallback (they could not be reached, or could not keep it).
        let mut unreached: Vec<String> = Vec::new();
        while minted.is_none() && !replicas.is_empty() {
            let to = replicas.remove(0);
            // With no other replica to send the set to, nothing is
            // gained by having it before it is durable.
            let until = match replicas.is_empty() {
                true => Until::Durable,
                false => Until::Applied,
            };
            match self
                .mint(&to, key, &write, until, deadline, &mut calls, &mut tally)
                .await
            {
                Ok(Ok(Minted {
                    dot,
                    set,
                    encoded,
                    kept,
                })) => {
                    if let Err(why) = kept {
                        // It minted and handed the set on, but could not
                        // keep its own copy (a failed fsync): the
                        // write exists, once, and goes on to the others; the
                        // minter counts for nothing and gets a hint.
                        tally.fail(&to, why);
                        unreached.push(to);
                    }
                    minted = Some((dot, set, encoded));
                }
                // The client's own mistake (too many siblings): no other replica would differ.
                Ok(Err(e)) if !e.is_retryable() => return Err(e),
                // It may hold the write: another replica must not mint it
                // again (two dots, one write: a false sibling).
                Ok(Err(e @ Error::Indeterminate { .. })) => {
                    tally.fail(&to, e.to_string());
                    tally.fail_outstanding("not asked: the minting replica may hold the write");
                    break;
                }
                // Refused before minting (unreachable, leaving, a write the
                // store refused): nothing was minted, another replica may.
                Ok(Err(e)) => {
                    tally.fail(&to, e.to_string());
                    unreached.push(to);
                }
                // The deadline passed: `to` may hold the write, and no
                // other replica may mint it.
                Err(_) => {
                    tally.fail(&to, "no answer within timeout_ms");
                    tally.fail_outstanding("not asked before timeout_ms");
                    break;
                }
            }
        }
        let Some((dot, set, encoded)) = minted else {
            return Err(quorum_not_met(&tally));
        };
        let mut replication = Replication::new(
            key,
            set.clone(),
            encoded,
            calls,
            outbox,
            self.cluster.fallbacks(key),
        );
        self.replicate(&mut replication, &mut tally, replicas, unreached, deadline)
            .await;
        replication.finish_in_background();
        match tally.outcome() {
            Outcome::Done => Ok(Written { dot, set }),
            _ => Err(quorum_not_met(&tally)),
        }
    }

    /// Sends the write's set to `replicas` (a merge each; a hint instead
    /// for each of `unreached` and each replica the failure detector holds
    /// down), counts the answers until the quorum is decided, and leaves
    /// the rest to finish, and be hinted where they fail, in the
    /// background.
    async fn replicate(
        &self,
        replication: &mut Replication,
        tally: &mut Tally,
        replicas: Vec<String>,
        mut unreached: Vec<String>,
        deadline: Instant,
    ) {
        for to in replicas {
            // A primary the failure detector holds down gets no call that
            // would only time out: its copy goes straight to a fallback.
            if self.cluster.detector().liveness(&to) == Liveness::Down {
                let reason = match self.cluster.detector().last_failure(&to) {
                    Some(e) => format!(
                        "held down by the failure detector; this node's last call to it failed: {e}"
                    ),
                    None => "held down by the failure detector".to_string(),
                };
                tally.fail(&to, reason);
                unreached.push(to);
                continue;
            }
            replication.send(to);
        }
        // Sloppy quorum: a primary that cannot be reached has its copy sent,
        // with a hint naming it, to the next node along the ring.
        for owner in unreached {
            if let Some(fallback) = replication.hint(owner) {
                tally.add(&fallback, false);
            }
        }
        replication.count(tally, deadline).await;
    }

    /// A retry of a write whose first attempt the replicas hold (`set`
    /// records its request id): nothing is minted, but the set is merged
    /// into every replica and counted to the quorum the retry asks for, so
    /// the retry answers only once that quorum holds the write.
    async fn replicate_retry(
        &self,
        key: &str,
        replicas: Vec<String>,
        set: SiblingSet,
        quorum: Quorum,
        deadline: Instant,
    ) -> Result<SiblingSet> {
        let mut tally = Tally::new(
            quorum.need_to_write(),
            replicas.iter().map(|r| (r.clone(), true)),
        );
        let calls = Calls::new(Arc::clone(&self.transport));
        let mut replication = Replication::new(
            key,
            set.clone(),
            None,
            calls,
            None,
            self.cluster.fallbacks(key),
        );
        self.replicate(&mut replication, &mut tally, replicas, Vec::new(), deadline)
            .await;
        replication.finish_in_background();
        match tally.outcome() {
            Outcome::Done => Ok(set),
            _ => Err(quorum_not_met(&tally)),
        }
    }

    /// Has replica `to` mint the write's dot and store it. This node's own
    /// replica hands the new set back before it is durable, so the merges
    /// to the others overlap its fsync; its acknowledgement then arrives
    /// through `calls` like theirs. A remote replica acknowledges in its
    /// answer. `Err(Elapsed)` when the deadline passed first.
    #[allow(clippy::too_many_arguments)]
    async fn mint(
        &self,
        to: &str,
        key: &str,
        write: &Write,
        until: Until,
        deadline: Instant,
        calls: &mut Calls<Merged>,
        tally: &mut Tally,
    ) -> std::result::Result<Result<Minted>, Elapsed> {
        let (key, context, content, request_id) = (
            key.to_string(),
            write.context.clone(),
            write.content.clone(),
            write.request_id.clone(),
        );
        if to == self.cluster.me() {
            let minting = self
                .replica
                .coordinate_until(key, context, content, request_id, until);
            let crate::replica::Minted {
                dot,
                set,
                encoded,
                durable,
            } = match timeout_at(deadline, minting).await? {
                Ok(minted) => minted,
                Err(e) => return Ok(Err(e)),
            };
            let durable_ack = self.replica.is_durable();
            let own_ack = async move {
                durable.wait().await?;
                Ok(Merged {
                    durable: durable_ack,
                })
            };
            calls.add(to.to_string(), Box::pin(own_ack));
            return Ok(Ok(Minted {
                dot,
                set,
                encoded,
                kept: Ok(()),
            }));
        }
        let request = Coordinate {
            key,
            context,
            content,
            request_id,
        };
        let answer = timeout_at(deadline, self.transport.rpc(to, request)).await?;
        Ok(answer.map(|Coordinated { dot, set, kept }| {
            let kept = kept.map(|durable| tally.ack(to, durable));
            Minted {
                dot,
                set,
                encoded: None,
                kept,
            }
        }))
    }
}

/// A read quorum that overlaps every `w` replicas that acknowledged a
/// write (R + W > N): where a retry looks for its first attempt.
fn overlapping(quorum: Quorum) -> Quorum {
    Quorum {
        r: quorum.r.max(quorum.n + 1 - quorum.w.min(quorum.n)),
        pr: 0,
        ..quorum
    }
}

/// The 422 of a request id whose key names another request already.
fn reused(id: &str) -> Error {
    Error::IdempotencyKeyReused(crate::version::request_key(id).to_string())
}

/// Milliseconds left until `deadline` (at least 1).
fn remaining_ms(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    (left.as_millis() as u64).max(1)
}

fn quorum_not_met(tally: &Tally) -> Error {
    let need = tally.need();
    Error::QuorumNotMet {
        needed: need.acks.max(need.primaries).max(need.durable),
        acked: tally.acked().len(),
        primary_acked: tally.primary_acked(),
        failed: tally.failures().to_vec(),
    }
}
