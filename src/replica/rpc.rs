//! The replica's peer messages, each tied to its reply, and the answers
//! the replica gives them.
//!
//! | request | reply | what for |
//! |---|---|---|
//! | [`Read`] | `Option<SiblingSet>` | a replica's part of a read |
//! | [`Coordinate`] | [`Coordinated`] | mint a client write's dot here |
//! | [`Merge`] | [`Merged`] | replication, read repair (the set encoded once) |
//! | [`v1::Merge`] | [`Merged`] | the same, from and to protocol 1 nodes |
//! | [`Merges`] | [`Merged`] | a client batch's writes to one replica (protocol 6) |
//! | [`Reads`] | `Vec<Option<EncodedSet>>` | a client batch's reads of one replica (protocol 6) |
//! | [`Hint`] | [`Merged`] | sloppy quorum: keep a set for a primary |
//! | [`Handoff`] | [`Merged`] | ownership handoff, anti-entropy repair |
//! | [`Fetch`] | `Vec<Option<SiblingSet>>` | verify a handoff, repair |
//! | [`Purge`] | [`Merged`] | tombstones every replica holds go |
//! | [`Scan`] | [`Scanned`] | a replica's part of a client scan (protocol 5) |
//!
//! Writes are answered only once stored (durably, where the node fsyncs
//! each write), so an acknowledgement means the data survives a crash of
//! that replica. Reads, merges, hints and scans are batchable: under load
//! a lane coalesces them per peer (`peer::batch`) and they travel on the
//! peer's stream, and their merges share one group commit. A scan's answer
//! is larger than the others (up to half the peer message limit, about a
//! page's worth of sets: 5 to 10 KB for 100-byte values); over HTTP/2 its
//! request, HPACK and task cost a page about 0.03 of a GET's CPU per key
//! (docs/benchmarks.md, Scans).

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Replica;
use super::Until;
use super::events::Cause;
use crate::budget::Budget;
use crate::config::MAX_HANDOFF_BATCH;
use crate::error::{Error, Result};
use crate::peer::versions::{OUTBOX_PROTOCOL, SCAN_PROTOCOL};
use crate::peer::{Answer, Frame, Rpc, Service, Services, Transport};
use crate::ring::Position;
use crate::store::{KeyRange, Pending, ScanLimits};
use crate::version::{Content, Context, Dot, SiblingSet};

/// Return the local sibling set of `key`, if the replica has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub key: String,
}

impl Rpc for Read {
    const SERVICE: Service = Service::new("replica.read", 1).batchable();
    type Reply = Option<SiblingSet>;
}

/// Coordinate a client write: mint a dot from the receiver's counter, apply
/// `content` with the client's `context` to the local copy, and answer with
/// the resulting set once it is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinate {
    pub key: String,
    pub context: Context,
    pub content: Content,
    /// The client's `Idempotency-Key`: if the set already records it, the
    /// write is a retry and nothing new is minted.
    pub request_id: Option<String>,
}

/// A coordinated write was minted: the dot, the resulting set, and whether
/// the minting replica keeps it: `Ok(durable)` once it holds it (fsynced,
/// with `durable`), `Err(why)` when its own fsync failed. Either way the
/// write exists, under this one dot: the coordinator sends the set on and
/// never has another replica mint it again; a minter that could not keep
/// it counts toward no quorum. (A failed commit is an error instead: the
/// set was never handed out, so the write exists nowhere.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinated {
    pub dot: Dot,
    pub set: SiblingSet,
    pub kept: std::result::Result<bool, String>,
}

impl Rpc for Coordinate {
    const SERVICE: Service = Service::new("replica.coordinate", 1);
    type Reply = Coordinated;
}

/// Merge `set` into the local copy of `key` (replication, read repair) and
/// answer once it is stored. The set travels as its bytes, encoded once
/// for all the replicas a write goes to (protocol 2; [`v1::Merge`] before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    pub key: String,
    pub set: EncodedSet,
}

/// Merge every set, each into the local copy of its key, and answer once
/// all are stored: the writes of one client batch (`POST /batch`) that go
/// to this replica, in one message instead of one each (protocol 6). The
/// answer is one for all: a replica that could not store one of them
/// fails the message, and the coordinator hints every set in it (a merge
/// is idempotent, so the sets this replica did store lose nothing). At
/// most [`MAX_HANDOFF_BATCH`] sets; the transport bounds its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merges(pub Vec<Merge>);

impl Rpc for Merges {
    const SERVICE: Service = Service::new("replica.merges", 1)
        .batchable()
        .since(OUTBOX_PROTOCOL);
    type Reply = Merged;
}

/// Return the local sets of these keys as stored, in the order asked: the
/// reads of one client batch (`POST /batch`) that ask this replica, in one
/// message instead of one each (protocol 6). At most [`MAX_HANDOFF_BATCH`]
/// keys; the answer covers a prefix of them, as many as fit the replica's
/// message budget (at least one), and the asker has the rest read
/// elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reads(pub Vec<String>);

impl Rpc for Reads {
    const SERVICE: Service = Service::new("replica.reads", 1)
        .batchable()
        .since(OUTBOX_PROTOCOL);
    type Reply = Vec<Option<EncodedSet>>;
}

/// A sibling set as postcard bytes: encoded once, shared by every message
/// that carries it (a cheap clone), decoded by the receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedSet(Bytes);

impl EncodedSet {
    /// The set's bytes, in the encoding the store keeps it in.
    pub fn encode(set: &SiblingSet) -> Result<EncodedSet> {
        crate::store::encode_set(set).map(|bytes| EncodedSet(Bytes::from(bytes)))
    }

    /// The bytes a store wrote for a set: already its encoding.
    pub(crate) fn stored(bytes: Bytes) -> EncodedSet {
        EncodedSet(bytes)
    }

    /// `set` encoded once for however many messages carry it: the bytes
    /// `slot` holds, or new ones kept there.
    pub fn once(slot: &mut Option<EncodedSet>, set: &SiblingSet) -> Result<EncodedSet> {
        if let Some(encoded) = slot {
            return Ok(encoded.clone());
        }
        Ok(slot.insert(EncodedSet::encode(set)?).clone())
    }

    /// How many bytes the set takes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true of a set's bytes; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The set, or a 400 when the bytes a peer sent are not one.
    pub fn decode(&self) -> Result<SiblingSet> {
        postcard::from_bytes(&self.0)
            .map_err(|e| Error::BodyRead(format!("a merged sibling set does not decode: {e}")))
    }
}

/// The messages of protocol 1 that protocol 2 changed: a node of the
/// older protocol sends and understands only these, so a newer node still
/// answers them and turns its own requests into them for such a peer
/// ([`Rpc::frame_for`]).
pub mod v1 {
    use super::*;

    /// [`super::Merge`] with the set inline.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Merge {
        pub key: String,
        pub set: SiblingSet,
    }

    impl Rpc for Merge {
        const SERVICE: Service = Service::new("replica.merge", 1).batchable();
        type Reply = Merged;
    }
}

/// A merge (or a batch of them) is stored, durably or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merged {
    pub durable: bool,
}

impl Rpc for Merge {
    const SERVICE: Service = Service::new("replica.merge", 2).batchable().since(2);
    type Reply = Merged;

    fn frame_for(&self, protocol: u16) -> Result<Frame> {
        if protocol >= Self::SERVICE.since {
            return Frame::of(self);
        }
        Frame::of(&v1::Merge {
            key: self.key.clone(),
            set: self.set.decode()?,
        })
    }
}

/// Sloppy quorum: `owner`, a primary replica of `key`, is unreachable; keep
/// `set` for it (merged into the local store, where the handoff sweep finds
/// it as data this node does not own and delivers it to the owners once
/// they answer, verified, before dropping it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub owner: String,
    pub key: String,
    pub set: SiblingSet,
}

impl Rpc for Hint {
    const SERVICE: Service = Service::new("replica.hint", 1).batchable();
    type Reply = Merged;
}

/// Ownership handoff (and anti-entropy repair): merge every entry, answer
/// once all are stored. At most [`MAX_HANDOFF_BATCH`] entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff(pub Vec<(String, SiblingSet)>);

impl Rpc for Handoff {
    const SERVICE: Service = Service::new("replica.handoff", 1);
    type Reply = Merged;
}

/// Return the local sets of these keys, in the order asked (to verify a
/// handoff, or to repair). At most [`MAX_HANDOFF_BATCH`] keys. The answer
/// covers a prefix of the keys, never empty, as many as fit the
/// replica's message budget; the asker asks again for the rest
/// ([`fetch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch(pub Vec<String>);

impl Rpc for Fetch {
    const SERVICE: Service = Service::new("replica.fetch", 1);
    type Reply = Vec<Option<SiblingSet>>;
}

/// Tombstone purge: every replica of these keys was seen holding exactly
/// the given tombstone-only set; where the local set is still that set,
/// replace it by its grave (the siblings go, the context stays). Answered
/// once stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge(pub Vec<(String, SiblingSet)>);

impl Rpc for Purge {
    const SERVICE: Service = Service::new("replica.purge", 1);
    type Reply = Merged;
}

/// A client scan's part on this replica: the keys of `keys` (in key
/// order) whose ring positions fall in `positions` (the token ranges the
/// coordinator asks this replica to cover), at most `limit` of them, with
/// their sets as stored, tombstones included (the coordinator merges them
/// with the other replicas'). Answered as [`Scanned`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    pub keys: KeyRange,
    pub positions: Vec<RangeInclusive<Position>>,
    pub limit: u32,
}

/// What a replica found for a [`Scan`]: the keys in order, and where it
/// stopped short of the range's end (every wanted key up to `through` is
/// in `entries`; `None`: it reached the end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scanned {
    pub entries: Vec<(String, EncodedSet)>,
    pub through: Option<String>,
}

impl Rpc for Scan {
    const SERVICE: Service = Service::new("replica.scan", 1)
        .batchable()
        .since(SCAN_PROTOCOL);
    type Reply = Scanned;
}

/// Most keys one [`Scan`] returns, and most a client page asks for.
pub const MAX_SCAN_KEYS: u32 = 1000;
/// Most token ranges one [`Scan`] names: a ring of 64 nodes at 256 tokens
/// each, and the bytes of a message stay bounded by the transport.
pub const MAX_SCAN_RANGES: usize = 16_384;

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
            r.check_open()?;
            check_batch(merges.len())?;
            // Decoded and queued together, so that they share one group
            // commit, then awaited.
            let pending = merges
                .into_iter()
                .map(|Merge { key, set }| Ok((key.clone(), r.merge(key, set.decode()?)?)))
                .collect::<Result<Vec<_>>>()?;
            for (key, p) in pending {
                r.publish(&key, p, Cause::Merge).await?;
            }
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
        self.check_open()?;
        check_batch(entries.len())?;
        let pending = entries
            .into_iter()
            .map(|(key, set)| Ok((key.clone(), self.merge(key, set)?)))
            .collect::<Result<Vec<_>>>()?;
        for (key, p) in pending {
            self.publish(&key, p, Cause::Handoff).await?;
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

/// The sets `to` holds of `keys`, in order: asked for in as many messages
/// as its byte budget takes ([`Fetch`] answers a prefix).
pub async fn fetch(
    transport: &dyn Transport,
    to: &str,
    keys: Vec<String>,
) -> Result<Vec<Option<SiblingSet>>> {
    let mut sets = Vec::with_capacity(keys.len());
    let mut rest = keys.as_slice();
    while !rest.is_empty() {
        let answered = transport.rpc(to, Fetch(rest.to_vec())).await?;
        if answered.is_empty() || answered.len() > rest.len() {
            return Err(Error::Protocol(format!(
                "{to} answered a fetch of {} keys with {} sets",
                rest.len(),
                answered.len()
            )));
        }
        rest = &rest[answered.len()..];
        sets.extend(answered);
    }
    Ok(sets)
}

/// `entries` in runs of at most `budget` bytes of values each, in order; a
/// set larger than the budget is a run of its own.
pub fn by_bytes(
    entries: Vec<(String, SiblingSet)>,
    budget: usize,
) -> Vec<Vec<(String, SiblingSet)>> {
    let mut runs: Vec<Vec<(String, SiblingSet)>> = Vec::new();
    let mut room = Budget::new(budget);
    for entry in entries {
        let size = entry.1.value_bytes();
        match runs.last_mut() {
            Some(run) if room.admit(size) => run.push(entry),
            _ => {
                room = Budget::new(budget);
                room.admit(size);
                runs.push(vec![entry]);
            }
        }
    }
    runs
}

fn check_batch(len: usize) -> Result<()> {
    if len > MAX_HANDOFF_BATCH {
        return Err(Error::Protocol(format!(
            "a batch of {len} keys; at most {MAX_HANDOFF_BATCH}"
        )));
    }
    Ok(())
}
