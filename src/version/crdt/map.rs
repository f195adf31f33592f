//! Maps: named fields, each a counter or a set, in one key (the crdts
//! crate's [`Map`], as Riak 2.0's maps are riak_dt's `riak_dt_map`).
//!
//! # The idea
//!
//! A map is a set of fields, each field a CRDT of its own, updated and
//! merged by its own laws; the map only tracks which updates touched
//! which field (a dot per update, as an [`Orswot`] tracks its adds), so
//! that updates of different fields, and concurrent updates of one,
//! all survive a merge. The crate's map holds one value type, so a field's
//! value is a [`Field`]: a counter or a set (or, before its first update,
//! nothing).
//!
//! # Invariants
//!
//! - A field is its name *and* its type ([`FieldKey`]), as in Riak's maps:
//!   an update of field `n` as a counter and one of `n` as a set, made
//!   concurrently on two replicas, touch two fields and both survive. An
//!   update of a name a replica already holds with another type is a
//!   [`Mismatch`] there (409 at the API); only two concurrent first
//!   writes make a name hold two types, and a read then shows the one
//!   whose type sorts first (a counter before a set), keeping the other.
//! - Every field update of one client update takes its own dot of the
//!   map's clock, drawn from the applying actor: dots are never reused
//!   (the same argument as a set's adds, `super`).
//! - A remove of a set field's members uses the map's clock as the
//!   client's read saw it: a set field's dots are map dots, so that
//!   clock covers exactly the adds the read saw. It is first cut down to
//!   what the field itself holds wherever the applying replica has seen
//!   all the client saw, so the set never keeps a remove it cannot place.
//! - Fields are never removed. The crate's reset-remove of a field resets
//!   a counter by comparing its *counts* with the map's *dots*, which
//!   does not remove a counter's increments; until a counter that counts
//!   by dots is written, a field once written stays (a set field can be
//!   emptied by removing its members).
//! - [`Field::merge`] is a join: the same type merges by its own laws;
//!   across types (only a corrupt peer sends that, since the type is in
//!   the key) the type that sorts last wins, an ordered sum of lattices,
//!   which is still commutative, associative and idempotent.

use crdts::{CmRDT, CvRDT, Map, Orswot, PNCounter, ResetRemove, orswot, pncounter};
use serde::{Deserialize, Serialize, Serializer};

use super::{Kind, Member, Mismatch, SetParts, Shape, Update};
use crate::version::actor::{Actor, VersionVector};

/// The crate's map, as chorus keeps it.
pub type FieldMap = Map<FieldKey, Field, Actor>;

/// A field of a map: its name and its type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FieldKey {
    pub name: String,
    pub kind: Kind,
}

/// The value of a field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Field {
    /// Before the field's first update (what the crate's map starts an
    /// entry with).
    #[default]
    Empty,
    Counter(PNCounter<Actor>),
    Set(Orswot<Member, Actor>),
}

/// An update of one field.
#[derive(Clone, Debug)]
pub enum FieldOp {
    Counter(pncounter::Op<Actor>),
    Set(orswot::Op<Member, Actor>),
}

impl Field {
    /// The rank of the field's type in the merge's ordered sum.
    fn rank(&self) -> u8 {
        match self {
            Field::Empty => 0,
            Field::Counter(_) => 1,
            Field::Set(_) => 2,
        }
    }
}

impl CmRDT for Field {
    type Op = FieldOp;
    type Validation = Mismatch;

    fn validate_op(&self, _op: &FieldOp) -> Result<(), Mismatch> {
        Ok(())
    }

    /// An op of another type than the field's is dropped: the type is in
    /// the field's key, so only a corrupt peer could send one.
    fn apply(&mut self, op: FieldOp) {
        match op {
            FieldOp::Counter(op) => {
                if let Field::Empty = self {
                    *self = Field::Counter(PNCounter::new());
                }
                if let Field::Counter(c) = self {
                    c.apply(op);
                }
            }
            FieldOp::Set(op) => {
                if let Field::Empty = self {
                    *self = Field::Set(Orswot::new());
                }
                if let Field::Set(s) = self {
                    s.apply(op);
                }
            }
        }
    }
}

impl CvRDT for Field {
    type Validation = Mismatch;

    fn validate_merge(&self, _other: &Self) -> Result<(), Mismatch> {
        Ok(())
    }

    fn merge(&mut self, other: Field) {
        match (&mut *self, other) {
            (Field::Counter(a), Field::Counter(b)) => a.merge(b),
            (Field::Set(a), Field::Set(b)) => a.merge(b),
            (this, other) => {
                if other.rank() > this.rank() {
                    *this = other;
                }
            }
        }
    }
}

impl ResetRemove<Actor> for Field {
    fn reset_remove(&mut self, clock: &VersionVector) {
        match self {
            Field::Empty => {}
            Field::Counter(c) => c.reset_remove(clock),
            Field::Set(s) => s.reset_remove(clock),
        }
    }
}

/// Applies the field updates of one client update, as `actor`, each with
/// its own dot. Refused whole, before any field changes, when a field's
/// name is held with another type or an update is not a counter's or a
/// set's.
pub fn apply(
    map: &mut FieldMap,
    fields: &[(String, Update)],
    actor: &Actor,
    seen: &VersionVector,
) -> Result<(), Mismatch> {
    for (name, update) in fields {
        let wanted = update.kind();
        if wanted == Kind::Map {
            return Err(Mismatch::new(Shape::Crdt(Kind::Map), Shape::Crdt(wanted)).in_field(name));
        }
        let held = map
            .keys()
            .map(|k| k.val)
            .find(|k| k.name == *name && k.kind != wanted);
        if let Some(held) = held {
            return Err(Mismatch::new(Shape::Crdt(held.kind), Shape::Crdt(wanted)).in_field(name));
        }
    }
    for (name, update) in fields {
        let key = FieldKey {
            name: name.clone(),
            kind: update.kind(),
        };
        let here = map.read_ctx().add_clock;
        if let Update::Remove(_) = update {
            // Nothing to remove from a set this replica does not hold,
            // when it has seen all the client saw.
            let held = map
                .get(&key)
                .val
                .is_some_and(|f| matches!(f, Field::Set(_)));
            if !held && *seen <= here {
                continue;
            }
        }
        let add = map.read_ctx().derive_add_ctx(actor.clone());
        let op = map.update(key, add, |field, add| match (field, update) {
            (field, Update::Increment(n)) => {
                let empty = PNCounter::new();
                let counter = match field {
                    Field::Counter(c) => c,
                    _ => &empty,
                };
                FieldOp::Counter(match *n >= 0 {
                    true => counter.inc_many(add.dot.actor, n.unsigned_abs()),
                    false => counter.dec_many(add.dot.actor, n.unsigned_abs()),
                })
            }
            (field, Update::Add(members)) => {
                let empty = Orswot::new();
                let set = match field {
                    Field::Set(s) => s,
                    _ => &empty,
                };
                FieldOp::Set(set.add_all(members.iter().cloned(), add))
            }
            (field, Update::Remove(members)) => {
                let held = match field {
                    Field::Set(s) => s.clock(),
                    _ => VersionVector::new(),
                };
                let clock = removal_clock(seen, &here, &held);
                FieldOp::Set(orswot::Op::Rm {
                    clock,
                    members: members.clone(),
                })
            }
            // Refused above.
            (_, Update::Map(_)) => FieldOp::Set(orswot::Op::Rm {
                clock: VersionVector::new(),
                members: Vec::new(),
            }),
        });
        map.apply(op);
    }
    Ok(())
}

/// The clock a set field's remove removes with: what the client saw
/// (`seen`, the map's clock at its read), cut down to the field's own
/// clock for every actor the map here has seen as far as the client did
/// (those of the field's dots the client saw are all here). Where the
/// client saw more of an actor than this replica has, its clock is kept
/// as seen, so the set defers the remove until those adds arrive.
fn removal_clock(
    seen: &VersionVector,
    here: &VersionVector,
    field: &VersionVector,
) -> VersionVector {
    let mut clock = VersionVector::new();
    for dot in seen.iter() {
        let counter = match here.get(dot.actor) >= dot.counter {
            true => dot.counter.min(field.get(dot.actor)),
            false => dot.counter,
        };
        if counter > 0 {
            clock.apply(crdts::Dot::new(dot.actor.clone(), counter));
        }
    }
    clock
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Empty => serializer.serialize_unit_variant("Field", 0, "Empty"),
            Field::Counter(c) => serializer.serialize_newtype_variant("Field", 1, "Counter", c),
            Field::Set(s) => {
                let parts = SetParts::of(s).map_err(serde::ser::Error::custom)?;
                serializer.serialize_newtype_variant("Field", 2, "Set", &parts)
            }
        }
    }
}

/// A [`FieldMap`] as it is written: the crate's layout (a clock, the
/// entries in key order, the deferred removes), with the deferred removes
/// sorted (the crate keeps them in a hash map). Fields encode canonically
/// by [`Field`]'s own `Serialize`.
#[derive(Serialize, Deserialize)]
pub(super) struct MapParts {
    clock: VersionVector,
    entries: Vec<(FieldKey, EntryParts)>,
    deferred: Vec<(VersionVector, Vec<FieldKey>)>,
}

#[derive(Serialize, Deserialize)]
struct EntryParts {
    clock: VersionVector,
    val: Field,
}

impl MapParts {
    pub(super) fn of(map: &FieldMap) -> Result<MapParts, postcard::Error> {
        let bytes = postcard::to_allocvec(map)?;
        let mut parts: MapParts = postcard::from_bytes(&bytes)?;
        parts
            .deferred
            .sort_unstable_by(|a, b| a.0.dots.cmp(&b.0.dots));
        Ok(parts)
    }
}

/// What a read shows of a map: each name once, with the type that sorts
/// first where a name holds two (see the module's invariants).
pub fn fields(map: &FieldMap) -> Vec<(&str, &Field)> {
    let mut out: Vec<(&str, &Field)> = Vec::new();
    for entry in map.iter() {
        let (key, field) = entry.val;
        match out.last() {
            Some((name, _)) if *name == key.name => {}
            _ => out.push((key.name.as_str(), field)),
        }
    }
    out
}
