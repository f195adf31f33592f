//! Read repair: a read that saw replicas disagree brings them up to date.
//!
//! A read answers the client as soon as `r` replicas replied. The rest of
//! the replies are still coming; a background task collects them (until
//! the request's deadline), merges everything with the one sibling merge,
//! and sends the merged set to every replica whose reply differed from it,
//! including replicas that had nothing. Merging is idempotent and never
//! loses a sibling, so a repair that races a write is harmless. Each
//! repaired replica counts in `chorus_read_repairs_total`.
//!
//! A value whose TTL has run out is dropped from the merged set before it
//! is compared, so a replica that still holds one is repaired too: once a
//! read has answered without it, the replicas it asked drop it durably,
//! and no later read through a node whose idea of the time is behind can
//! find it there.

use std::sync::Arc;

use tokio::time::Instant;

use super::calls::Calls;
use crate::metrics as m;
use crate::peer::Transport;
use crate::replica::rpc::{EncodedSet, Merge, Read};
use crate::version::SiblingSet;

/// What one replica answered to a read.
pub(super) type Reply = (String, Option<SiblingSet>);

/// Finishes the read in the background and repairs stale replicas. A read
/// whose replicas all answered alike (the common case) needs neither, and
/// starts no task.
pub(super) fn spawn(
    transport: Arc<dyn Transport>,
    key: String,
    mut seen: Vec<Reply>,
    mut rest: Calls<<Read as crate::peer::Rpc>::Reply>,
    deadline: Instant,
    expiry_ms: u64,
) {
    let expired = seen.iter().any(|(_, set)| {
        set.as_ref()
            .and_then(SiblingSet::next_expiry)
            .is_some_and(|at| at <= expiry_ms)
    });
    if rest.outstanding() == 0 && !stale(&seen) && !expired {
        return;
    }
    tokio::spawn(async move {
        while let Ok(Some((node, reply))) = tokio::time::timeout_at(deadline, rest.recv()).await {
            if let Ok(set) = reply {
                seen.push((node, set));
            }
        }
        // Calls still out past the deadline go on in a task of their own
        // (Calls' drop), not stalled behind the repairs.
        drop(rest);
        let Some(mut merged) = merge_all(&seen) else {
            return;
        };
        merged.expire(expiry_ms);
        let mut encoded = None;
        for (node, set) in seen {
            if set.as_ref() == Some(&merged) {
                continue;
            }
            // Encoded once, for every stale replica.
            let set = match EncodedSet::once(&mut encoded, &merged) {
                Ok(set) => set,
                Err(e) => return tracing::warn!(error = %e, "read repair failed"),
            };
            let request = Merge {
                key: key.clone(),
                set,
            };
            match transport.rpc(&node, request).await {
                Ok(_) => metrics::counter!(m::READ_REPAIRS_TOTAL).increment(1),
                Err(e) => tracing::debug!(%node, error = %e, "read repair failed"),
            }
        }
    });
}

/// Whether some replica's answer differs from another's: then the merge
/// of all differs from at least one, which needs a repair.
fn stale(seen: &[Reply]) -> bool {
    seen.windows(2).any(|pair| pair[0].1 != pair[1].1)
}

/// The merge of every set seen; `None` when no replica had the key.
pub(super) fn merge_all(seen: &[Reply]) -> Option<SiblingSet> {
    let mut merged: Option<SiblingSet> = None;
    for set in seen.iter().filter_map(|(_, set)| set.as_ref()) {
        match &mut merged {
            Some(m) => m.merge(set),
            None => merged = Some(set.clone()),
        }
    }
    merged
}
