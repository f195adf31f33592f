//! One read, coordinated: ask R replicas (this node first), merge what
//! they answer, widen to the rest on a failure, a slow answer or an unseen
//! session, and leave the late answers to read repair.

use std::sync::Arc;

use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::calls::Calls;
use super::outbox::Outbox;
use super::quorum::Quorum;
use super::read_repair;
use super::tally::{Need, Outcome, Tally};
use super::{Coordinator, quorum_not_met};
use crate::error::{Error, Result};
use crate::membership::Liveness;
use crate::metrics as m;
use crate::replica::rpc::Read;
use crate::version::{Context, SiblingSet};

impl Coordinator {
    /// The order a read asks `replicas` in: this node first (no round
    /// trip), then the others at random, so reads spread over the replicas,
    /// those the failure detector holds down last. The node's own seeded
    /// random source keeps a simulation replayable.
    pub(super) fn read_order(&self, mut replicas: Vec<String>) -> Vec<String> {
        replicas.shuffle(&mut *self.cluster.rng());
        let me = self.cluster.me();
        replicas.sort_by_cached_key(|r| {
            (
                r != me,
                self.cluster.detector().liveness(r) == Liveness::Down,
            )
        });
        replicas
    }

    pub(super) async fn coordinate_read(
        &self,
        key: &str,
        replicas: Vec<String>,
        quorum: Quorum,
        deadline: Instant,
        session: Option<Context>,
        outbox: Option<&Outbox>,
    ) -> Result<Option<SiblingSet>> {
        let need = Need {
            acks: quorum.r,
            primaries: quorum.pr,
            durable: 0,
        };
        let mut tally = Tally::new(need, replicas.iter().map(|r| (r.clone(), true)));
        let mut replies = Calls::new(Arc::clone(&self.transport));
        let mut unasked = self.read_order(replicas);
        let first = if self.speculative_read.is_zero() {
            unasked.len()
        } else {
            need.acks.max(need.primaries).min(unasked.len())
        };
        for to in unasked.drain(..first) {
            match outbox {
                // A read of a client batch: with the batch's other reads.
                Some(outbox) => {
                    let call = outbox.read(to.clone(), key.into());
                    replies.add(to, call);
                }
                None => replies.start(to, Read { key: key.into() }),
            }
        }
        let speculate_at = Instant::now() + self.speculative_read;
        let mut seen: Vec<read_repair::Reply> = Vec::new();
        let mut merged: Option<SiblingSet> = None;
        let satisfied = |merged: &Option<SiblingSet>| match (&session, merged) {
            (None, _) => true,
            (Some(ctx), Some(set)) => ctx.is_seen_by(set.context()),
            (Some(ctx), None) => ctx.is_empty(),
        };
        loop {
            match tally.outcome() {
                Outcome::Done if satisfied(&merged) => break,
                Outcome::Failed => return Err(quorum_not_met(&tally)),
                // Everyone asked answered and the session is not satisfied.
                _ if replies.outstanding() == 0 => {
                    ask_the_rest(key, &mut unasked, &mut replies, "session")
                }
                _ => {}
            }
            if replies.outstanding() == 0 {
                // Every replica answered; the quorum or the session is short.
                return Err(read_failed(&tally));
            }
            let wake = if unasked.is_empty() {
                deadline
            } else {
                speculate_at.min(deadline)
            };
            match tokio::time::timeout_at(wake, replies.recv()).await {
                Ok(Some((to, reply))) => match reply {
                    // A peer's set that breaks its invariants (a CRDT
                    // state a corrupt peer made) is not read, nor served.
                    Ok(Some(set)) if !set.is_well_formed() => {
                        tally.fail(&to, "its sibling set breaks its invariants");
                        ask_the_rest(key, &mut unasked, &mut replies, "failure");
                    }
                    Ok(set) => {
                        tally.ack(&to, false);
                        if let Some(set) = &set {
                            match &mut merged {
                                Some(m) => m.merge(set),
                                None => merged = Some(set.clone()),
                            }
                        }
                        seen.push((to, set));
                    }
                    Err(e) => {
                        tally.fail(&to, e.to_string());
                        ask_the_rest(key, &mut unasked, &mut replies, "failure");
                    }
                },
                Err(_) if Instant::now() < deadline => {
                    ask_the_rest(key, &mut unasked, &mut replies, "slow");
                }
                // The time is up (`recv` itself never ends while unsealed:
                // more calls may be started until the read is decided).
                Ok(None) | Err(_) => {
                    tally.fail_outstanding("no answer within timeout_ms");
                    return Err(read_failed(&tally));
                }
            }
        }
        replies.seal();
        // Values whose TTL has run out are gone for the client now, and
        // the repair drops them from the replicas that still hold them.
        let now = self.replica.now_ms();
        if let Some(set) = &mut merged {
            set.expire(now);
        }
        let transport = Arc::clone(&self.transport);
        read_repair::spawn(transport, key.to_string(), seen, replies, deadline, now);
        Ok(merged)
    }
}

/// Sends the read to the replicas not yet asked, counting why.
fn ask_the_rest(
    key: &str,
    unasked: &mut Vec<String>,
    replies: &mut Calls<Option<SiblingSet>>,
    why: &'static str,
) {
    if unasked.is_empty() {
        return;
    }
    metrics::counter!(m::READS_WIDENED_TOTAL, "reason" => why).increment(1);
    for to in unasked.drain(..) {
        replies.start(to, Read { key: key.into() });
    }
}

/// A read that ran out of replicas or time: short of its quorum, or
/// (quorum met) short of the session's context.
fn read_failed(tally: &Tally) -> Error {
    match tally.outcome() {
        Outcome::Done => Error::SessionNotSatisfied,
        _ => quorum_not_met(tally),
    }
}
