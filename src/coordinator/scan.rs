//! One page of a client scan: a coverage query over every token range,
//! merged in key order.
//!
//! The plan (`coverage.rs`) asks each range of `r` of its replicas, one
//! call per node for all the ranges it covers. A replica answers with the
//! keys of its ranges in key order from the page's start, a bounded number
//! of them, and how far it got (`through`); each node is asked for about
//! its share of the page (the share of the ring it covers), so a page
//! reads about `r` sets per key it returns, however large the store.
//!
//! Merging: the page ends at the lowest `through` of all the answers (its
//! *bound*): up to there every answer is complete, so every key at or
//! below it was seen by each of its range's `r` replicas that answered,
//! exactly as a read at `r` would see it. Each such key's sets are merged
//! with the one sibling merge, its expired values dropped, and replicas
//! whose copy differs are repaired in the background (`read_repair.rs`).
//! Keys whose merge holds no live value (deleted, expired) are left out.
//! Past `limit` live keys the page is cut. The next page starts just after
//! the last key this page covered, whatever the ring does meanwhile, so a
//! key that exists for the whole scan is returned once: never skipped, as
//! every page covers all keys up to its end, and never twice, as pages do
//! not overlap.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::calls::Calls;
use super::coverage::{Ask, Coverage, Uncovered};
use super::read_repair;
use super::{Coordinator, observe};
use crate::error::{Error, Result};
use crate::peer::Call;
use crate::replica::rpc::{MAX_SCAN_KEYS, Scan, Scanned};
use crate::ring::position;
use crate::store::KeyRange;
use crate::version::SiblingSet;

/// A page of a scan: the live keys in order with their merged sets, and
/// where the next page starts (`None`: the range is done).
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<(String, SiblingSet)>,
    pub next: Option<Vec<u8>>,
}

/// A few keys more than a node's share of the page, so that the page's
/// bound is rarely set by a node that stopped just short of it.
const SHARE_SLACK: f64 = 1.25;
const SHARE_EXTRA: u32 = 4;

impl Coordinator {
    /// The page of `keys` from its start: at most `limit` live keys, each
    /// read from `r` of its replicas, due by `deadline`.
    pub async fn scan(
        &self,
        keys: KeyRange,
        limit: u32,
        r: usize,
        deadline: Instant,
    ) -> Result<Page> {
        let page = self.coordinate_scan(keys, limit, r, deadline);
        observe::measured(self.cluster.me(), "scan", page).await
    }

    async fn coordinate_scan(
        &self,
        keys: KeyRange,
        limit: u32,
        r: usize,
        deadline: Instant,
    ) -> Result<Page> {
        if keys.is_empty() {
            return Ok(Page::default());
        }
        let limit = limit.clamp(1, MAX_SCAN_KEYS);
        let ranges = self.cluster.routes().ring().ranges(self.cluster.n());
        let (mut plan, asks) = Coverage::new(&ranges, r, |replicas| self.read_order(replicas));
        let mut running = FuturesUnordered::new();
        for ask in asks {
            running.push(self.ask(&plan, ask, &keys, limit));
        }
        let mut answers: Vec<(Ask, Scanned)> = Vec::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        while !plan.is_done() {
            let Ok(Some((ask, reply))) = tokio::time::timeout_at(deadline, running.next()).await
            else {
                for ask in running.iter().filter_map(|named| named.ask.as_ref()) {
                    failed.push((ask.node.clone(), "no answer within timeout_ms".into()));
                }
                return Err(not_covered(None, r, failed));
            };
            match reply {
                Ok(scanned) => {
                    plan.answered(&ask);
                    answers.push((ask, scanned));
                }
                Err(e) => {
                    failed.push((ask.node.clone(), e.to_string()));
                    match plan.failed(&ask) {
                        Ok(more) => {
                            for ask in more {
                                running.push(self.ask(&plan, ask, &keys, limit));
                            }
                        }
                        Err(uncovered) => return Err(not_covered(Some(uncovered), r, failed)),
                    }
                }
            }
        }
        drop(running);
        Ok(self.merge(&plan, answers, limit as usize, deadline))
    }

    /// Sends `ask` its scan: the ranges it covers, and its share of the
    /// page's keys.
    fn ask(&self, plan: &Coverage, ask: Ask, keys: &KeyRange, limit: u32) -> Named {
        let share = plan.share(&ask) * f64::from(limit) * SHARE_SLACK;
        let request = Scan {
            keys: keys.clone(),
            positions: ask
                .ranges
                .iter()
                .map(|&i| plan.positions(i).clone())
                .collect(),
            limit: (share.ceil() as u32).saturating_add(SHARE_EXTRA).min(limit),
        };
        let call = self.transport.rpc(&ask.node, request);
        Named::new(ask, call)
    }

    /// The page from every range's answers (see the module doc).
    fn merge(
        &self,
        plan: &Coverage,
        answers: Vec<(Ask, Scanned)>,
        limit: usize,
        deadline: Instant,
    ) -> Page {
        let bound: Option<String> = answers
            .iter()
            .filter_map(|(_, scanned)| scanned.through.clone())
            .min();
        let within = |key: &str| bound.as_deref().is_none_or(|b| key <= b);
        // Each key with what every replica that covered its range answered.
        let mut seen: BTreeMap<String, Vec<read_repair::Reply>> = BTreeMap::new();
        for (ask, scanned) in &answers {
            for (key, set) in &scanned.entries {
                if !within(key) {
                    break;
                }
                // A set that does not decode counts as absent here; the
                // repair below overwrites it.
                let set = set.decode().ok();
                seen.entry(key.clone())
                    .or_default()
                    .push((ask.node.clone(), set));
            }
        }
        let now = self.replica.now_ms();
        let mut page = Page::default();
        for (key, mut replies) in seen {
            // The replicas of this key's range that answered without it.
            if let Some(range) = plan.range_of(position(key.as_bytes())) {
                for (ask, _) in &answers {
                    let holds = replies.iter().any(|(node, _)| *node == ask.node);
                    if ask.ranges.contains(&range) && !holds {
                        replies.push((ask.node.clone(), None));
                    }
                }
            }
            let Some(mut merged) = read_repair::merge_all(&replies) else {
                continue;
            };
            merged.expire(now);
            let rest = Calls::sealed(Arc::clone(&self.transport));
            read_repair::spawn(
                Arc::clone(&self.transport),
                key.clone(),
                replies,
                rest,
                deadline,
                now,
            );
            if merged.is_deleted() {
                continue;
            }
            if page.items.len() == limit {
                // Cut: the next page starts after the last key returned.
                page.next = page.items.last().map(|(k, _)| after(k));
                return page;
            }
            page.items.push((key, merged));
        }
        page.next = bound.as_deref().map(after);
        page
    }
}

/// The first key after `key` in bytewise order: `key` and a zero byte.
pub fn after(key: &str) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key.as_bytes());
    next.push(0);
    next
}

/// A scan call and what it was for.
struct Named {
    ask: Option<Ask>,
    call: Call<Scanned>,
}

impl Named {
    fn new(ask: Ask, call: Call<Scanned>) -> Named {
        Named {
            ask: Some(ask),
            call,
        }
    }
}

impl std::future::Future for Named {
    type Output = (Ask, Result<Scanned>);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let reply = std::task::ready!(self.call.as_mut().poll(cx));
        let ask = self.ask.take().unwrap_or_else(|| Ask {
            node: String::new(),
            ranges: Vec::new(),
        });
        std::task::Poll::Ready((ask, reply))
    }
}

/// A page that could not have `r` answers for some range: a 503 that
/// names the replicas that failed.
fn not_covered(uncovered: Option<Uncovered>, r: usize, failed: Vec<(String, String)>) -> Error {
    let acked = uncovered.map_or(0, |u| u.answered);
    Error::QuorumNotMet {
        needed: r,
        acked,
        primary_acked: acked,
        failed,
    }
}
