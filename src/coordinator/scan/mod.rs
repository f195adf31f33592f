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

mod page;

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
use crate::ring::Ring;
use crate::ring::ranges::Range;
use crate::store::KeyRange;
use crate::version::SiblingSet;

/// A page of a scan: the live keys in order with their merged sets, and
/// where the next page starts (`None`: the range is done).
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<(String, SiblingSet)>,
    pub next: Option<Vec<u8>>,
}

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
        let page = async {
            if keys.is_empty() {
                return Ok(Page::default());
            }
            self.coordinate_scan(keys, limit.clamp(1, MAX_SCAN_KEYS), r, deadline)
                .await
        };
        observe::measured(self.cluster.me(), "scan", page).await
    }

    /// The page of a non-empty range, `limit` within 1..=[`MAX_SCAN_KEYS`].
    async fn coordinate_scan(
        &self,
        keys: KeyRange,
        limit: u32,
        r: usize,
        deadline: Instant,
    ) -> Result<Page> {
        let ring = self.cluster.routes().ring();
        let ranges = self.ranges.of(&ring, self.cluster.n());
        if ranges.is_empty() {
            return Err(Error::Unavailable {
                node: self.cluster.me().to_string(),
                reason: "this node knows no ring yet: it has not joined one".into(),
            });
        }
        // One order of the nodes for the whole page (this node first, the
        // rest at random, those held down last), so that the ranges' asks
        // fall on as few nodes as they can: each node then covers more of
        // the ring and skips fewer keys it holds but was not asked for,
        // and pages still spread over the nodes.
        let nodes = ring.owners().iter().map(|owner| owner.id.clone()).collect();
        let rank: std::collections::HashMap<String, usize> = self
            .read_order(nodes)
            .into_iter()
            .enumerate()
            .map(|(i, node)| (node, i))
            .collect();
        let (mut plan, asks) = Coverage::new(&ranges, r, |mut replicas| {
            replicas.sort_by_key(|node| rank.get(node).copied().unwrap_or(usize::MAX));
            replicas
        });
        let mut running = FuturesUnordered::new();
        // This node's own part runs when asked, inside this task: ask the
        // others first, so that their work overlaps it.
        let mut asks = asks;
        asks.sort_by_key(|ask| ask.node == self.cluster.me());
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
        Ok(self.merge(&plan, &answers, limit as usize, deadline))
    }

    /// Sends `ask` its scan: the ranges it covers, and its share of the
    /// page's keys.
    fn ask(&self, plan: &Coverage, ask: Ask, keys: &KeyRange, limit: u32) -> Named {
        let request = Scan {
            keys: keys.clone(),
            positions: ask
                .ranges
                .iter()
                .map(|&i| plan.positions(i).clone())
                .collect(),
            limit: page::ask_limit(plan.share(&ask), limit),
        };
        let call = self.transport.rpc(&ask.node, request);
        Named::new(ask, call)
    }

    /// The page from every range's answers ([`page::merge`]), with a
    /// repair of every key whose replicas differed.
    fn merge(
        &self,
        plan: &Coverage,
        answers: &[(Ask, Scanned)],
        limit: usize,
        deadline: Instant,
    ) -> Page {
        let now = self.replica.now_ms();
        let merged = page::merge(plan, answers, limit, now);
        let mut items = Vec::with_capacity(merged.keys.len());
        for page::Key {
            key,
            merged,
            repair,
        } in merged.keys
        {
            if let Some(replies) = repair {
                let rest = Calls::sealed(Arc::clone(&self.transport));
                let transport = Arc::clone(&self.transport);
                read_repair::spawn(transport, key.clone(), replies, rest, deadline, now);
            }
            if !merged.is_deleted() {
                items.push((key, merged));
            }
        }
        Page {
            items,
            next: merged.next,
        }
    }
}

/// The ranges of the last ring a scan covered: computing them asks a
/// preference list per token, so a page reuses them while the ring (the
/// members document's, shared by every request) is the same one.
#[derive(Default)]
pub(super) struct RangesCache(parking_lot::Mutex<Option<Cached>>);

/// A ring, the N its ranges were computed for, and its ranges.
type Cached = (Arc<Ring>, usize, Arc<Vec<Range>>);

impl RangesCache {
    fn of(&self, ring: &Arc<Ring>, n: usize) -> Arc<Vec<Range>> {
        let mut cached = self.0.lock();
        if let Some((r, cached_n, ranges)) = &*cached
            && Arc::ptr_eq(r, ring)
            && *cached_n == n
        {
            return Arc::clone(ranges);
        }
        let ranges = Arc::new(ring.ranges(n));
        *cached = Some((Arc::clone(ring), n, Arc::clone(&ranges)));
        ranges
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
