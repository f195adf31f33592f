//! Ownership handoff: data follows the ring when it changes.
//!
//! When the members change, every node compares the placement it last
//! handed off under with the current one, range by range ([`plan`]): where
//! a node enters a key's preference list, every old replica pushes the
//! keys of that range to it; where this node left a preference list, it
//! pushes the keys to all the new replicas, checks that each of them now
//! holds at least what it sent, and only then drops its copy, and only if
//! the key did not change meanwhile. Every push goes through the one
//! sibling merge, so a write that lands anywhere during the move survives.
//!
//! Keys move in ring order, in batches of `ring.handoff_batch`, one batch
//! in flight at a time, so a handoff never holds more than one batch in
//! memory nor blocks client traffic for long. A sweep that fails (a target
//! down) is retried whole at the next interval; pushes are idempotent.
//! Between changes the same sweep, run every `ring.handoff_interval_ms`
//! and whenever the failure detector sees a node return, hands off strays:
//! hints kept for an unreachable owner, and writes a stale coordinator sent
//! to a former owner.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::metrics as m;
use crate::replica::Replica;
use crate::replica::rpc::{Handoff, fetch};
use crate::ring::{Members, Position, Ring};
use crate::store::{Store, write_json_synced};
use crate::version::SiblingSet;

use super::Cluster;

/// One range of this node's store and what to do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub range: RangeInclusive<Position>,
    /// Nodes to push the range's keys to.
    pub targets: Vec<String>,
    /// This node no longer replicates the range: drop keys once pushed.
    pub release: bool,
}

/// What `me` must hand off going from placement `old` (none: nothing known
/// before) to `new`, with `n` replicas per key.
pub fn plan(old: Option<&Ring>, new: &Ring, me: &str, n: usize) -> Vec<Transfer> {
    let mut bounds: Vec<Position> = new.positions().collect();
    if let Some(old) = old {
        bounds.extend(old.positions());
    }
    bounds.sort_unstable();
    bounds.dedup();
    let arcs = crate::ring::ranges::arcs(&bounds);
    let mut out: Vec<Transfer> = Vec::new();
    for (range, at) in arcs {
        let now = new.preference_list(at, n);
        let release = !now.contains(&me);
        let targets: Vec<String> = if release {
            now.iter().map(|s| s.to_string()).collect()
        } else {
            let before = old.map(|o| o.preference_list(at, n));
            match before {
                Some(before) => now
                    .iter()
                    .filter(|id| **id != me && !before.contains(id))
                    .map(|s| s.to_string())
                    .collect(),
                None => Vec::new(),
            }
        };
        if !release && targets.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(prev)
                if prev.targets == targets
                    && prev.release == release
                    && prev.range.end().checked_add(1) == Some(*range.start()) =>
            {
                prev.range = *prev.range.start()..=*range.end();
            }
            _ => out.push(Transfer {
                range,
                targets,
                release,
            }),
        }
    }
    out
}

/// Keys pushed and keys dropped by one sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub pushed: u64,
    pub released: u64,
}

/// Carries out `transfers` from this node's store.
pub async fn sweep(
    cluster: &Cluster,
    store: &Arc<dyn Store>,
    replica: &Replica,
    transfers: &[Transfer],
    batch: usize,
) -> Result<Swept> {
    let mut swept = Swept::default();
    let mut first_error = None;
    let mut pending = transfers.iter().filter(|t| !t.targets.is_empty()).count();
    metrics::gauge!(m::HANDOFF_RANGES_PENDING).set(pending as f64);
    for t in transfers {
        if t.targets.is_empty() {
            continue;
        }
        // A transfer whose target is down is retried at the next sweep; the
        // others go on (a dead owner must not hold up everyone's handoff).
        match transfer(cluster, store, replica, t, batch, &mut swept).await {
            Ok(()) => pending -= 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        metrics::gauge!(m::HANDOFF_RANGES_PENDING).set(pending as f64);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(swept),
    }
}

async fn transfer(
    cluster: &Cluster,
    store: &Arc<dyn Store>,
    replica: &Replica,
    t: &Transfer,
    batch: usize,
    swept: &mut Swept,
) -> Result<()> {
    let mut from = *t.range.start();
    loop {
        // At most `batch` keys and the replica's message budget in bytes
        // (at least one key: a set larger than that goes alone).
        let budget = replica.message_budget();
        let entries = store.scan_bytes(from..=*t.range.end(), batch, budget)?;
        let Some((last_key, _)) = entries.last() else {
            return Ok(());
        };
        let last = crate::ring::position(last_key.as_bytes());
        for target in &t.targets {
            push(cluster, target, &entries).await?;
        }
        swept.pushed += (entries.len() * t.targets.len()) as u64;
        if t.release {
            for target in &t.targets {
                verify(cluster, target, &entries).await?;
            }
            swept.released += replica.release(entries).await;
        }
        match last.checked_add(1) {
            Some(next) if next <= *t.range.end() => from = next,
            _ => return Ok(()),
        }
    }
}

async fn push(cluster: &Cluster, target: &str, entries: &[(String, SiblingSet)]) -> Result<()> {
    let request = Handoff(entries.to_vec());
    cluster.transport().rpc(target, request).await.map(drop)
}

/// Checks that `target` holds at least what was pushed to it.
async fn verify(cluster: &Cluster, target: &str, entries: &[(String, SiblingSet)]) -> Result<()> {
    let keys = entries.iter().map(|(k, _)| k.clone()).collect();
    let sets = fetch(&**cluster.transport(), target, keys).await?;
    for ((key, mine), theirs) in entries.iter().zip(sets) {
        let covered = theirs.is_some_and(|theirs| {
            let mut merged = theirs.clone();
            merged.merge(mine);
            merged == theirs
        });
        if !covered {
            return Err(Error::Unavailable {
                node: target.to_string(),
                reason: format!("does not hold what was handed off for `{key}`"),
            });
        }
    }
    Ok(())
}

/// How often, and how soon, a sweep that failed after a node came back is
/// tried again before waiting for the next interval.
const RETRIES_AFTER_RETURN: u32 = 8;
const RETRY_AFTER_RETURN: Duration = Duration::from_millis(250);

/// Runs handoff for the life of the node: at once after every members
/// change, and every `interval` for strays. `saved` keeps the placement
/// last handed off under, so a restart in the middle of a handoff resumes
/// it.
pub async fn run(
    cluster: Arc<Cluster>,
    store: Arc<dyn Store>,
    replica: Arc<Replica>,
    interval: Duration,
    batch: usize,
    saved: Option<PathBuf>,
) {
    let mut changes = cluster.roster().subscribe();
    let mut quick_retries = 0;
    let mut done: Members = saved
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| cluster.roster().members());
    loop {
        let target = cluster.roster().members();
        let (old, new) = (done.ring(), target.ring());
        let transfers = plan(Some(&old), &new, cluster.me(), cluster.n());
        let moving = done != target;
        if moving {
            tracing::info!(
                node = %cluster.me(),
                ranges = transfers.len(),
                "handoff started: the ring changed"
            );
        }
        let outcome = sweep(&cluster, &store, &replica, &transfers, batch).await;
        if let Ok(swept) = &outcome {
            replica.handed_off(swept.released);
        }
        // A node that just came back may not take the first push (its
        // listener is new, the pooled connection to its old life is dead):
        // a failed sweep after a return is tried again soon, a few times.
        let wait = if outcome.is_err() && quick_retries > 0 {
            quick_retries -= 1;
            RETRY_AFTER_RETURN
        } else {
            quick_retries = 0;
            interval
        };
        match outcome {
            Ok(swept) => {
                if moving {
                    tracing::info!(
                        node = %cluster.me(),
                        pushed = swept.pushed,
                        released = swept.released,
                        "handoff finished"
                    );
                } else if swept.pushed > 0 || swept.released > 0 {
                    tracing::info!(
                        node = %cluster.me(),
                        pushed = swept.pushed,
                        released = swept.released,
                        "handed off strays and hints"
                    );
                }
                metrics::counter!(m::HANDOFF_KEYS_TOTAL, "kind" => "pushed")
                    .increment(swept.pushed);
                metrics::counter!(m::HANDOFF_KEYS_TOTAL, "kind" => "released")
                    .increment(swept.released);
                if done != target {
                    done = target;
                    if let Some(path) = &saved
                        && let Err(e) = write_json_synced(path, &done)
                    {
                        tracing::warn!(error = %e, "could not save the handoff state");
                    }
                }
            }
            Err(e) => {
                metrics::counter!(m::HANDOFF_FAILURES_TOTAL).increment(1);
                tracing::warn!(error = %e, "handoff incomplete; retrying later");
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            // A node came back: deliver its hints now, not at the next interval.
            _ = cluster.detector().returned() => quick_retries = RETRIES_AFTER_RETURN,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Members, Status};

    fn members(ids: &[&str]) -> Members {
        Members::initial(ids.iter().map(|id| (*id, "127.0.0.1:1", None, 1)), 8)
    }

    fn covered(transfers: &[Transfer]) -> u128 {
        transfers
            .iter()
            .map(|t| u128::from(t.range.end() - t.range.start()) + 1)
            .sum()
    }

    #[test]
    fn nothing_moves_when_nothing_changed_and_a_member_owns_its_share() {
        let m = members(&["a", "b", "c", "d"]);
        let ring = m.ring();
        // Every node replicates everything: nothing to do.
        assert!(plan(Some(&ring), &ring, "a", 4).is_empty());
        // Unchanged placement: only ranges not owned (strays) are handed off.
        assert!(plan(Some(&ring), &ring, "a", 3).iter().all(|t| t.release));
        // No previous placement: only ranges not owned are handed off.
        let strays = plan(None, &ring, "a", 2);
        assert!(strays.iter().all(|t| t.release));
        let share = covered(&strays) as f64 / 2f64.powi(64);
        assert!((0.3..0.7).contains(&share), "a does not own {share}");
    }

    #[test]
    fn a_join_sends_the_new_node_its_ranges_and_releases_the_displaced() {
        let before = members(&["a", "b", "c"]);
        let mut after = before.clone();
        after.admit("d", "127.0.0.1:4", None, 1, 8);
        let (old, new) = (before.ring(), after.ring());
        for me in ["a", "b", "c"] {
            for t in plan(Some(&old), &new, me, 3) {
                let at = *t.range.end();
                let now = new.preference_list(at, 3);
                if t.release {
                    assert!(!now.contains(&me));
                    assert_eq!(t.targets, now);
                } else {
                    assert_eq!(t.targets, ["d"], "{me} {t:?}");
                }
            }
        }
        // With n = 3 of 3 every key was everywhere: d gets about 3/4 of the ring from each.
        let to_d = covered(&plan(Some(&old), &new, "a", 3)) as f64 / 2f64.powi(64);
        assert!(to_d > 0.3, "{to_d}");
    }

    #[test]
    fn a_leave_releases_everything_the_leaver_held() {
        let before = members(&["a", "b", "c", "d"]);
        let mut after = before.clone();
        after.set_status("d", Status::Leaving);
        let transfers = plan(Some(&before.ring()), &after.ring(), "d", 2);
        assert!(transfers.iter().all(|t| t.release && t.targets.len() == 2));
        assert_eq!(
            covered(&transfers),
            1u128 << 64,
            "d must hand off the whole ring"
        );
    }
}
