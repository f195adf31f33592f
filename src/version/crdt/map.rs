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
//!   concurrently on two replicas, touch two fields and both survive. A
//!   read shows, for each name, the type that sorts first (a counter
//!   before a set), and an update of a name as another type than the one
//!   shown is a [`Mismatch`] (409 at the API). Only two concurrent first
//!   writes make a name hold two types; the hidden one is kept.
//! - Every field update of one client update takes its own dot of the
//!   map's clock, drawn from the applying actor: dots are never reused
//!   (the same argument as a set's adds, `super`).
//! - A remove of a set field's members uses the map's clock as the
//!   client's read saw it: a set field's dots are map dots, so that
//!   clock covers exactly the adds the read saw. Where the applying
//!   replica has not seen all the read did, the set defers the remove
//!   until those adds arrive (the crate's deferred removes). But the map's
//!   clock also counts other fields' dots, which never arrive in this
//!   set, so after every update and merge [`settle`] drops from each
//!   deferred remove the actors whose dots the map has all seen (their
//!   adds to this field are here, and the remove was applied to them):
//!   a deferred remove lives only until the replica catches up, and two
//!   replicas that saw the same updates hold the same deferred removes.
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

use std::collections::{BTreeMap, BTreeSet};

use super::{Kind, Member, Mismatch, Refused, SetParts, Shape, increment};
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

/// An update of one field of a map: a counter's or a set's (maps do not
/// nest, and the type is flat so that no peer can send a nesting deep
/// enough to overflow a decoder's stack).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FieldUpdate {
    Increment(i64),
    Add(Vec<Member>),
    Remove(Vec<Member>),
}

impl FieldUpdate {
    pub fn kind(&self) -> Kind {
        match self {
            FieldUpdate::Increment(_) => Kind::Counter,
            FieldUpdate::Add(_) | FieldUpdate::Remove(_) => Kind::Set,
        }
    }
}

/// The type a read shows for the field `name`: the first of the types
/// the map holds it with (a counter before a set).
fn shown(map: &FieldMap, name: &str) -> Option<Kind> {
    [Kind::Counter, Kind::Set].into_iter().find(|kind| {
        let key = FieldKey {
            name: name.to_string(),
            kind: *kind,
        };
        map.get(&key).val.is_some()
    })
}

/// Applies the field updates of one client update, as `actor`, each with
/// its own dot. Refused whole, before any field changes, when a field is
/// shown with another type, or named twice with two types.
pub fn apply(
    map: &mut FieldMap,
    fields: &[(String, FieldUpdate)],
    actor: &Actor,
    seen: &VersionVector,
) -> Result<(), Refused> {
    let mut named: BTreeMap<&str, Kind> = BTreeMap::new();
    // What each counter field's increments add up to, to refuse a count
    // that would pass 2^64 - 1 before any field changes.
    let mut sums: BTreeMap<&str, (u128, u128)> = BTreeMap::new();
    for (name, update) in fields {
        let wanted = update.kind();
        let held = named.insert(name, wanted).or_else(|| shown(map, name));
        if let Some(held) = held.filter(|held| *held != wanted) {
            let mismatch = Mismatch::new(Shape::Crdt(held), Shape::Crdt(wanted)).in_field(name);
            return Err(mismatch.into());
        }
        if let FieldUpdate::Increment(n) = update {
            let (up, down) = sums.entry(name).or_default();
            match *n >= 0 {
                true => *up += u128::from(n.unsigned_abs()),
                false => *down += u128::from(n.unsigned_abs()),
            }
        }
    }
    for (name, (up, down)) in sums {
        let key = FieldKey {
            name: name.to_string(),
            kind: Kind::Counter,
        };
        let counter = match map.get(&key).val {
            Some(Field::Counter(c)) => c,
            _ => PNCounter::new(),
        };
        let now_up = counter.inc_many(actor.clone(), 0).dot.counter;
        let now_down = counter.dec_many(actor.clone(), 0).dot.counter;
        let max = u128::from(u64::MAX);
        if u128::from(now_up) + up > max || u128::from(now_down) + down > max {
            return Err(Refused::Overflow {
                node: actor.node.clone(),
                what: "increments or decrements",
            });
        }
    }
    for (name, update) in fields {
        let key = FieldKey {
            name: name.clone(),
            kind: update.kind(),
        };
        let here = map.read_ctx().add_clock;
        if let FieldUpdate::Remove(_) = update {
            // Nothing to remove from a set this replica does not hold,
            // when it has seen all the client saw.
            let held = map.get(&key).val.is_some();
            if !held && *seen <= here {
                continue;
            }
        }
        let add = map.read_ctx().derive_add_ctx(actor.clone());
        let op = map.update(key, add, |field, add| match update {
            FieldUpdate::Increment(n) => {
                let empty = PNCounter::new();
                let counter = match field {
                    Field::Counter(c) => c,
                    _ => &empty,
                };
                // Checked above; a zero step changes nothing.
                let op = increment(counter, &add.dot.actor, *n)
                    .unwrap_or_else(|| counter.inc_many(add.dot.actor.clone(), 0));
                FieldOp::Counter(op)
            }
            FieldUpdate::Add(members) => {
                let empty = Orswot::new();
                let set = match field {
                    Field::Set(s) => s,
                    _ => &empty,
                };
                FieldOp::Set(set.add_all(members.iter().cloned(), add))
            }
            FieldUpdate::Remove(members) => {
                let held = match field {
                    Field::Set(s) => s.clock(),
                    _ => VersionVector::new(),
                };
                FieldOp::Set(orswot::Op::Rm {
                    clock: removal_clock(seen, &here, &held),
                    members: members.clone(),
                })
            }
        });
        map.apply(op);
    }
    Ok(())
}

/// Drops from every set field's deferred removes the actors whose dots
/// this map has all seen (see the module's invariants), and the deferred
/// removes left with none. Goes through the fields' encoding, the only
/// way to their deferred removes the crate offers.
pub fn settle(map: &mut FieldMap) -> Result<(), postcard::Error> {
    let mut parts = MapParts::of(map)?;
    let mut changed = false;
    for (_, entry) in &mut parts.entries {
        let Field::Set(set) = &entry.val else {
            continue;
        };
        let mut set_parts = SetParts::of(set)?;
        if set_parts.deferred.is_empty() {
            continue;
        }
        let mut deferred: BTreeMap<Vec<(Actor, u64)>, BTreeSet<Member>> = BTreeMap::new();
        for (clock, members) in std::mem::take(&mut set_parts.deferred) {
            let unseen: Vec<(Actor, u64)> = clock
                .dots
                .into_iter()
                .filter(|(actor, counter)| parts.clock.get(actor) < *counter)
                .collect();
            if !unseen.is_empty() {
                deferred.entry(unseen).or_default().extend(members);
            }
        }
        set_parts.deferred = deferred
            .into_iter()
            .map(|(dots, members)| {
                let clock = VersionVector {
                    dots: dots.into_iter().collect(),
                };
                (clock, members.into_iter().collect())
            })
            .collect();
        let bytes = postcard::to_allocvec(&set_parts)?;
        entry.val = Field::Set(postcard::from_bytes(&bytes)?);
        changed = true;
    }
    if changed {
        let bytes = postcard::to_allocvec(&parts)?;
        *map = postcard::from_bytes(&bytes)?;
    }
    Ok(())
}

/// Whether every field holds the type its key names (a peer's state is
/// checked with it: a set under a counter's key would win the counter's
/// merge and swallow its increments), and the map holds no deferred
/// removal of a field (chorus never removes fields; one would reset a
/// counter field's increments on every replica it reached).
pub fn is_well_formed(map: &FieldMap) -> bool {
    let no_field_removes = MapParts::of(map).is_ok_and(|parts| parts.deferred.is_empty());
    no_field_removes
        && map.iter().all(|entry| {
            let (key, field) = entry.val;
            matches!(
                (key.kind, field),
                (Kind::Counter, Field::Counter(_)) | (Kind::Set, Field::Set(_))
            )
        })
}

/// How many deferred removes the map's set fields hold (for tests).
#[cfg(test)]
pub fn deferred(map: &FieldMap) -> usize {
    let Ok(parts) = MapParts::of(map) else {
        return usize::MAX;
    };
    parts
        .entries
        .iter()
        .map(|(_, entry)| match &entry.val {
            Field::Set(set) => SetParts::of(set).map_or(usize::MAX, |p| p.deferred.len()),
            _ => 0,
        })
        .sum()
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
pub(super) struct EntryParts {
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
