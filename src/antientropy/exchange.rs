//! One state-transfer round: this node and one fellow replica compare the
//! trees of the ranges they share and exchange the keys that differ.
//!
//! 1. Pick a random peer among the other replicas of this node's ranges.
//! 2. Ask for the roots of every range both keep, in one message.
//! 3. For each range whose roots differ (in random order), descend one
//!    level per message into the children that differ, down to the leaves.
//! 4. Ask for the `(key, hash)` lists of the differing leaves, compare
//!    them with this node's own: the differing keys.
//! 5. Fetch the peer's sets of those keys, merge each with this node's
//!    set, and store the merge on whichever side it changes.
//!
//! A round stops taking keys at `max_keys_per_round` and bytes at
//! `max_bytes_per_round`; what is left differs still and is found again by
//! a later round. Messages grow with what differs: a range in sync costs
//! 32 bytes of root, a differing key about a few hundred bytes of hashes
//! plus its sets.

use std::ops::RangeInclusive;

use rand::seq::{IndexedRandom, SliceRandom};

use super::merkle::{Hash, differing_keys};
use super::oplog::Op;
use super::parts::Parts;
use super::rpc::{LeafEntries, MAX_OPS_PER_ANSWER, Ops, OpsSince, TreeChildren, TreeRoots};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::peer::Rpc;
use crate::replica::rpc::{Fetch, Handoff, by_bytes};
use crate::ring::Position;
use crate::version::SiblingSet;

/// Operation mode: one round in this many is a state round.
const STATE_EVERY: u64 = 10;
/// Leaves asked for per message.
const LEAVES_PER_ASK: usize = 256;
/// Keys fetched and pushed per message.
const KEYS_PER_REPAIR: usize = 128;

/// What a round did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub peer: Option<String>,
    /// in_sync, repaired, unbuilt, failed or idle (see the rounds metric).
    pub result: &'static str,
    pub differing: u64,
    pub repaired: u64,
    pub sent: u64,
    pub received: u64,
    /// Operation mode: range exchanges that fell back to state transfer.
    pub fallbacks: u64,
    /// Operation mode: ops received and applied (changing data or not).
    pub ops_applied: u64,
    pub error: Option<Error>,
}

/// Runs one round with a random peer; never fails, the outcome says how it
/// went. `rounds` is how many this node has run before, which picks the
/// state rounds of operation mode.
pub async fn round(ae: &Parts, rounds: u64) -> Outcome {
    let me = ae.cluster.me();
    let ranges = ae.trees.ranges();
    let mut peers: Vec<&str> = ranges
        .iter()
        .flat_map(|r| r.replicas.iter().map(String::as_str))
        .filter(|id| *id != me)
        .collect();
    peers.sort_unstable();
    peers.dedup();
    let Some(peer) = peers.choose(&mut *ae.cluster.rng()).map(|p| p.to_string()) else {
        return Outcome {
            result: "idle",
            ..Outcome::default()
        };
    };
    let shared: Vec<RangeInclusive<Position>> = ranges
        .iter()
        .filter(|r| r.replicas.contains(&peer))
        .map(|r| r.positions.clone())
        .collect();
    let mut round = Round {
        ae,
        outcome: Outcome {
            peer: Some(peer.clone()),
            ..Outcome::default()
        },
        peer,
        unbuilt: false,
        taken: 0,
    };
    if shared.is_empty() {
        return Outcome {
            result: "idle",
            ..round.outcome
        };
    }
    // In operation mode, every STATE_EVERY-th round compares trees anyway:
    // a safety net for anything the logs missed.
    let ops = ae.oplogs.is_some() && rounds % STATE_EVERY != STATE_EVERY - 1;
    let result = if ops {
        round.run_ops(shared).await
    } else {
        round.run(shared).await
    };
    let unbuilt = round.unbuilt;
    let mut outcome = round.outcome;
    outcome.result = match result {
        Err(e) => {
            outcome.error = Some(e);
            "failed"
        }
        Ok(()) if outcome.differing > 0 => "repaired",
        Ok(()) if unbuilt => "unbuilt",
        Ok(()) => "in_sync",
    };
    outcome
}

struct Round<'a> {
    ae: &'a Parts,
    peer: String,
    outcome: Outcome,
    /// Some shared range had no complete tree on one side.
    unbuilt: bool,
    /// Keys and ops this round took of its `max_keys_per_round`.
    taken: u64,
}

impl Round<'_> {
    async fn run(&mut self, shared: Vec<RangeInclusive<Position>>) -> Result<()> {
        let roots = self.rpc(TreeRoots(shared.clone())).await?;
        if roots.len() != shared.len() {
            return Err(self.malformed("one root per range asked"));
        }
        let mut differing: Vec<(RangeInclusive<Position>, Hash)> = Vec::new();
        for (range, theirs) in shared.into_iter().zip(roots) {
            match (self.ae.trees.root(&range), theirs) {
                (Some(mine), Some(theirs)) if mine == theirs => {}
                (Some(_), Some(theirs)) => differing.push((range, theirs)),
                _ => self.unbuilt = true,
            }
        }
        // Random order, so that a round cut short by its bounds does not
        // always leave the same ranges for later.
        differing.shuffle(&mut *self.ae.cluster.rng());
        for (range, their_root) in differing {
            if self.spent() {
                break;
            }
            let keys = self.differing_keys(&range, &their_root).await?;
            self.outcome.differing += keys.len() as u64;
            self.taken += keys.len() as u64;
            for chunk in keys.chunks(KEYS_PER_REPAIR) {
                if self.spent() {
                    break;
                }
                self.repair(chunk).await?;
            }
        }
        Ok(())
    }

    /// Operation mode: for each shared range, asks the peer for the ops
    /// this node lacks and applies them in causal order; where the peer's
    /// log cannot serve them, the buffer overflows, or this node's log owes
    /// the peer a state exchange (it started empty), exchanges state for the
    /// range instead and, once both trees agree, adopts the peer's vector.
    async fn run_ops(&mut self, shared: Vec<RangeInclusive<Position>>) -> Result<()> {
        let Some(logs) = self.ae.oplogs.clone() else {
            return Ok(());
        };
        for range in shared {
            if self.spent() {
                break;
            }
            let Some(mine) = logs.applied(&range) else {
                self.unbuilt = true;
                continue;
            };
            // A log that owes the peer a state exchange asks for no ops,
            // only the peer's vector, to adopt after the exchange.
            let owed = logs.owes(&range, &self.peer);
            let left = self.ae.config.max_keys_per_round - self.taken as usize;
            let max = if owed {
                0
            } else {
                left.min(MAX_OPS_PER_ANSWER)
            };
            let request = OpsSince {
                range: range.clone(),
                from: self.ae.cluster.me().to_string(),
                applied: mine,
                max: max as u32,
            };
            let Ops { ops, gap, applied } = self.rpc(request).await?;
            if ops.len() > max {
                return Err(self.malformed("at most the ops asked"));
            }
            self.taken += ops.len() as u64;
            let mut fallback = if owed {
                Some("restart")
            } else if gap {
                Some("truncated")
            } else {
                None
            };
            if fallback.is_none() {
                let (delivered, fits) = logs.receive(&range, ops);
                self.apply(&delivered).await?;
                if !fits {
                    fallback = Some("buffer");
                }
            }
            if let Some(reason) = fallback {
                metrics::counter!(m::ANTIENTROPY_FALLBACKS_TOTAL, "reason" => reason).increment(1);
                self.outcome.fallbacks += 1;
                self.run(vec![range.clone()]).await?;
                if self.in_sync(&range).await? {
                    let delivered = logs.adopt(&range, &self.peer, &applied);
                    self.apply(&delivered).await?;
                }
            }
            logs.truncate(&range, &self.peer, applied);
        }
        Ok(())
    }

    /// Applies delivered ops to this node's store, through the replica
    /// (which checks each set first). Only ops that change the local set
    /// are written, and only they count as differing and repaired: an op
    /// that direct replication or a state exchange already brought is
    /// merely acknowledged.
    async fn apply(&mut self, ops: &[Op]) -> Result<()> {
        let mut changing = Vec::new();
        for op in ops {
            let current = self.ae.store.get(&op.key)?;
            let mut merged = current.clone().unwrap_or_default();
            merged.merge(&op.set);
            if current.unwrap_or_default() != merged {
                changing.push((op.key.clone(), op.set.clone()));
            }
        }
        metrics::counter!(m::ANTIENTROPY_OPS_APPLIED_TOTAL).increment(ops.len() as u64);
        self.outcome.ops_applied += ops.len() as u64;
        self.outcome.differing += changing.len() as u64;
        self.outcome.repaired += changing.len() as u64;
        for chunk in changing.chunks(1024) {
            let entries = chunk.to_vec();
            self.ae.replica.handoff(entries).await?;
        }
        Ok(())
    }

    /// Whether this node's tree of `range` equals the peer's now.
    async fn in_sync(&mut self, range: &RangeInclusive<Position>) -> Result<bool> {
        let roots = self.rpc(TreeRoots(vec![range.clone()])).await?;
        let mine = self.ae.trees.root(range);
        Ok(mine.is_some() && roots.first().copied().flatten() == mine)
    }

    /// Whether the round used up its key or byte budget.
    fn spent(&self) -> bool {
        let config = &self.ae.config;
        self.taken >= config.max_keys_per_round as u64
            || self.outcome.sent + self.outcome.received >= config.max_bytes_per_round
    }

    /// Descends both trees of `range` to the differing leaves, then compares
    /// the leaves' key lists: the keys whose entries differ, at most what
    /// the round's key budget has left.
    async fn differing_keys(
        &mut self,
        range: &RangeInclusive<Position>,
        their_root: &Hash,
    ) -> Result<Vec<String>> {
        let trees = &self.ae.trees;
        let Some(mut descent) = trees.descent(range, their_root) else {
            return Ok(Vec::new());
        };
        while let Some((level, nodes)) = descent.asking() {
            let request = TreeChildren {
                range: range.clone(),
                level: level as u8,
                nodes: nodes.iter().map(|&n| n as u32).collect(),
            };
            let children = self.rpc(request).await?;
            if !trees.step(range, &mut descent, &children) {
                // The ring changed under the round; a later one compares anew.
                return Ok(Vec::new());
            }
        }
        let budget = (self.ae.config.max_keys_per_round as u64).saturating_sub(self.taken) as usize;
        let mut keys = Vec::new();
        let mut rest: Vec<u32> = descent.leaves().iter().map(|&l| l as u32).collect();
        while !rest.is_empty() && keys.len() < budget && !self.spent() {
            let asked: Vec<u32> = rest.iter().copied().take(LEAVES_PER_ASK).collect();
            let request = LeafEntries {
                range: range.clone(),
                leaves: asked.clone(),
            };
            let theirs = self.rpc(request).await?;
            // The answer covers a prefix of the leaves asked, in order.
            let answered = theirs.len();
            if answered == 0
                || answered > asked.len()
                || theirs.iter().zip(&asked).any(|((l, _), a)| l != a)
            {
                return Err(self.malformed("leaf lists of a prefix of the leaves asked"));
            }
            let store = &*self.ae.store;
            let mine = trees.leaf_lists(store, range, &asked[..answered], usize::MAX)?;
            for ((_, mine), (_, mut theirs)) in mine.into_iter().zip(theirs) {
                theirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                keys.extend(differing_keys(&mine, &theirs));
            }
            rest.drain(..answered);
        }
        keys.truncate(budget);
        Ok(keys)
    }

    /// Fetches the peer's sets of `keys`, merges each with this node's, and
    /// stores the merge on each side it changes.
    async fn repair(&mut self, keys: &[String]) -> Result<()> {
        // Each answer covers a prefix of the keys asked, within the peer's
        // byte budget; the rest is asked again.
        let mut theirs = Vec::with_capacity(keys.len());
        while theirs.len() < keys.len() {
            let rest = &keys[theirs.len()..];
            let answered = self.rpc(Fetch(rest.to_vec())).await?;
            if answered.is_empty() || answered.len() > rest.len() {
                return Err(self.malformed("sets of a prefix of the keys fetched"));
            }
            theirs.extend(answered);
        }
        let (mut to_me, mut to_them) = (Vec::new(), Vec::new());
        let empty = SiblingSet::new();
        for (key, theirs) in keys.iter().zip(theirs) {
            let mine = self.ae.store.get(key)?;
            let mut merged = mine.clone().unwrap_or_default();
            if let Some(theirs) = &theirs {
                merged.merge(theirs);
            }
            let changes = |side: &Option<SiblingSet>| side.as_ref().unwrap_or(&empty) != &merged;
            let (mine_changes, theirs_change) = (changes(&mine), changes(&theirs));
            if mine_changes || theirs_change {
                self.outcome.repaired += 1;
            }
            if mine_changes && let Some(theirs) = theirs {
                to_me.push((key.clone(), theirs));
            }
            if theirs_change && !merged.is_empty() {
                to_them.push((key.clone(), merged));
            }
        }
        let budget = self.ae.replica.message_budget();
        // The replica checks the peer's sets before merging them.
        for run in by_bytes(to_me, budget) {
            self.ae.replica.handoff(run).await?;
        }
        for run in by_bytes(to_them, budget) {
            self.rpc(Handoff(run)).await?;
        }
        Ok(())
    }

    /// Calls `R` on the peer, counting the bytes both ways.
    async fn rpc<R: Rpc>(&mut self, request: R) -> Result<R::Reply> {
        self.outcome.sent += encoded_len(&request);
        let reply = self.ae.cluster.transport().rpc(&self.peer, request).await?;
        self.outcome.received += encoded_len(&reply);
        Ok(reply)
    }

    /// A reply of the right type whose contents do not fit the request.
    fn malformed(&self, what: &str) -> Error {
        Error::Protocol(format!(
            "{} answered an anti-entropy request with a malformed reply: expected {what}",
            self.peer
        ))
    }
}

fn encoded_len(message: &impl serde::Serialize) -> u64 {
    crate::peer::encode(message).map_or(0, |bytes| bytes.len() as u64)
}
