//! Versions: dots, version vectors and the sibling set of one key.
//!
//! # The idea
//!
//! chorus never decides between two concurrent writes. Each stored key holds a
//! *sibling set*: the values that no later write has superseded, each tagged
//! with the [`Dot`] (actor, counter) of the write that made it, plus one version
//! vector, the set's *causal context*, that summarises every write the set has
//! seen. This is the dotted-version-vector set of Almeida, Baquero, Gonçalves,
//! Preguiça and Fonte, "Scalable and Accurate Causality Tracking for Eventually
//! Consistent Stores" (DAIS 2014), the scheme Riak 2.0 adopted after plain
//! per-node vector clocks were shown to lose writes.
//!
//! A client reads a key and gets the values and the context (opaque, in the
//! `X-Chorus-Context` header). When it writes, it sends that context back. The
//! coordinating replica then:
//!
//! 1. removes exactly the siblings whose dots the client's context covers (the
//!    client saw them, so its write supersedes them);
//! 2. mints a fresh dot from its own counter and adds the new value under it;
//! 3. joins the client's context and the new dot into the set's context.
//!
//! After a write the client holds its old context plus the exact dot of its
//! write ([`Context::after_write`]), so it can supersede its own write
//! without claiming the other writes the coordinator held.
//!
//! Siblings the client did not see survive, so two writes made with the same
//! (or concurrent) contexts both survive, even when one node coordinates both.
//! That is what a per-node vector clock cannot do: it would give both writes
//! the same clock entry and keep only one.
//!
//! # Invariants
//!
//! - Every sibling's dot is covered by the set's context.
//! - No two siblings share a dot, and a dot names one value forever: actors
//!   are a node id plus an incarnation drawn afresh at every start of the
//!   node, and within a life the counter only goes up (see
//!   `store::Identity`): whatever happens to a node's disk, it never mints
//!   a dot it minted before (Riak's kv679).
//! - Each actor mints a dot only on top of its own complete local copy of the
//!   key, so a context entry `a: n` implies the holder saw (or saw past) every
//!   dot of `a` up to `n` in that key. This is why a version vector, not a set
//!   of dots, is enough as the causal context, even though one node's counter
//!   is shared by all its keys and so leaves gaps in any one key. The store
//!   keeps it so: a minted set leaves the node only once the local store
//!   holds it, and a node that drops a copy holding its actor's dots (a
//!   handoff), or sees one of them arrive that its copy lacks (amnesia),
//!   retires the actor before it mints again (`store::Identity`). A copy
//!   missing one of its own actor's dots would otherwise mint a dot whose
//!   vector entry claims, and so deletes wherever it arrives, that write.
//! - [`SiblingSet::merge`] is commutative, associative and idempotent. Read
//!   repair, hinted handoff, anti-entropy and ownership handoff all use it and
//!   nothing else, so replicas that have seen the same writes hold the same set.
//!
//! Deletes are writes of a tombstone sibling; a key whose siblings are all
//! tombstones reads as absent but keeps its context, so a later write that
//! carries the context supersedes the tombstone.
//!
//! Everything here is pure: no I/O, no clocks, no locks.

mod actor;
pub mod context;
pub mod crdt;
mod siblings;

pub use actor::{Actor, Dot, VersionVector};
pub use context::{Context, ContextError, CrdtContext};
pub use crdt::{Crdt, FieldUpdate, Kind, Mismatch, Op, Refused, Shape, Update, View};
pub use siblings::{
    Content, MAX_REQUEST_ID, MAX_REQUEST_RECORD, REQUEST_DIGEST_CHARS, Request, Sibling,
    SiblingSet, request_key,
};
