//! The sibling set of one key: the DVV set and its one merge.

use std::cmp::Ordering;

use bytes::Bytes;
use crdts::{CmRDT, CvRDT};
use serde::{Deserialize, Serialize};

use super::actor::{Actor, Dot, VersionVector, covers};
use super::context::Context;
use super::crdt::{Crdt, Kind, Mismatch, Op, Shape};

/// What one sibling holds: a JSON value, one that expires, the
/// tombstone a delete leaves, or the state of a CRDT key.
///
/// The variants' order is their encoding (postcard writes the index):
/// new ones go at the end, so sets stored and sent by older builds still
/// decode. `Expiring` came with protocol 4, `Crdt` and `Update` with 7; a
/// node writes one only when every member speaks its protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Content {
    /// The JSON document exactly as the client sent it (validated, never re-encoded).
    Value(Bytes),
    /// The key was deleted by the write with this sibling's dot.
    Tombstone,
    /// A value written with a TTL: it is gone at `expires_ms` (ms since
    /// the Unix epoch, stamped once by the node that took the write, so
    /// every replica agrees on the instant). An expired sibling is
    /// dropped wherever a node handles its set ([`SiblingSet::expire`]),
    /// like a delete that needs no message.
    Expiring { value: Bytes, expires_ms: u64 },
    /// The state of a CRDT key (`crdt.rs`): every read folds a key's
    /// `Crdt` siblings into one with [`Crdt::merge`].
    Crdt(Crdt),
    /// A client's update of a CRDT key on its way to the replica that
    /// mints it, which applies it to its own copy and stores the result
    /// as a [`Content::Crdt`]. Never stored: a set that holds one is not
    /// well formed ([`SiblingSet::is_well_formed`]).
    Update(Op),
}

impl Content {
    /// The JSON value, unless this is a tombstone.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Content::Value(value) | Content::Expiring { value, .. } => Some(value),
            Content::Tombstone | Content::Crdt(_) | Content::Update(_) => None,
        }
    }

    /// When the value expires, if it does.
    pub fn expires_ms(&self) -> Option<u64> {
        match self {
            Content::Expiring { expires_ms, .. } => Some(*expires_ms),
            _ => None,
        }
    }

    /// Whether the value has expired by `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms().is_some_and(|at| at <= now_ms)
    }
}

/// One concurrent version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    pub content: Content,
}

/// The sibling set of one key with its causal context.
///
/// Siblings are kept sorted by dot (actor, then counter) so that two sets
/// holding the same siblings are equal field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingSet {
    context: VersionVector,
    siblings: Vec<Sibling>,
    /// Recent client writes that carried an `Idempotency-Key`, sorted by id:
    /// a retry finds the dot its first attempt minted instead of adding a
    /// second sibling.
    requests: Vec<Request>,
}

/// A client write's request id and what it produced.
///
/// An id is the client's `Idempotency-Key` (printable ASCII, no space),
/// then, since peer protocol 9, a space and a digest of the request it
/// named: `"order-17 9f86d081884c7d65"`. A write whose key is on a record
/// is the same request again when the digests agree (or either has
/// none: a record or a retry from before protocol 9), and a reuse of the
/// key for another request when they differ ([`Request::reused_by`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub dot: Dot,
    /// When the write was coordinated, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Longest `Idempotency-Key` a client may send.
pub const MAX_REQUEST_ID: usize = 128;
/// Characters of a request's digest in its id.
pub const REQUEST_DIGEST_CHARS: usize = 16;
/// Longest request id kept: a key, a space and a digest.
pub const MAX_REQUEST_RECORD: usize = MAX_REQUEST_ID + 1 + REQUEST_DIGEST_CHARS;

/// The client's key of a request id: what is before the space.
pub fn request_key(id: &str) -> &str {
    id.split_once(' ').map_or(id, |(key, _)| key)
}

fn request_digest(id: &str) -> Option<&str> {
    id.split_once(' ').map(|(_, digest)| digest)
}

impl Request {
    /// Whether the write with request id `id` reuses this record's key for
    /// another request: both carry digests, and they differ.
    pub fn reused_by(&self, id: &str) -> bool {
        match (request_digest(&self.id), request_digest(id)) {
            (Some(mine), Some(theirs)) => mine != theirs,
            _ => false,
        }
    }
}
/// Most request records one key keeps (the newest win).
pub const MAX_REQUESTS: usize = 64;

fn dot_key(dot: &Dot) -> (&Actor, u64) {
    (&dot.actor, dot.counter)
}

impl SiblingSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The causal context: every write this set has seen, superseded or not.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The set's causal context, the set consumed.
    pub fn into_context(self) -> VersionVector {
        self.context
    }

    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// True for the set that has seen nothing: no sibling, empty context.
    /// No write leaves it, so stores read it as "remove the key".
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.context.is_empty()
    }

    /// The set without its siblings: the grave a purged delete leaves. Its
    /// context still covers every dot the set had seen, so a merge of any
    /// older copy (a late hint, a replica restored from a backup) drops
    /// what that copy holds instead of bringing it back.
    pub fn grave(&self) -> SiblingSet {
        SiblingSet {
            context: self.context.clone(),
            siblings: Vec::new(),
            requests: self.requests.clone(),
        }
    }

    /// Whether the set holds tombstones and nothing else: a delete that a
    /// purge may turn into a grave.
    pub fn is_tombstoned(&self) -> bool {
        !self.siblings.is_empty() && self.is_deleted()
    }

    /// True when no sibling holds a value: the key is absent or deleted.
    /// (An expired value still counts until [`SiblingSet::expire`] drops it.)
    pub fn is_deleted(&self) -> bool {
        self.siblings
            .iter()
            .all(|s| matches!(s.content, Content::Tombstone))
    }

    /// The type of CRDT the key holds: its first `Crdt` sibling's, in dot
    /// order (two first writes of different types raced; every replica
    /// picks the same one). `None` for a plain key, an absent one, or one
    /// whose siblings are all tombstones.
    pub fn kind(&self) -> Option<Kind> {
        self.siblings.iter().find_map(|s| match &s.content {
            Content::Crdt(c) => Some(c.kind()),
            _ => None,
        })
    }

    /// The CRDT key's state: its `Crdt` siblings of its [`kind`] folded
    /// with [`Crdt::merge`] (a sibling of another type, or a plain value
    /// that raced the key's first CRDT write, is left out: the next update
    /// supersedes it). `None` when the set holds no CRDT.
    ///
    /// [`kind`]: SiblingSet::kind
    pub fn crdt(&self) -> Option<Crdt> {
        let mut states = self.siblings.iter().filter_map(|s| match &s.content {
            Content::Crdt(c) => Some(c),
            _ => None,
        });
        let mut fold = states.next()?.clone();
        for state in states {
            // Another type: left out, as documented above.
            let _ = fold.merge(state);
        }
        Some(fold)
    }

    /// Whether a sibling holds a plain JSON value (a key of `/kv`).
    pub fn holds_values(&self) -> bool {
        self.siblings.iter().any(|s| s.content.value().is_some())
    }

    /// What an update of type `kind` applies to: the key's state, or an
    /// empty one of that type for a key that holds nothing (absent, or
    /// deleted). A key of another type is a [`Mismatch`]: its type was
    /// fixed by its first write.
    pub fn crdt_for(&self, kind: Kind) -> Result<Crdt, Mismatch> {
        let wanted = Shape::Crdt(kind);
        match self.crdt() {
            Some(state) if state.kind() == kind => Ok(state),
            Some(state) => Err(Mismatch::new(Shape::Crdt(state.kind()), wanted)),
            None if self.holds_values() => Err(Mismatch::new(Shape::Plain, wanted)),
            None => Ok(Crdt::new(kind)),
        }
    }

    /// What a read of a CRDT key finds: its state, or `None` for a key
    /// that holds nothing (absent, or deleted). A plain key is a
    /// [`Mismatch`].
    pub fn crdt_read(&self) -> Result<Option<Crdt>, Mismatch> {
        match self.crdt() {
            Some(state) => Ok(Some(state)),
            None if self.holds_values() => Err(Mismatch::new(Shape::Plain, Shape::AnyCrdt)),
            None => Ok(None),
        }
    }

    /// Whether a plain write (a value or a delete, through `/kv`) may go
    /// to this set: not when it holds a CRDT.
    pub fn check_plain(&self) -> Result<(), Mismatch> {
        match self.kind() {
            Some(kind) => Err(Mismatch::new(Shape::Crdt(kind), Shape::Plain)),
            None => Ok(()),
        }
    }

    /// Drops the siblings whose values have expired by `now_ms`; returns
    /// how many. The context keeps their dots, so a copy that still holds
    /// one loses it to this set in any merge: an expired value is removed
    /// as a delete would remove it, and can no more come back. Every node
    /// may do this on its own, at any time after the instant, because the
    /// instant travels with the sibling: `expire` commutes with `merge`
    /// (property `expiring_commutes_with_merge`).
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.siblings.len();
        self.siblings.retain(|s| !s.content.is_expired(now_ms));
        before - self.siblings.len()
    }

    /// The earliest instant a sibling of this set expires, if any does.
    pub fn next_expiry(&self) -> Option<u64> {
        self.siblings
            .iter()
            .filter_map(|s| s.content.expires_ms())
            .min()
    }

    /// The smallest counter `actor` may use for a write on this set made with
    /// client context `ctx`: above everything either has seen of `actor`, so the
    /// new dot is never mistaken for one already seen.
    pub fn min_counter(&self, ctx: &Context, actor: &Actor) -> u64 {
        self.context.get(actor).max(ctx.max_counter(actor)) + 1
    }

    /// Applies a client write coordinated by `dot.actor`: drops the siblings
    /// that `ctx` covers, adds `content` under `dot` and joins the context's
    /// version vector and `dot` into the set's context.
    ///
    /// The context's exact dots (the client's own earlier writes) remove the
    /// siblings they name but are not joined into the set's version vector:
    /// an entry `a: n` there would claim every earlier dot of `a`, which the
    /// client never saw. Where this replica lacks such a dot, it can come back
    /// later as a sibling: a false sibling, never a lost write.
    ///
    /// `dot.counter` must be at least [`SiblingSet::min_counter`]; the node's
    /// dot minter guarantees it.
    pub fn write(&mut self, ctx: &Context, dot: Dot, content: Content) {
        debug_assert!(dot.counter >= self.min_counter(ctx, &dot.actor));
        self.siblings.retain(|s| !ctx.covers(&s.dot));
        self.context.merge(ctx.vv.clone());
        self.context.apply(dot.clone());
        let at = self
            .siblings
            .partition_point(|s| dot_key(&s.dot) < dot_key(&dot));
        self.siblings.insert(at, Sibling { dot, content });
    }

    /// Joins `other` into `self`. A sibling survives if both sides hold it, or
    /// if one side holds it and the other side has not seen its dot. The
    /// contexts join pointwise. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &SiblingSet) {
        let mut merged = Vec::with_capacity(self.siblings.len().max(other.siblings.len()));
        let (mut a, mut b) = (
            self.siblings.iter().peekable(),
            other.siblings.iter().peekable(),
        );
        loop {
            let next = match (a.peek().copied(), b.peek().copied()) {
                (None, None) => break,
                (Some(x), None) => {
                    a.next();
                    unseen(x, &other.context)
                }
                (None, Some(y)) => {
                    b.next();
                    unseen(y, &self.context)
                }
                (Some(x), Some(y)) => match dot_key(&x.dot).cmp(&dot_key(&y.dot)) {
                    Ordering::Less => {
                        a.next();
                        unseen(x, &other.context)
                    }
                    Ordering::Greater => {
                        b.next();
                        unseen(y, &self.context)
                    }
                    Ordering::Equal => {
                        a.next();
                        b.next();
                        // One dot names one write, so the contents agree; the max
                        // keeps the merge commutative even on a corrupt input.
                        Some(if x.content >= y.content { x } else { y })
                    }
                },
            };
            merged.extend(next.cloned());
        }
        self.siblings = merged;
        self.context.merge(other.context.clone());
        self.merge_requests(&other.requests);
    }

    /// The record of the write that carried request id `id`, or else of
    /// one with the same client key ([`request_key`]; see
    /// [`Request::reused_by`]), if kept and made at or after
    /// `not_before_ms` (an older record has expired, even where no write
    /// has pruned it yet). Records sort by id, and the space before a
    /// digest sorts below every character of a key, so the records of one
    /// key are neighbours.
    pub fn request(&self, id: &str, not_before_ms: u64) -> Option<&Request> {
        let key = request_key(id);
        let from = self.requests.partition_point(|r| request_key(&r.id) < key);
        let same_key = self.requests[from..]
            .iter()
            .take_while(|r| request_key(&r.id) == key)
            .filter(|r| r.at_ms >= not_before_ms);
        let mut found: Option<&Request> = None;
        for r in same_key {
            if r.id == id {
                return Some(r);
            }
            // One with a digest can tell a reuse; one without cannot.
            let digest = |r: &Request| request_digest(&r.id).is_some();
            if found.is_none_or(|f| !digest(f) && digest(r)) {
                found = Some(r);
            }
        }
        found
    }

    /// Remembers that the write with request id `id` minted `dot`.
    pub fn record_request(&mut self, id: &str, dot: Dot, at_ms: u64) {
        let request = Request {
            id: id.to_string(),
            dot,
            at_ms,
        };
        self.merge_requests(std::slice::from_ref(&request));
    }

    /// Forgets records older than `before_ms`, and the oldest past
    /// `MAX_REQUESTS`. Every write to a replica's store prunes after it
    /// applies (a client write, or a merge: otherwise a merge would bring
    /// back from another replica a record this one had expired); the merge
    /// itself never does, so it keeps its laws.
    pub fn expire_requests(&mut self, before_ms: u64) {
        self.requests.retain(|r| r.at_ms >= before_ms);
        if self.requests.len() > MAX_REQUESTS {
            let mut ages: Vec<u64> = self.requests.iter().map(|r| r.at_ms).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() - MAX_REQUESTS];
            self.requests.retain(|r| r.at_ms >= cut);
            self.requests.truncate(MAX_REQUESTS);
        }
    }

    /// Union by id; for one id seen with two outcomes (two attempts raced),
    /// the smaller dot, so every replica agrees.
    fn merge_requests(&mut self, other: &[Request]) {
        for r in other {
            match self.requests.binary_search_by(|x| x.id.cmp(&r.id)) {
                Ok(at) => {
                    let mine = &mut self.requests[at];
                    if (dot_key(&r.dot), r.at_ms) < (dot_key(&mine.dot), mine.at_ms) {
                        *mine = r.clone();
                    }
                }
                Err(at) => self.requests.insert(at, r.clone()),
            }
        }
    }

    /// Whether the set keeps its invariants: siblings sorted, dots unique and
    /// covered by the context. Sets received from peers are checked with it.
    pub fn is_well_formed(&self) -> bool {
        self.siblings
            .windows(2)
            .all(|w| dot_key(&w[0].dot) < dot_key(&w[1].dot))
            && self.siblings.iter().all(|s| covers(&self.context, &s.dot))
            && self.requests.windows(2).all(|w| w[0].id < w[1].id)
            && self
                .requests
                .iter()
                .all(|r| r.id.len() <= MAX_REQUEST_RECORD)
            && self.siblings.iter().all(|s| match &s.content {
                Content::Update(_) => false,
                Content::Crdt(state) => state.is_well_formed(),
                _ => true,
            })
    }

    /// Bytes of values held, for size limits and metrics (a CRDT state
    /// counts as its encoding).
    pub fn value_bytes(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| match &s.content {
                Content::Crdt(c) => c.encode().len(),
                other => other.value().map_or(0, Bytes::len),
            })
            .sum()
    }
}

/// `s`, unless the other side's context shows it saw `s` and dropped it.
fn unseen<'a>(s: &'a Sibling, other_context: &VersionVector) -> Option<&'a Sibling> {
    (!covers(other_context, &s.dot)).then_some(s)
}

#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod tests;
