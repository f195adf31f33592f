//! Tombstone purge by causal stability.
//!
//! A delete leaves a tombstone sibling, so that a replica that missed the
//! delete cannot bring the value back and a write concurrent with the
//! delete shows up beside it as a sibling. Once every replica of the key
//! holds exactly the same tombstone-only set, the tombstone is causally
//! stable: every replica has seen the delete, and none holds a newer or
//! concurrent write (it would have a different set: a sibling the others
//! lack, or a context they do not have). The decision compares the
//! replicas' sets, context (version vector) and dots, never a clock.
//!
//! Then the key's primary replica asks every replica to replace that exact
//! set by its *grave*: the same context, no siblings. A replica whose set
//! changed meanwhile keeps it. A grave reads as absent, and its context
//! still covers every dot the key had, so any older copy merged in later (a
//! late hint, a replica restored from an old disk, a slow replication)
//! loses what it holds to the grave instead of resurrecting it (property:
//! `a_grave_absorbs_every_older_copy`). A newer write merges in as usual.
//! Graves are kept: forgetting the context would need every node to know
//! that no older copy exists anywhere, which no version vector here says.
//!
//! Every `antientropy.purge_interval_ms` a node scans the next slice of the
//! ranges it is the primary of (at most [`SCAN`] entries, resuming where
//! the last round stopped) and purges at most [`MAX_PURGE`] deletes.
//!
//! The same scan drops the values whose TTL has run out from this node's
//! own copies (`Replica::expire_stored`): an expiry needs no agreement,
//! its instant travels with the value, and the drop reaches the other
//! replicas as any difference does, by anti-entropy. A tombstone-only set
//! that results is purged as above in a later round.

use crate::error::{Error, Result};
use crate::replica::rpc::{Purge, fetch};
use crate::ring::{Position, Range, position};
use crate::version::SiblingSet;

use super::parts::Parts;

/// Most entries one purge round scans.
pub const SCAN: usize = 10_000;
/// Most deletes one purge round purges.
pub const MAX_PURGE: usize = 1_000;

/// One purge round from `cursor` (advanced); returns the deletes purged.
pub(super) async fn round(ae: &Parts, cursor: &mut Position) -> Result<u64> {
    let me = ae.cluster.me();
    let ranges: Vec<Range> = ae
        .cluster
        .routes()
        .ring()
        .ranges(ae.cluster.n())
        .into_iter()
        .filter(|r| r.replicas.first().map(String::as_str) == Some(me))
        .collect();
    let Some(first) = ranges.iter().position(|r| *r.positions.end() >= *cursor) else {
        *cursor = 0;
        return Ok(0);
    };
    let (mut scanned, mut purged) = (0, 0);
    for range in ranges[first..].iter() {
        let from = (*cursor).max(*range.positions.start());
        let limit = SCAN - scanned;
        let entries = ae.store.scan(from..=*range.positions.end(), limit)?;
        scanned += entries.len();
        let full = entries.len() >= limit;
        *cursor = match entries.last() {
            Some((key, _)) if full => position(key.as_bytes()).saturating_add(1),
            _ => range.positions.end().wrapping_add(1),
        };
        let now = ae.replica.now_ms();
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, set)| set.next_expiry().is_some_and(|at| at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        if !expired.is_empty() {
            ae.replica.expire_stored(expired).await?;
        }
        let candidates: Vec<(String, SiblingSet)> = entries
            .into_iter()
            .filter(|(_, set)| set.is_tombstoned())
            .take(MAX_PURGE - purged as usize)
            .collect();
        if !candidates.is_empty() {
            purged += purge(ae, range, candidates).await?;
        }
        if full || purged as usize >= MAX_PURGE || *cursor == 0 {
            break;
        }
    }
    Ok(purged)
}

/// Purges those of `candidates` (this node's tombstone-only sets) that
/// every other replica of `range` holds identically.
async fn purge(ae: &Parts, range: &Range, candidates: Vec<(String, SiblingSet)>) -> Result<u64> {
    let me = ae.cluster.me();
    let fellows: Vec<&String> = range.replicas.iter().filter(|r| *r != me).collect();
    let keys: Vec<String> = candidates.iter().map(|(k, _)| k.clone()).collect();
    let mut stable = vec![true; keys.len()];
    for fellow in &fellows {
        let sets = fetch(&**ae.cluster.transport(), fellow, keys.clone()).await?;
        if sets.len() != keys.len() {
            return Err(Error::Protocol(format!(
                "{fellow} answered a fetch of {} keys with {} sets",
                keys.len(),
                sets.len()
            )));
        }
        for ((same, (_, mine)), theirs) in stable.iter_mut().zip(&candidates).zip(sets) {
            *same &= theirs.as_ref() == Some(mine);
        }
    }
    let entries: Vec<(String, SiblingSet)> = candidates
        .into_iter()
        .zip(stable)
        .filter_map(|(entry, same)| same.then_some(entry))
        .collect();
    if entries.is_empty() {
        return Ok(0);
    }
    let count = entries.len() as u64;
    for fellow in &fellows {
        ae.cluster
            .transport()
            .rpc(fellow, Purge(entries.clone()))
            .await?;
    }
    ae.replica.purge(entries).await?;
    Ok(count)
}
