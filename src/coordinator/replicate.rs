//! Replicating one write: the minted sibling set merged into the other
//! replicas, a hint to the next fallback for every replica that cannot take
//! it, each answer counted in the write's [`Tally`].
//!
//! The tally decides when the client hears back; the replication does not
//! stop there. Once the quorum is decided, the answers still due are
//! awaited in the background and every replica that fails after it is
//! hinted like one that failed before (a primary that failed after W
//! converges through hinted handoff, without waiting for anti-entropy).
//! A hint that fails moves on to the next fallback, for as long as there
//! is one; a fallback stands in for one owner at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::calls::Calls;
use super::outbox::{Held, Outbox};
use super::tally::{Outcome, Tally};
use crate::replica::rpc::{EncodedSet, Hint, Merge, Merged};
use crate::version::SiblingSet;

/// How long the answers due after a decided write are waited for (each
/// call also has the transport's own deadline).
const AFTER_DECISION: Duration = Duration::from_secs(60);

pub(super) struct Replication {
    key: String,
    set: SiblingSet,
    /// The set encoded once, for every replica it is merged into (on the
    /// first: a write with no other replica encodes nothing).
    encoded: Option<EncodedSet>,
    calls: Calls<Merged>,
    /// Where the merges go when the write is one of a client batch's, and
    /// its count among the batch's writes still to post theirs.
    outbox: Option<Arc<Outbox>>,
    minting: Option<Held>,
    /// The nodes after the preference list, in ring order, not yet used.
    fallbacks: std::vec::IntoIter<String>,
    /// (fallback, owner): whom each hint stands in for.
    hinted_for: Vec<(String, String)>,
}

impl Replication {
    /// `encoded`: the set's bytes when the minting store handed them back;
    /// `outbox`: the batch's, when the write is one of a client batch's,
    /// with the write's count among those minting (let go once its merges
    /// are posted).
    pub(super) fn new(
        key: &str,
        set: SiblingSet,
        encoded: Option<EncodedSet>,
        calls: Calls<Merged>,
        outbox: Option<(Arc<Outbox>, Held)>,
        fallbacks: Vec<String>,
    ) -> Self {
        let (outbox, minting) = outbox.unzip();
        Replication {
            key: key.to_string(),
            encoded,
            set,
            calls,
            outbox,
            minting,
            fallbacks: fallbacks.into_iter(),
            hinted_for: Vec::new(),
        }
    }

    /// Merges the set into replica `to`.
    pub(super) fn send(&mut self, to: String) {
        let set = match EncodedSet::once(&mut self.encoded, &self.set) {
            Ok(set) => set,
            Err(e) => return self.calls.add(to, Box::pin(std::future::ready(Err(e)))),
        };
        let request = Merge {
            key: self.key.clone(),
            set,
        };
        match &self.outbox {
            Some(outbox) => {
                let call = outbox.merge(to.clone(), request);
                self.calls.add(to, call);
            }
            None => self.calls.start(to, request),
        }
    }

    /// `owner` cannot take the set: the next fallback keeps it with a hint
    /// naming `owner`. The fallback, if there was one (a tally counts it as
    /// a non-primary).
    pub(super) fn hint(&mut self, owner: String) -> Option<String> {
        let fallback = self.fallbacks.next()?;
        self.hinted_for.push((fallback.clone(), owner.clone()));
        let request = Hint {
            owner,
            key: self.key.clone(),
            set: self.set.clone(),
        };
        self.calls.start(fallback.clone(), request);
        Some(fallback)
    }

    /// The owner whose copy a call to `to` carried: `to` itself, or the
    /// primary a hint to `to` stood in for.
    fn owner_of(&self, to: &str) -> String {
        self.hinted_for
            .iter()
            .find(|(fallback, _)| fallback == to)
            .map_or_else(|| to.to_string(), |(_, owner)| owner.clone())
    }

    /// Counts answers into `tally` until it is decided or `deadline`
    /// passes (then the calls still out fail in the tally).
    pub(super) async fn count(&mut self, tally: &mut Tally, deadline: Instant) {
        // Every merge is posted: the batch's outbox may flush.
        self.minting = None;
        while tally.outcome() == Outcome::Pending {
            match tokio::time::timeout_at(deadline, self.calls.recv()).await {
                Ok(Some((to, reply))) => self.answered(Some(tally), to, reply),
                Ok(None) => break,
                Err(_) => tally.fail_outstanding("no answer within timeout_ms"),
            }
        }
    }

    fn answered(
        &mut self,
        tally: Option<&mut Tally>,
        to: String,
        reply: crate::error::Result<Merged>,
    ) {
        let failure = match reply {
            Ok(Merged { durable }) => {
                if let Some(tally) = tally {
                    tally.ack(&to, durable);
                }
                return;
            }
            Err(e) => e.to_string(),
        };
        // A failed primary, or a failed fallback: the next fallback.
        let owner = self.owner_of(&to);
        let fallback = self.hint(owner);
        if let Some(tally) = tally {
            if let Some(fallback) = fallback {
                tally.add(&fallback, false);
            }
            tally.fail(&to, failure);
        }
    }

    /// Waits for the answers still due in the background and hints every
    /// replica that fails.
    pub(super) fn finish_in_background(mut self) {
        if self.calls.outstanding() == 0 {
            return;
        }
        // A write of a client batch leaves them to its outbox, which awaits
        // the batch's in one task; the outbox need not outlive the batch.
        let outbox = self.outbox.take();
        let finish = async move {
            let until = Instant::now() + AFTER_DECISION;
            while self.calls.outstanding() > 0 {
                match tokio::time::timeout_at(until, self.calls.recv()).await {
                    Ok(Some((to, reply))) => self.answered(None, to, reply),
                    Ok(None) | Err(_) => break,
                }
            }
        };
        match outbox {
            Some(outbox) => outbox.finish_later(Box::pin(finish)),
            None => drop(tokio::spawn(finish)),
        }
    }
}
