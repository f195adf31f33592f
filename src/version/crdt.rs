//! CRDT keys: values that merge by their own laws and never show siblings
//! (issue 23; this is the pure core, the routes come after it).
//!
//! # The idea
//!
//! A plain key keeps concurrent writes as siblings for the client to
//! resolve. Some values need no client to resolve them: two increments of
//! a counter both count, two adds to a set both belong. These are the
//! convergent replicated data types of Shapiro, Preguiça, Baquero and
//! Zawirski ("A comprehensive study of Convergent and Commutative
//! Replicated Data Types", INRIA 2011), as Riak 2.0 shipped them (riak_dt):
//! a state per key whose merge is a join, so replicas that saw the same
//! updates in any order and any number of times hold the same state.
//! chorus takes the types from the `crdts` crate: [`PNCounter`] (a counter
//! that goes up and down: one grow-only count per actor for increments and
//! one for decrements) and [`Orswot`] (the observed-remove set without
//! tombstones of Bieniusa, Zawirski, Preguiça, Shapiro, Baquero, Balegas
//! and Duarte, "An optimized conflict-free replicated set", 2012).
//!
//! # How a CRDT key lives among sibling sets (the plan)
//!
//! A CRDT key is replicated by the same machinery as any key: quorums,
//! hints, read repair, anti-entropy, handoff and purge all move sibling
//! sets and merge them with the one DVV merge. Its state travels as the
//! content of its siblings. Two concurrent updates still make two
//! siblings, each with a state; every read folds them with
//! [`Crdt::merge`] into one, and every update is applied to that fold and
//! written with a context that covers the siblings it folded, so the set
//! collapses to one sibling again. A client never sees siblings of a CRDT
//! key. This is how riak_kv stores its data types on top of its own
//! sibling machinery.
//!
//! # Invariants
//!
//! - [`Crdt::merge`] is commutative, associative and idempotent (the
//!   property tests below): replicas agree whatever order and however
//!   often states reach them.
//! - An update is applied by one actor, a node's incarnation
//!   ([`Actor`]): an increment adds to that actor's own count, an add
//!   takes that actor's next dot. No actor ever reuses a count or a dot,
//!   whatever happens to its disk (a node that cannot prove its counters
//!   are current takes a new incarnation, `store::Identity`), so no update
//!   is ever lost to the max-merge of counts, nor counted twice.
//! - A remove removes only the adds its client's read saw (`seen`, the
//!   set's clock at that read): an add concurrent with the remove stays.
//! - A key's type is fixed by its first write: merging or updating across
//!   types is a [`Mismatch`], never a conversion.
//!
//! Everything here is pure: no I/O, no clocks, no locks.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};

use crdts::ctx::RmCtx;
use crdts::{CmRDT, CvRDT, Orswot, PNCounter};
use serde::{Deserialize, Serialize, Serializer};

use super::actor::{Actor, VersionVector};

pub mod map;

use map::MapParts;
pub use map::{Field, FieldMap, FieldUpdate};

/// [`map::settle`]; it fails only where encoding fails, which it cannot
/// for these types, and then leaves the map as it was.
fn settle(m: &mut FieldMap) {
    let _ = map::settle(m);
}

/// What a client reads of a CRDT key (or of a map's field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// A counter's value as decimal digits (any size).
    Counter(String),
    Set(BTreeSet<Member>),
    /// A map's fields by name.
    Map(std::collections::BTreeMap<String, View>),
}

impl View {
    pub fn kind(&self) -> Kind {
        match self {
            View::Counter(_) => Kind::Counter,
            View::Set(_) => Kind::Set,
            View::Map(_) => Kind::Map,
        }
    }
}

/// A member of a set.
pub type Member = String;

/// The state of one CRDT key.
///
/// Its encoding is canonical: equal states encode to equal bytes on every
/// node (an [`Orswot`] keeps its members in hash maps, whose order differs
/// from process to process, so a set is written with its members sorted:
/// see [`SetParts`]). Merkle trees hash stored bytes, and two replicas
/// holding one state must agree that they do.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum Crdt {
    Counter(PNCounter<Actor>),
    Set(Orswot<Member, Actor>),
    /// Named fields, each a counter or a set ([`map`]).
    Map(FieldMap),
}

/// The type of a CRDT key, fixed by its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Counter,
    Set,
    Map,
}

impl Kind {
    /// The type's name in the API (`"type": "counter"`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Set => "set",
            Kind::Map => "map",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One client update of a CRDT key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Update {
    /// Adds `n` (negative: subtracts) to a counter.
    Increment(i64),
    /// Adds the members to a set.
    Add(Vec<Member>),
    /// Removes the members from a set, as far as the client's read saw them.
    Remove(Vec<Member>),
    /// Updates fields of a map: each (name, a counter's or a set's
    /// update), in order.
    Map(Vec<(String, FieldUpdate)>),
}

impl Update {
    /// The type of key the update applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Update::Increment(_) => Kind::Counter,
            Update::Add(_) | Update::Remove(_) => Kind::Set,
            Update::Map(_) => Kind::Map,
        }
    }
}

/// A client's update on its way to the replica that applies it: what to
/// do, and for a remove, what the client's read saw (the set's
/// [`Crdt::clock`] then). The replica that mints the write applies it to
/// its own copy, as its own actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Op {
    pub update: Update,
    pub seen: VersionVector,
}

impl Ord for Op {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.update, &self.seen.dots).cmp(&(&other.update, &other.seen.dots))
    }
}

impl PartialOrd for Op {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a key holds, as a type mismatch names it: a plain JSON value (a
/// key of `/kv`) or a CRDT of a kind (a key of `/crdt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Plain,
    Crdt(Kind),
    /// A read of `/crdt`, which takes any type.
    AnyCrdt,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Plain => f.write_str("plain value"),
            Shape::Crdt(kind) => kind.fmt(f),
            Shape::AnyCrdt => f.write_str("counter, set or map"),
        }
    }
}

/// An update, a merge or a write across types: the key (or a map's
/// `field`) holds `held`, the caller wanted `wanted` (a 409
/// `type_mismatch` at the API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub held: Shape,
    pub wanted: Shape,
    pub field: Option<String>,
}

impl Mismatch {
    pub fn new(held: Shape, wanted: Shape) -> Mismatch {
        Mismatch {
            held,
            wanted,
            field: None,
        }
    }

    /// The mismatch is in a map's field `name`.
    pub fn in_field(mut self, name: &str) -> Mismatch {
        self.field = Some(name.to_string());
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            None => write!(f, "the key holds a {}, not a {}", self.held, self.wanted),
            Some(name) => write!(
                f,
                "the map's field `{name}` holds a {}, not a {} (a field's type is fixed by its first update)",
                self.held, self.wanted
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Why an update was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Of another type than the key (or the map's field) holds.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// An update that would take the applying node's own count past
    /// 2^64 - 1 (a count that wrapped would lose every update in it).
    #[error(
        "node {node}'s count of this key's {what} would pass 2^64 - 1; \
         a write minted at another replica of the key, or in the other direction, can still count"
    )]
    Overflow { node: String, what: &'static str },
}

/// The op that adds `n` (negative: subtracts) to `actor`'s own count in
/// `counter`, or `None` when that count would pass `u64::MAX`.
fn increment(
    counter: &PNCounter<Actor>,
    actor: &Actor,
    n: i64,
) -> Option<crdts::pncounter::Op<Actor>> {
    let step = |steps| match n >= 0 {
        true => counter.inc_many(actor.clone(), steps),
        false => counter.dec_many(actor.clone(), steps),
    };
    step(0).dot.counter.checked_add(n.unsigned_abs())?;
    Some(step(n.unsigned_abs()))
}

impl Crdt {
    /// The empty state of a key of type `kind`.
    pub fn new(kind: Kind) -> Crdt {
        match kind {
            Kind::Counter => Crdt::Counter(PNCounter::new()),
            Kind::Set => Crdt::Set(Orswot::new()),
            Kind::Map => Crdt::Map(FieldMap::new()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Crdt::Counter(_) => Kind::Counter,
            Crdt::Set(_) => Kind::Set,
            Crdt::Map(_) => Kind::Map,
        }
    }

    fn mismatch(&self, wanted: Kind) -> Mismatch {
        Mismatch::new(Shape::Crdt(self.kind()), Shape::Crdt(wanted))
    }

    /// Joins `other` into this state. Across types: a [`Mismatch`], and
    /// this state is left as it was.
    pub fn merge(&mut self, other: &Crdt) -> Result<(), Mismatch> {
        match (self, other) {
            (Crdt::Counter(a), Crdt::Counter(b)) => a.merge(b.clone()),
            (Crdt::Set(a), Crdt::Set(b)) => a.merge(b.clone()),
            (Crdt::Map(a), Crdt::Map(b)) => {
                a.merge(b.clone());
                settle(a);
            }
            (this, other) => return Err(this.mismatch(other.kind())),
        }
        Ok(())
    }

    /// Applies `update` as `actor`. A remove removes what `seen` (the
    /// clock of the set the client read, [`Crdt::clock`]) covers of the
    /// members it names; with an empty `seen` it removes nothing.
    pub fn apply(
        &mut self,
        update: &Update,
        actor: &Actor,
        seen: &VersionVector,
    ) -> Result<(), Refused> {
        // An add's (a field update's) dot is the actor's count plus one.
        if self.clock().get(actor) == u64::MAX {
            return Err(Refused::Overflow {
                node: actor.node.clone(),
                what: "updates",
            });
        }
        match (&mut *self, update) {
            (Crdt::Counter(c), Update::Increment(n)) => {
                if *n == 0 {
                    return Ok(());
                }
                let op = increment(c, actor, *n).ok_or_else(|| Refused::Overflow {
                    node: actor.node.clone(),
                    what: if *n > 0 { "increments" } else { "decrements" },
                })?;
                c.apply(op);
            }
            (Crdt::Set(s), Update::Add(members)) => {
                if members.is_empty() {
                    return Ok(());
                }
                let add = s.read_ctx().derive_add_ctx(actor.clone());
                let op = s.add_all(members.iter().cloned(), add);
                s.apply(op);
            }
            (Crdt::Set(s), Update::Remove(members)) => {
                let rm = RmCtx {
                    clock: seen.clone(),
                };
                let op = s.rm_all(members.iter().cloned(), rm);
                s.apply(op);
            }
            (Crdt::Map(m), Update::Map(fields)) => {
                map::apply(m, fields, actor, seen)?;
                settle(m);
            }
            (this, update) => return Err(this.mismatch(update.kind()).into()),
        }
        Ok(())
    }

    /// What a client's remove may remove: the set's (or the map's) clock,
    /// handed out with a read and sent back with the remove. A counter's
    /// is empty.
    pub fn clock(&self) -> VersionVector {
        match self {
            Crdt::Counter(_) => VersionVector::new(),
            Crdt::Set(s) => s.clock(),
            Crdt::Map(m) => m.read_ctx().add_clock,
        }
    }

    /// The state as a client reads it.
    pub fn view(&self) -> View {
        match self {
            Crdt::Counter(c) => View::Counter(c.read().to_string()),
            Crdt::Set(s) => View::Set(s.read().val.into_iter().collect()),
            Crdt::Map(m) => View::Map(
                map::fields(m)
                    .into_iter()
                    .filter_map(|(name, field)| {
                        let view = match field {
                            Field::Empty => return None,
                            Field::Counter(c) => View::Counter(c.read().to_string()),
                            Field::Set(s) => View::Set(s.read().val.into_iter().collect()),
                        };
                        Some((name.to_string(), view))
                    })
                    .collect(),
            ),
        }
    }

    /// A counter's value as decimal digits (a JSON number of any size:
    /// increments of up to 2^63 each, from any number of actors).
    pub fn counter(&self) -> Option<String> {
        match self {
            Crdt::Counter(c) => Some(c.read().to_string()),
            _ => None,
        }
    }

    /// Whether the state keeps its type's invariants (a peer's is checked
    /// with it): every map field holds the type its key names.
    pub fn is_well_formed(&self) -> bool {
        match self {
            Crdt::Map(m) => map::is_well_formed(m),
            _ => true,
        }
    }

    /// The state's canonical encoding (what [`Serialize`] writes).
    pub fn encode(&self) -> Vec<u8> {
        // Encoding strings, integers and sequences into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A set's members, in order.
    pub fn members(&self) -> Option<BTreeSet<Member>> {
        match self {
            Crdt::Set(s) => Some(s.read().val.into_iter().collect()),
            _ => None,
        }
    }
}

/// An [`Orswot`] as it is written: the same fields in the same postcard
/// layout (a map is a length and its pairs, as a sequence of pairs is), so
/// the crate's own `Deserialize` reads it back, but sorted.
#[derive(Serialize, Deserialize)]
pub(super) struct SetParts {
    clock: VersionVector,
    entries: Vec<(Member, VersionVector)>,
    deferred: Vec<(VersionVector, Vec<Member>)>,
}

impl SetParts {
    /// `set`'s fields, sorted. The crate keeps them private; its own
    /// encoding, read back as a sequence, hands them over.
    pub(super) fn of(set: &Orswot<Member, Actor>) -> Result<SetParts, postcard::Error> {
        let bytes = postcard::to_allocvec(set)?;
        let mut parts: SetParts = postcard::from_bytes(&bytes)?;
        parts.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (_, members) in &mut parts.deferred {
            members.sort_unstable();
        }
        parts
            .deferred
            .sort_unstable_by(|a, b| a.0.dots.cmp(&b.0.dots));
        Ok(parts)
    }
}

impl Serialize for Crdt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Crdt::Counter(c) => serializer.serialize_newtype_variant("Crdt", 0, "Counter", c),
            Crdt::Set(s) => {
                let parts = SetParts::of(s).map_err(serde::ser::Error::custom)?;
                serializer.serialize_newtype_variant("Crdt", 1, "Set", &parts)
            }
            Crdt::Map(m) => {
                let parts = MapParts::of(m).map_err(serde::ser::Error::custom)?;
                serializer.serialize_newtype_variant("Crdt", 2, "Map", &parts)
            }
        }
    }
}

/// By canonical encoding: any total order does, so long as every node
/// picks the same one (the sibling merge keeps the larger of two contents
/// under one dot, which only a corrupt peer can send).
impl Ord for Crdt {
    fn cmp(&self, other: &Self) -> Ordering {
        if self == other {
            return Ordering::Equal;
        }
        self.encode().cmp(&other.encode())
    }
}

impl PartialOrd for Crdt {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Crdt {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.encode().hash(state);
    }
}

#[cfg(test)]
mod tests;
