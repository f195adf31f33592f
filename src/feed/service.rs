//! The feed of one node: it answers `changes.read` from its own log, keeps
//! that log within its retention, and serves clients' pages by reading
//! every member's log (`mod.rs` has the idea).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::rpc::{Entries, From, MAX_READ_BYTES, MAX_WAIT_MS, ReadChanges};
use super::{CLOCK_MARGIN_MS, Cursor, Page, SETTLE_MS};
use crate::clock::system_ms;
use crate::config::ChangesConfig;
use crate::error::{Error, Result};
use crate::membership::Cluster;
use crate::peer::Services;
use crate::replica::events::{Event, Subscriber};
use crate::ring::Status;
use crate::store::Store;
use crate::store::changes::{Mark, ReadLimits};

/// Bytes of entries one page gathers from all members together.
pub const PAGE_BYTES: usize = 1024 * 1024;
/// Entries one read of a log looks at, matching or not.
const MAX_SCANNED: usize = 20_000;
/// Entries one trim drops; a trim that drops this many goes on at once.
const TRIM_BATCH: usize = 10_000;

pub struct FeedService {
    store: Arc<dyn Store>,
    cluster: Arc<Cluster>,
    config: ChangesConfig,
    /// Rung whenever the log takes an entry.
    logged: Notify,
    /// Client requests being served (`changes.max_readers` permits).
    readers: Semaphore,
}

/// A page of the feed.
pub struct Answer {
    pub page: Page,
    pub next: Cursor,
}

impl FeedService {
    pub fn new(
        store: Arc<dyn Store>,
        cluster: Arc<Cluster>,
        config: &ChangesConfig,
    ) -> Arc<FeedService> {
        Arc::new(FeedService {
            store,
            cluster,
            config: config.clone(),
            logged: Notify::new(),
            readers: Semaphore::new(config.max_readers),
        })
    }

    /// Admits one client request, or refuses it past `changes.max_readers`.
    pub fn admit(&self) -> Result<SemaphorePermit<'_>> {
        self.readers.try_acquire().map_err(|_| Error::Overloaded {
            what: "change feed readers",
            key: "changes.max_readers",
            limit: self.config.max_readers,
        })
    }

    /// Registers the handler of `changes.read`.
    pub fn serve(self: &Arc<Self>, services: &Services) {
        let service = Arc::clone(self);
        services.register(move |read: ReadChanges| {
            let service = Arc::clone(&service);
            async move { service.answer(read).await }
        });
    }

    /// Keeps the log within its retention, for as long as the node runs.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.trim_interval_ms));
        loop {
            tick.tick().await;
            let service = Arc::clone(&self);
            if let Err(e) = off_the_runtime(move || service.trim()).await {
                tracing::warn!(error = %e, "trimming the change log failed");
            }
        }
    }

    fn trim(&self) -> Result<()> {
        let before = system_ms().saturating_sub(self.config.retention_ms);
        let log = self.store.changes();
        while log.trim(before, self.config.max_bytes, TRIM_BATCH)? == TRIM_BATCH {}
        let (entries, bytes) = log.size();
        metrics::gauge!(crate::metrics::CHANGE_LOG_ENTRIES).set(entries as f64);
        metrics::gauge!(crate::metrics::CHANGE_LOG_BYTES).set(bytes as f64);
        Ok(())
    }

    /// This node's answer to a `changes.read`: at once when its log holds
    /// settled entries past the mark, else when one settles, or empty once
    /// `wait_ms` passes.
    async fn answer(&self, read: ReadChanges) -> Result<Entries> {
        let mut from = match read.from {
            From::Now => {
                return Ok(Entries {
                    entries: Vec::new(),
                    next: Mark::After(self.store.changes().now()),
                    expired: false,
                    unsettled: false,
                });
            }
            From::Mark(mark) => mark,
        };
        let limits = ReadLimits {
            max_bytes: read.max_bytes.min(MAX_READ_BYTES) as usize,
            max_scanned: MAX_SCANNED,
            settle_ms: SETTLE_MS,
        };
        let until = Instant::now() + Duration::from_millis(read.wait_ms.min(MAX_WAIT_MS).into());
        let prefix: Arc<str> = read.prefix.into();
        loop {
            // Armed before the read: an entry logged while it runs still rings.
            let rung = self.logged.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            // A read scans and decodes up to MAX_SCANNED entries from disk:
            // off the runtime's threads.
            let (store, prefix) = (Arc::clone(&self.store), Arc::clone(&prefix));
            let found = off_the_runtime(move || {
                store
                    .changes()
                    .read(from, &|key| key.starts_with(&*prefix), limits, system_ms())
            })
            .await?;
            let now = Instant::now();
            if found.expired || !found.entries.is_empty() || now >= until {
                return Ok(Entries {
                    entries: found.entries.into_iter().map(|(_, e)| e).collect(),
                    next: found.next,
                    expired: found.expired,
                    unsettled: found.unsettled,
                });
            }
            from = found.next;
            if found.more {
                // Cut short by its scan: go on at once.
                continue;
            }
            if found.unsettled {
                tokio::time::sleep_until(until.min(now + Duration::from_millis(SETTLE_MS))).await;
            } else {
                tokio::select! {
                    () = &mut rung => {}
                    () = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }

    /// The members whose logs a page reads: every member still in the ring
    /// (a leaving one too: it logged writes until it left).
    fn members(&self) -> Vec<String> {
        self.cluster
            .roster()
            .members()
            .iter()
            .filter(|m| m.status != Status::Removed)
            .map(|m| m.id.clone())
            .collect()
    }

    /// A cursor at the present: each member's log end; a member that does
    /// not answer is read, later, from a little before now.
    pub async fn now(&self) -> Cursor {
        let since_ms = system_ms().saturating_sub(CLOCK_MARGIN_MS);
        let transport = self.cluster.transport();
        let calls = self.members().into_iter().map(|member| {
            let call = transport.rpc(
                &member,
                ReadChanges {
                    from: From::Now,
                    prefix: String::new(),
                    max_bytes: 0,
                    wait_ms: 0,
                },
            );
            async move { (member, call.await) }
        });
        let marks = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|(member, reply)| {
                let mark = match reply {
                    Ok(entries) => entries.next,
                    Err(e) => {
                        tracing::debug!(%member, error = %e, "a member's log end is unknown; it is read from a time");
                        Mark::Since(since_ms)
                    }
                };
                (member, mark)
            })
            .collect();
        Cursor { since_ms, marks }
    }

    /// The changes under `prefix` after `cursor`: as soon as there is one,
    /// or none once `wait` passes (or `stop` resolves). `None` when some
    /// member's log no longer reaches back to the cursor: the client must
    /// rescan (410 `cursor_expired`).
    pub async fn page(
        &self,
        cursor: Cursor,
        prefix: &str,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Answer>> {
        let until = Instant::now() + wait;
        let members = self.members();
        let started_ms = system_ms();
        let mut marks: BTreeMap<String, Mark> = members
            .iter()
            .map(|m| {
                let mark = cursor.marks.get(m).copied();
                (m.clone(), mark.unwrap_or(Mark::Since(cursor.since_ms)))
            })
            .collect();
        // A member this node does not know yet (its roster lags) keeps its
        // mark for a node that does; one this node knows removed goes.
        let roster = self.cluster.roster().members();
        for (member, mark) in &cursor.marks {
            if roster.get(member).is_none() {
                marks.entry(member.clone()).or_insert(*mark);
            }
        }
        let budget = (PAGE_BYTES / members.len().max(1)).clamp(16 * 1024, MAX_READ_BYTES as usize);
        let mut page = Page::default();
        tokio::pin!(stop);
        let mut first = true;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let wait_ms = match first {
                true => 0,
                false => remaining.as_millis().min(MAX_WAIT_MS.into()) as u32,
            };
            first = false;
            // A round cut short by `stop` changed nothing: its marks and
            // entries are applied only once every reply is in.
            let mut halted = false;
            let round = self.round(&members, &mut marks, prefix, budget, wait_ms, &mut page);
            let expired = tokio::select! {
                expired = round => expired,
                () = &mut stop => {
                    halted = true;
                    false
                }
            };
            if expired {
                return Ok(None);
            }
            if halted || !page.is_empty() || Instant::now() >= until {
                break;
            }
        }
        let next = Cursor {
            since_ms: started_ms
                .saturating_sub(CLOCK_MARGIN_MS)
                .max(cursor.since_ms),
            marks,
        };
        Ok(Some(Answer { page, next }))
    }

    /// Reads every member's log once, each waiting up to `wait_ms` for an
    /// entry. Once one answers with entries, the others are read again
    /// without waiting; then the members that held entries too young to
    /// read are read once more when those have settled (the other
    /// replicas of the same writes, most often), so that a page holds
    /// every replica's entry of a write and keeps it once. Returns whether
    /// some member's log no longer reaches back to its mark.
    async fn round(
        &self,
        members: &[String],
        marks: &mut BTreeMap<String, Mark>,
        prefix: &str,
        max_bytes: usize,
        wait_ms: u32,
        page: &mut Page,
    ) -> bool {
        let call = |member: &String, mark: Mark, wait_ms: u32| {
            let call = self.cluster.transport().rpc(
                member,
                ReadChanges {
                    from: From::Mark(mark),
                    prefix: prefix.to_string(),
                    max_bytes: max_bytes as u32,
                    wait_ms,
                },
            );
            let member = member.clone();
            async move { (member, call.await) }
        };
        let mark = |member: &String| marks.get(member).copied().unwrap_or(Mark::Since(0));
        let mut replies: BTreeMap<String, Entries> = BTreeMap::new();
        let mut keep = |member: String, reply: Result<Entries>| match reply {
            Ok(entries) => {
                replies.insert(member, entries);
            }
            // Its mark stays: its entries are read once it answers.
            Err(e) => {
                tracing::debug!(%member, error = %e, "a member's change log could not be read")
            }
        };
        let mut pending: FuturesUnordered<_> =
            members.iter().map(|m| call(m, mark(m), wait_ms)).collect();
        let mut unanswered: Vec<String> = members.to_vec();
        while let Some((member, reply)) = pending.next().await {
            unanswered.retain(|m| *m != member);
            let found = reply
                .as_ref()
                .is_ok_and(|e| !e.entries.is_empty() || e.expired);
            keep(member, reply);
            if found && wait_ms > 0 {
                break;
            }
        }
        drop(pending);
        let sweep = unanswered.iter().map(|m| call(m, mark(m), 0));
        for (member, reply) in futures_util::future::join_all(sweep).await {
            keep(member, reply);
        }
        if replies.values().any(|e| !e.entries.is_empty()) {
            let young: Vec<(String, Mark)> = replies
                .iter()
                .filter(|(_, e)| e.unsettled && !e.expired)
                .map(|(m, e)| (m.clone(), e.next))
                .collect();
            let settle = (SETTLE_MS + SETTLE_MS / 5) as u32;
            let calls = young.iter().map(|(m, next)| call(m, *next, settle));
            for (member, reply) in futures_util::future::join_all(calls).await {
                if let (Ok(later), Some(earlier)) = (reply, replies.get_mut(&member)) {
                    earlier.entries.extend(later.entries);
                    earlier.next = later.next;
                    earlier.expired |= later.expired;
                }
            }
        }
        let mut expired = false;
        for (member, entries) in replies {
            expired |= entries.expired;
            marks.insert(member, entries.next);
            for entry in entries.entries {
                page.add(entry);
            }
        }
        expired
    }
}

/// Runs `work` (disk reads, decoding) on the blocking pool, so that it
/// holds no runtime thread; inline on a current-thread runtime (the
/// simulation), where a thread outside it would break the replay of a
/// seed (as the Merkle tree build does, `antientropy/service.rs`).
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Storage(format!("the change log's work stopped: {e}")))?
}

impl Subscriber for FeedService {
    fn changed(&self, event: &Event<'_>) {
        if event.cause.is_logged() {
            self.logged.notify_waiters();
        }
    }
}
