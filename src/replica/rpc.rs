//! The replica's peer messages, each tied to its reply (the answers the
//! replica gives them are in `answers.rs`).
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

use std::ops::RangeInclusive;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::peer::versions::{OUTBOX_PROTOCOL, SCAN_PROTOCOL};
use crate::peer::{Frame, Rpc, Service, Transport};
use crate::ring::Position;
use crate::store::KeyRange;
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
/// most [`MAX_HANDOFF_BATCH`](crate::config::MAX_HANDOFF_BATCH) sets; the transport bounds its bytes.
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
/// message instead of one each (protocol 6). At most [`MAX_HANDOFF_BATCH`](crate::config::MAX_HANDOFF_BATCH)
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
/// once all are stored. At most [`MAX_HANDOFF_BATCH`](crate::config::MAX_HANDOFF_BATCH) entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff(pub Vec<(String, SiblingSet)>);

impl Rpc for Handoff {
    const SERVICE: Service = Service::new("replica.handoff", 1);
    type Reply = Merged;
}

/// Return the local sets of these keys, in the order asked (to verify a
/// handoff, or to repair). At most [`MAX_HANDOFF_BATCH`](crate::config::MAX_HANDOFF_BATCH) keys. The answer
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
