//! The pure half of a scan page: what each replica is asked for, and the
//! page made of their answers (the module doc of `scan` says why it is
//! right). No I/O; the caller repairs and renders.

use super::after;
use crate::coordinator::coverage::{Ask, Coverage};
use crate::coordinator::read_repair::{self, Reply};
use crate::replica::rpc::{EncodedSet, Scanned};
use crate::ring::position;
use crate::version::SiblingSet;

/// A few keys more than a node's share of the page, so that the page's
/// bound is rarely set by a node that stopped just short of it.
const SHARE_SLACK: f64 = 1.25;
const SHARE_EXTRA: u32 = 4;

/// The keys one node is asked for: about its `share` of the ring's
/// positions times the page's `limit`, and never more than `limit`.
pub fn ask_limit(share: f64, limit: u32) -> u32 {
    let share = (share * f64::from(limit) * SHARE_SLACK).ceil();
    (share as u32).saturating_add(SHARE_EXTRA).min(limit).max(1)
}

/// One key of a page: its merged set (expired values dropped) and, when
/// its replicas need a repair (they differ, one lacks it, or it holds an
/// expired value), what each replica that covered it answered.
#[derive(Debug)]
pub struct Key {
    pub key: String,
    pub merged: SiblingSet,
    pub repair: Option<Vec<Reply>>,
}

/// The keys a page read, in order, dead ones included (they may need a
/// repair), up to where it ends; and where the next page starts.
#[derive(Debug, Default)]
pub struct Merged {
    pub keys: Vec<Key>,
    pub next: Option<Vec<u8>>,
}

/// The page of `answers` (every ask of `plan` that answered): the keys up
/// to the lowest `through`, merged, with at most `limit` live ones.
pub fn merge(plan: &Coverage, answers: &[(Ask, Scanned)], limit: usize, now_ms: u64) -> Merged {
    let bound: Option<&str> = answers
        .iter()
        .filter_map(|(_, scanned)| scanned.through.as_deref())
        .min();
    let within = |key: &str| bound.is_none_or(|b| key <= b);
    // Which nodes answered for each range.
    let mut covering: Vec<Vec<&str>> = Vec::new();
    for (ask, _) in answers {
        for &range in &ask.ranges {
            if covering.len() <= range {
                covering.resize(range + 1, Vec::new());
            }
            covering[range].push(ask.node.as_str());
        }
    }
    // The answers are each in key order: merge them, taking each key
    // with the bytes of every replica that had it.
    let mut at = vec![0usize; answers.len()];
    let mut held: Vec<(&str, &EncodedSet)> = Vec::with_capacity(answers.len());
    let mut out = Merged::default();
    let mut live = 0;
    loop {
        let mut least: Option<&str> = None;
        for ((_, scanned), &i) in answers.iter().zip(&at) {
            if let Some((key, _)) = scanned.entries.get(i)
                && within(key)
                && least.is_none_or(|l| key.as_str() < l)
            {
                least = Some(key.as_str());
            }
        }
        let Some(key) = least else { break };
        held.clear();
        for ((ask, scanned), i) in answers.iter().zip(at.iter_mut()) {
            if let Some((k, set)) = scanned.entries.get(*i)
                && k == key
            {
                held.push((ask.node.as_str(), set));
                *i += 1;
            }
        }
        let range = plan.range_of(position(key.as_bytes()));
        let covered_by: &[&str] = range
            .and_then(|r| covering.get(r))
            .map_or(&[], Vec::as_slice);
        let Some(key) = merge_key(key, &held, covered_by, now_ms) else {
            continue;
        };
        if !key.merged.is_deleted() {
            if live == limit {
                // Cut: the next page starts after the last key returned.
                out.next = out.keys.last().map(|k| after(&k.key));
                return out;
            }
            live += 1;
        }
        out.keys.push(key);
    }
    out.next = bound.map(after);
    out
}

/// A replica's set as a scan takes it: `None` (absent) when its bytes do
/// not decode or the set breaks its invariants (a corrupt peer's).
fn decoded(set: &EncodedSet) -> Option<SiblingSet> {
    set.decode().ok().filter(SiblingSet::is_well_formed)
}

/// One key from the bytes the replicas that had it answered (`held`) and
/// the replicas that covered its range. The common case, every replica
/// holding the same bytes, decodes once and merges nothing.
fn merge_key(
    key: &str,
    held: &[(&str, &EncodedSet)],
    covered_by: &[&str],
    now_ms: u64,
) -> Option<Key> {
    let alike = held.len() >= covered_by.len() && held.windows(2).all(|w| w[0].1 == w[1].1);
    if alike && let Some((_, first)) = held.first() {
        // Bytes that do not decode are left to the general case below.
        if let Some(mut merged) = first.decode().ok().filter(SiblingSet::is_well_formed) {
            let expired = merged.next_expiry().is_some_and(|at| at <= now_ms);
            merged.expire(now_ms);
            let repair = expired.then(|| {
                held.iter()
                    .map(|(node, set)| (node.to_string(), decoded(set)))
                    .collect()
            });
            return Some(Key {
                key: key.to_string(),
                merged,
                repair,
            });
        }
    }
    // A set that does not decode counts as absent.
    let mut replies: Vec<Reply> = held
        .iter()
        .map(|(node, set)| (node.to_string(), decoded(set)))
        .collect();
    // The replicas of this key's range that answered without it.
    for node in covered_by {
        if !held.iter().any(|(n, _)| n == node) {
            replies.push((node.to_string(), None));
        }
    }
    let mut merged = read_repair::merge_all(&replies)?;
    merged.expire(now_ms);
    Some(Key {
        key: key.to_string(),
        merged,
        repair: Some(replies),
    })
}

#[cfg(test)]
mod tests;
