//! The replica's answers to its peer messages (`rpc.rs`): each handler
//! registered in the node's `Services`, timed in
//! `chorus_replica_duration_seconds`, and what it checks of what a peer
//! sent (a node that left takes no writes; no batch of more than
//! [`MAX_HANDOFF_BATCH`] keys; scan bounds).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Replica;
use super::Until;
use super::events::Cause;
use super::rpc::{
    Coordinate, Coordinated, EncodedSet, Fetch, Handoff, Hint, MAX_SCAN_KEYS, MAX_SCAN_RANGES,
    Merge, Merged, Merges, Purge, Read, Reads, Scan, Scanned, v1,
};
use crate::budget::Budget;
use crate::config::MAX_HANDOFF_BATCH;
use crate::error::{Error, Result};
use crate::peer::{Answer, Rpc, Services};
use crate::ring::Position;
use crate::store::{Pending, ScanLimits};
use crate::version::SiblingSet;

impl Replica {
    /// Answers a [`Scan`]: index entries looked at are bounded too (eight
    /// per key asked and some), so a replica asked for a small part of
    /// what it holds still answers in bounded work, with `through` saying
    /// how far it got.
    pub fn scan(
        &self,
        Scan {
            keys,
            positions,
            limit,
        }: Scan,
    ) -> Result<Scanned> {
        if !(1..=MAX_SCAN_KEYS).contains(&limit) {
            return Err(Error::BodyRead(format!(
                "a scan asks for {limit} keys; 1 to {MAX_SCAN_KEYS}"
            )));
        }
        if positions.len() > MAX_SCAN_RANGES {
            return Err(Error::BodyRead(format!(
                "a scan names {} ranges; at most {MAX_SCAN_RANGES}",
                positions.len()
            )));
        }
        let longest = keys.end.as_ref().map_or(0, Vec::len).max(keys.start.len());
        if longest > crate::config::MAX_KEY_BYTES + 1 {
            return Err(Error::BodyRead(format!(
                "a scan bound of {longest} bytes; no key is longer than {}",
                crate::config::MAX_KEY_BYTES
            )));
        }
        let mut positions = positions;
        positions.sort_by_key(|r| *r.start());
        let wanted = |at: Position| {
            let i = positions.partition_point(|r| *r.end() < at);
            positions.get(i).is_some_and(|r| r.contains(&at))
        };
        let limit = limit as usize;
        let limits = ScanLimits {
            keys: limit,
            bytes: self.budget,
            examined: limit.saturating_mul(8).saturating_add(64),
        };
        let found = self.store.scan_keys(&keys, &wanted, limits)?;
        Ok(Scanned {
            entries: found
                .entries
                .into_iter()
                .map(|(key, set)| (key, EncodedSet::stored(set)))
                .collect(),
            through: found.through,
        })
    }

    /// Registers the replica's handlers in `services`.
    pub fn serve(self: &Arc<Self>, services: &Services) {
        // A peer's read is answered with the set's bytes as stored: the
        // asker decodes them, as it would have decoded the same set
        // encoded again here (`crate::encoding`).
        let replica = Arc::clone(self);
        services.register_answering(
            {
                let replica = Arc::clone(self);
                move |Read { key }| std::future::ready(timed("read", || replica.store.get(&key)))
            },
            move |Read { key }| {
                std::future::ready(timed("read", || {
                    let stored = replica.store.get_encoded(&key)?;
                    Ok(Answer::stored(stored.as_deref()))
                }))
            },
        );
        self.answer(services, "coordinate", |r, c: Coordinate| async move {
            r.answer_coordinate(c).await
        });
        self.answer(services, "merge", |r, Merge { key, set }| async move {
            r.check_open()?;
            r.merge_and_publish(key, set.decode()?, Cause::Merge)
                .await?;
            Ok(r.merged())
        });
        self.answer(services, "merge", |r, v1::Merge { key, set }| async move {
            r.check_open()?;
            r.merge_and_publish(key, set, Cause::Merge).await?;
            Ok(r.merged())
        });
        self.answer(services, "merges", |r, Merges(merges)| async move {
            check_batch(merges.len())?;
            let sets = merges
                .into_iter()
                .map(|Merge { key, set }| Ok((key, set.decode()?)))
                .collect::<Result<Vec<_>>>()?;
            r.merge_all(sets, Cause::Merge).await?;
            Ok(r.merged())
        });
        self.answer(services, "hint", |r, hint: Hint| async move {
            r.answer_hint(hint).await
        });
        self.answer(services, "handoff", |r, Handoff(entries)| async move {
            r.handoff(entries).await.map(|()| r.merged())
        });
        self.answer(services, "reads", |r, Reads(keys)| {
            std::future::ready(r.reads(&keys))
        });
        self.answer(services, "fetch", |r, Fetch(keys)| async move {
            check_batch(keys.len())?;
            let (mut sets, mut budget) = (Vec::new(), Budget::new(r.budget));
            for key in &keys {
                let set = r.store.get(key)?;
                if !budget.admit(set.as_ref().map_or(0, |s| s.value_bytes())) {
                    break;
                }
                sets.push(set);
            }
            Ok(sets)
        });
        self.answer(services, "scan", |r, scan: Scan| {
            std::future::ready(r.scan(scan))
        });
        self.answer(services, "purge", |r, Purge(entries)| async move {
            r.purge(entries).await.map(|()| r.merged())
        });
    }

    /// The stored bytes of each of `keys`, a prefix of them within the
    /// message budget ([`Reads`]).
    fn reads(&self, keys: &[String]) -> Result<Vec<Option<EncodedSet>>> {
        check_batch(keys.len())?;
        let (mut sets, mut budget) = (Vec::new(), Budget::new(self.budget));
        for key in keys {
            let set = self.store.get_encoded(key)?;
            if !budget.admit(set.as_ref().map_or(0, Bytes::len)) {
                break;
            }
            sets.push(set.map(EncodedSet::stored));
        }
        Ok(sets)
    }

    /// Registers `f` as the handler of `R`, timed as `op` in
    /// `chorus_replica_duration_seconds`.
    fn answer<R, F, Fut>(self: &Arc<Self>, services: &Services, op: &'static str, f: F)
    where
        R: Rpc,
        F: Fn(Arc<Replica>, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply>> + Send + 'static,
    {
        let replica = Arc::clone(self);
        services.register(move |request: R| {
            let (started, answer) = (std::time::Instant::now(), f(Arc::clone(&replica), request));
            async move {
                let result = answer.await;
                record_duration(op, started);
                result
            }
        });
    }

    fn merged(&self) -> Merged {
        Merged {
            durable: self.durable,
        }
    }

    /// Refuses a write once the node has left the ring.
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        Ok(())
    }

    async fn answer_coordinate(&self, c: Coordinate) -> Result<Coordinated> {
        let super::Minted {
            dot, set, durable, ..
        } = self
            .coordinate_until(c.key, c.context, c.content, c.request_id, Until::Durable)
            .await?;
        // Minted and committed is minted: a failed fsync is not an error
        // here (the coordinator would have another replica mint the write
        // again), only a copy this replica lacks. A failed commit returned
        // an error above: the set was never handed out, so the write
        // exists nowhere.
        let kept = durable
            .wait()
            .await
            .map(|()| self.durable)
            .map_err(|e| e.to_string());
        Ok(Coordinated { dot, set, kept })
    }

    async fn answer_hint(&self, Hint { owner, key, set }: Hint) -> Result<Merged> {
        self.check_open()?;
        let held = self.hints.load(Ordering::Relaxed);
        if held >= self.max_hints {
            metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "dropped").increment(1);
            tracing::warn!(
                held,
                max = self.max_hints,
                %owner,
                "hint store full (limits.max_hints); refusing a hint"
            );
            return Err(Error::Unavailable {
                node: self.identity.actor().node,
                reason: format!("holds {held} hints, the limit (limits.max_hints)"),
            });
        }
        self.merge_and_publish(key, set, Cause::Hint).await?;
        self.hints.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "queued").increment(1);
        Ok(self.merged())
    }

    /// Merges every entry (a handoff, or an anti-entropy repair), queued
    /// together so they share fsyncs; returns once all are stored.
    pub async fn handoff(&self, entries: Vec<(String, SiblingSet)>) -> Result<()> {
        self.merge_all(entries, Cause::Handoff).await
    }

    /// Merges every entry, all queued before any is awaited so that they
    /// share one group commit, and publishes each change with `cause`;
    /// returns once all are stored.
    async fn merge_all(&self, entries: Vec<(String, SiblingSet)>, cause: Cause) -> Result<()> {
        self.check_open()?;
        check_batch(entries.len())?;
        let pending = entries
            .into_iter()
            .map(|(key, set)| Ok((key.clone(), self.merge(key, set, cause)?)))
            .collect::<Result<Vec<_>>>()?;
        for (key, p) in pending {
            self.publish(&key, p, cause).await?;
        }
        Ok(())
    }

    /// Replaces each key's set by its grave where it is still exactly the
    /// tombstone-only set every replica was seen holding; returns once
    /// stored.
    pub async fn purge(&self, entries: Vec<(String, SiblingSet)>) -> Result<()> {
        self.check_open()?;
        check_batch(entries.len())?;
        let pending: Vec<(String, Pending)> = entries
            .into_iter()
            .map(|(key, expected)| {
                let pending = self.store.update(
                    &key,
                    Box::new(move |current| {
                        Ok(match current {
                            Some(set) if set == expected && set.is_tombstoned() => set.grave(),
                            other => other.unwrap_or_default(),
                        })
                    }),
                );
                (key, pending)
            })
            .collect();
        for (key, p) in pending {
            self.publish(&key, p, Cause::Purge).await?;
        }
        Ok(())
    }

    /// Drops the expired values of `keys` from this replica's store, by
    /// this node's clock: the disk space of keys nobody wrote since their
    /// TTL ran out. A key whose every value expired keeps its grave (its
    /// context), as a purged delete does. Needs no other replica: each
    /// drops what has expired by the instant every copy carries, and a
    /// merge carries the drop to the others ([`SiblingSet::expire`]).
    pub async fn expire_stored(&self, keys: Vec<String>) -> Result<()> {
        self.check_open()?;
        let now = self.now_ms();
        let pending: Vec<(String, Pending)> = keys
            .into_iter()
            .map(|key| {
                let pending = self.store.update(
                    &key,
                    Box::new(move |current| {
                        let mut set = current.unwrap_or_default();
                        set.expire(now);
                        Ok(set)
                    }),
                );
                (key, pending)
            })
            .collect();
        for (key, p) in pending {
            self.publish(&key, p, Cause::Expiry).await?;
        }
        Ok(())
    }
}

/// Runs `f`, a handler that answers at once, timed as `op` in
/// `chorus_replica_duration_seconds`.
fn timed<T>(op: &'static str, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = f();
    record_duration(op, started);
    result
}

fn record_duration(op: &'static str, started: std::time::Instant) {
    static DURATIONS: crate::metrics::Handles<&str, metrics::Histogram> =
        crate::metrics::Handles::new();
    DURATIONS
        .get(
            op,
            || metrics::histogram!(crate::metrics::REPLICA_DURATION_SECONDS, "op" => op),
        )
        .record(started.elapsed().as_secs_f64());
}

fn check_batch(len: usize) -> Result<()> {
    if len > MAX_HANDOFF_BATCH {
        return Err(Error::Protocol(format!(
            "a batch of {len} keys; at most {MAX_HANDOFF_BATCH}"
        )));
    }
    Ok(())
}
