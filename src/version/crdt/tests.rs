//! The laws of [`Crdt::merge`] and what the types promise, as properties
//! over random histories of updates and merges among three replicas.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::version::crdt::View;
use crate::version::{Content, Context, Dot, SiblingSet};

const REPLICAS: usize = 3;

#[derive(Clone, Debug)]
enum Step {
    /// A client update through replica `at` (a remove with what a read
    /// from that replica saw).
    Update { at: usize, update: Update },
    /// Replica `from`'s state merged into replica `to`.
    Merge { from: usize, to: usize },
}

fn actor(i: usize) -> Actor {
    Actor::new(format!("n{i}"), 1)
}

fn members() -> impl Strategy<Value = Vec<Member>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..3)
        .prop_map(|m| m.into_iter().map(str::to_string).collect())
}

fn set_update() -> impl Strategy<Value = Update> {
    prop_oneof![
        members().prop_map(Update::Add),
        members().prop_map(Update::Remove)
    ]
}

/// A map's fields in the histories: `n` a counter, `s` and `t` sets.
const FIELDS: [&str; 3] = ["n", "s", "t"];

fn field_update(name: &str) -> BoxedStrategy<FieldUpdate> {
    match name {
        "n" => (-50i64..50).prop_map(FieldUpdate::Increment).boxed(),
        _ => prop_oneof![
            members().prop_map(FieldUpdate::Add),
            members().prop_map(FieldUpdate::Remove)
        ]
        .boxed(),
    }
}

/// A field's update as the bare type's.
fn as_bare(update: &FieldUpdate) -> Update {
    match update.clone() {
        FieldUpdate::Increment(n) => Update::Increment(n),
        FieldUpdate::Add(m) => Update::Add(m),
        FieldUpdate::Remove(m) => Update::Remove(m),
    }
}

fn steps(kind: Kind) -> impl Strategy<Value = Vec<Step>> {
    let update = match kind {
        Kind::Counter => (-50i64..50).prop_map(Update::Increment).boxed(),
        Kind::Set => set_update().boxed(),
        Kind::Map => prop::sample::subsequence(FIELDS.to_vec(), 1..=3)
            .prop_flat_map(|names| {
                names
                    .into_iter()
                    .map(|n| field_update(n).prop_map(move |u| (n.to_string(), u)))
                    .collect::<Vec<_>>()
            })
            .prop_map(Update::Map)
            .boxed(),
    };
    let step = prop_oneof![
        2 => (0..REPLICAS, update).prop_map(|(at, update)| Step::Update { at, update }),
        1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Merge { from, to }),
    ];
    prop::collection::vec(step, 0..40)
}

/// The replicas' states after `steps`. In a map's history a merge of a
/// replica into itself stands for a client's read there, and the updates
/// that follow, at any replica, carry what it saw: removes minted at a
/// replica behind the read are deferred.
fn run(kind: Kind, steps: &[Step]) -> Vec<Crdt> {
    let mut replicas = vec![Crdt::new(kind); REPLICAS];
    let mut read: Option<VersionVector> = None;
    for step in steps {
        match step {
            Step::Update { at, update } => {
                let seen = read.clone().unwrap_or_else(|| replicas[*at].clock());
                replicas[*at]
                    .apply(update, &actor(*at), &seen)
                    .expect("one type");
            }
            Step::Merge { from, to } if from == to && kind == Kind::Map => {
                read = Some(replicas[*from].clock());
            }
            Step::Merge { from, to } => {
                let from = replicas[*from].clone();
                replicas[*to].merge(&from).expect("one type");
            }
        }
    }
    replicas
}

fn merged(a: &Crdt, b: &Crdt) -> Crdt {
    let mut out = a.clone();
    out.merge(b).expect("one type");
    out
}

/// One replica of a CRDT key as the store keeps it: a sibling set whose
/// siblings hold states, written as the minting replica writes an update
/// (`replica::coordinate`): fold, apply as its own actor, write over
/// everything it folded.
struct Stored {
    set: SiblingSet,
    /// The replica's dot counter (shared by all keys in a node; here one).
    next: u64,
}

impl Stored {
    fn update(&mut self, at: usize, update: &Update) {
        let mut state = self.set.crdt_for(update.kind()).expect("one type");
        let seen = state.clock();
        let folded = Context::read(self.set.context().clone());
        self.next = self.next.max(self.set.min_counter(&folded, &actor(at)));
        let dot = Dot::new(actor(at), self.next);
        self.next += 1;
        state.apply(update, &dot.actor, &seen).expect("one type");
        self.set.write(&folded, dot, Content::Crdt(state));
    }

    fn fold(&self, kind: Kind) -> Crdt {
        self.set.crdt().unwrap_or_else(|| Crdt::new(kind))
    }
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Counter), Just(Kind::Set), Just(Kind::Map)]
}

/// What a map's field reads as, or the empty state of its type where the
/// map has no such field.
fn field_view(map: &Crdt, name: &str) -> View {
    let empty = match name {
        "n" => Crdt::new(Kind::Counter).view(),
        _ => Crdt::new(Kind::Set).view(),
    };
    match map.view() {
        View::Map(fields) => fields.get(name).cloned().unwrap_or(empty),
        other => panic!("not a map: {other:?}"),
    }
}

proptest! {
    /// A CRDT carried in sibling sets is the CRDT: at every step of any
    /// history, each replica's siblings fold to exactly the state the bare
    /// type would hold after the same updates and merges. The sibling
    /// merge drops a sibling only where the other side's siblings already
    /// hold its state, so no update is lost to the DVV, and none counts
    /// twice.
    #[test]
    fn states_in_sibling_sets_fold_to_the_bare_type((kind, history) in kinds().prop_flat_map(|k| (Just(k), steps(k)))) {
        let mut bare = vec![Crdt::new(kind); REPLICAS];
        let mut stored: Vec<Stored> = (0..REPLICAS)
            .map(|_| Stored { set: SiblingSet::new(), next: 1 })
            .collect();
        for step in &history {
            match step {
                Step::Update { at, update } => {
                    let seen = bare[*at].clock();
                    bare[*at].apply(update, &actor(*at), &seen).expect("one type");
                    stored[*at].update(*at, update);
                }
                Step::Merge { from, to } => {
                    let state = bare[*from].clone();
                    bare[*to].merge(&state).expect("one type");
                    let set = stored[*from].set.clone();
                    stored[*to].set.merge(&set);
                }
            }
            for i in 0..REPLICAS {
                prop_assert_eq!(&stored[i].fold(kind), &bare[i], "replica {}", i);
                prop_assert!(stored[i].set.is_well_formed());
            }
        }
    }

    /// Equal states encode to equal bytes however they were reached (a
    /// set keeps its members in hash maps), and decode back to themselves.
    #[test]
    fn the_encoding_is_canonical((kind, history) in kinds().prop_flat_map(|k| (Just(k), steps(k)))) {
        let r = run(kind, &history);
        let ab = merged(&r[0], &r[1]);
        let ba = merged(&r[1], &r[0]);
        prop_assert_eq!(&ab, &ba);
        prop_assert_eq!(ab.encode(), ba.encode());
        let back: Crdt = postcard::from_bytes(&ab.encode()).expect("decodes");
        prop_assert_eq!(&back, &ab);
        prop_assert_eq!(back.cmp(&ab), Ordering::Equal);
    }

    /// A remove minted at a replica behind the read it carries waits in
    /// the set field, but only until the replica has seen what the read
    /// did: once every replica's state is merged into one, no field holds
    /// a deferred remove (fails without `map::settle`: a map's clock
    /// counts other fields' dots, which never reach a set field).
    #[test]
    fn deferred_removes_end_when_the_map_catches_up(history in steps(Kind::Map)) {
        let r = run(Kind::Map, &history);
        let all = merged(&merged(&r[0], &r[1]), &r[2]);
        let Crdt::Map(m) = &all else { unreachable!("a map") };
        prop_assert_eq!(map::deferred(m), 0);
    }

    /// Commutative, associative, idempotent: replicas agree whatever the
    /// order and the number of times states reach them.
    #[test]
    fn merge_is_a_join((kind, history) in kinds().prop_flat_map(|k| (Just(k), steps(k)))) {
        let r = run(kind, &history);
        let (a, b, c) = (&r[0], &r[1], &r[2]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(merged(a, a), a.clone());
    }

    /// Every increment counts once, whichever replica took it and however
    /// the states met.
    #[test]
    fn a_counter_is_the_sum_of_its_increments(history in steps(Kind::Counter)) {
        let r = run(Kind::Counter, &history);
        let all = merged(&merged(&r[0], &r[1]), &r[2]);
        let sum: i64 = history
            .iter()
            .filter_map(|s| match s {
                Step::Update { update: Update::Increment(n), .. } => Some(*n),
                _ => None,
            })
            .sum();
        prop_assert_eq!(all.counter(), Some(sum.to_string()));
    }

    /// Observed remove: a member is in the final set exactly when one of
    /// its adds was not seen by any remove of it (a model that tracks which
    /// adds each replica knows).
    #[test]
    fn a_set_keeps_every_add_no_remove_saw(history in steps(Kind::Set)) {
        // Model: events known per replica; an add event per member per
        // update, a remove event listing the add events it saw.
        let mut known: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); REPLICAS];
        let mut adds: BTreeMap<usize, Member> = BTreeMap::new();
        let mut removes: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut next = 0;
        for step in &history {
            match step {
                Step::Update { at, update: Update::Add(members) } => {
                    for m in members {
                        adds.insert(next, m.clone());
                        known[*at].insert(next);
                        next += 1;
                    }
                }
                Step::Update { at, update: Update::Remove(members) } => {
                    let saw = known[*at]
                        .iter()
                        .filter(|e| adds.get(e).is_some_and(|m| members.contains(m)))
                        .copied()
                        .collect();
                    removes.insert(next, saw);
                    known[*at].insert(next);
                    next += 1;
                }
                Step::Update { .. } => unreachable!("a set history"),
                Step::Merge { from, to } => {
                    let from = known[*from].clone();
                    known[*to].extend(from);
                }
            }
        }
        let all_known: BTreeSet<usize> = known.iter().flatten().copied().collect();
        let removed: BTreeSet<usize> = removes
            .iter()
            .filter(|(e, _)| all_known.contains(e))
            .flat_map(|(_, saw)| saw.iter().copied())
            .collect();
        let want: BTreeSet<Member> = adds
            .iter()
            .filter(|(e, _)| all_known.contains(e) && !removed.contains(e))
            .map(|(_, m)| m.clone())
            .collect();
        let r = run(Kind::Set, &history);
        let all = merged(&merged(&r[0], &r[1]), &r[2]);
        prop_assert_eq!(all.members(), Some(want));
    }
}

proptest! {
    /// A field of a map is the type it holds: at every step of any
    /// history, each replica's field reads as a bare counter or set does
    /// after that field's own updates and the same merges (so every
    /// property above holds of fields too: increments count once, a
    /// remove takes only the adds its read saw). A merge of a replica into
    /// itself stands here for a client's read there: the removes that
    /// follow, at any replica, remove what that read saw (also where the
    /// replica applying one has not seen it all yet).
    #[test]
    fn a_map_field_is_its_type(history in steps(Kind::Map)) {
        let mut map = vec![Crdt::new(Kind::Map); REPLICAS];
        let mut bare: BTreeMap<&str, Vec<Crdt>> = FIELDS
            .iter()
            .map(|f| {
                let kind = if *f == "n" { Kind::Counter } else { Kind::Set };
                (*f, vec![Crdt::new(kind); REPLICAS])
            })
            .collect();
        // The last read: the map's clock and each field's, as it saw them.
        let mut read: Option<(VersionVector, BTreeMap<&str, VersionVector>)> = None;
        for step in &history {
            match step {
                Step::Update { at, update } => {
                    let seen = read.as_ref().map_or_else(|| map[*at].clock(), |r| r.0.clone());
                    map[*at].apply(update, &actor(*at), &seen).expect("one type per field");
                    let Update::Map(fields) = update else { unreachable!("a map history") };
                    for (name, u) in fields {
                        let saw = read.as_ref().map(|r| r.1[name.as_str()].clone());
                        let field = &mut bare.get_mut(name.as_str()).expect("a field")[*at];
                        let seen = saw.unwrap_or_else(|| field.clock());
                        field.apply(&as_bare(u), &actor(*at), &seen).expect("one type");
                    }
                }
                Step::Merge { from, to } if from == to => {
                    let fields = bare.iter().map(|(f, states)| (*f, states[*from].clock())).collect();
                    read = Some((map[*from].clock(), fields));
                }
                Step::Merge { from, to } => {
                    let state = map[*from].clone();
                    map[*to].merge(&state).expect("one type");
                    for states in bare.values_mut() {
                        let state = states[*from].clone();
                        states[*to].merge(&state).expect("one type");
                    }
                }
            }
            for i in 0..REPLICAS {
                for (name, states) in &bare {
                    prop_assert_eq!(field_view(&map[i], name), states[i].view(), "replica {} field {}", i, name);
                }
            }
        }
    }
}

#[test]
fn a_field_type_is_fixed_and_a_refused_update_changes_nothing() {
    let mut map = Crdt::new(Kind::Map);
    let none = VersionVector::new();
    let update = |fields: &[(&str, FieldUpdate)]| {
        Update::Map(
            fields
                .iter()
                .map(|(n, u)| (n.to_string(), u.clone()))
                .collect(),
        )
    };
    map.apply(
        &update(&[("n", FieldUpdate::Increment(2))]),
        &actor(0),
        &none,
    )
    .expect("a map");
    let before = map.clone();
    let e = map
        .apply(
            &update(&[
                ("s", FieldUpdate::Add(vec!["a".into()])),
                ("n", FieldUpdate::Add(vec!["a".into()])),
            ]),
            &actor(0),
            &none,
        )
        .expect_err("n is a counter");
    let Refused::Mismatch(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.field.as_deref(), Some("n"));
    assert!(
        e.to_string()
            .contains("field `n` holds a counter, not a set"),
        "{e}"
    );
    assert_eq!(map, before, "nothing applied, not even s");
}

#[test]
fn concurrent_first_writes_of_two_types_keep_both() {
    let none = VersionVector::new();
    let (mut one, mut two) = (Crdt::new(Kind::Map), Crdt::new(Kind::Map));
    let set = Update::Map(vec![("x".into(), FieldUpdate::Add(vec!["a".into()]))]);
    let counter = Update::Map(vec![("x".into(), FieldUpdate::Increment(3))]);
    one.apply(&set, &actor(1), &none).expect("a map");
    two.apply(&counter, &actor(2), &none).expect("a map");
    let mut both = one.clone();
    both.merge(&two).expect("maps");
    let View::Map(fields) = both.view() else {
        panic!("a map")
    };
    assert_eq!(
        fields.get("x"),
        Some(&View::Counter("3".into())),
        "the counter shows"
    );
    // The set is kept: the merge with one's state in the other order is
    // the same state. The counter shown takes updates; the set is refused.
    let mut other = two.clone();
    other.merge(&one).expect("maps");
    assert_eq!(other, both);
    let e = both
        .apply(&set, &actor(1), &none)
        .expect_err("x shows as a counter");
    let Refused::Mismatch(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.field.as_deref(), Some("x"));
    both.apply(&counter, &actor(1), &none)
        .expect("x is a counter");
    let View::Map(fields) = both.view() else {
        panic!("a map")
    };
    assert_eq!(fields.get("x"), Some(&View::Counter("6".into())));
    // One update naming a field twice with two types is refused whole.
    let twice = Update::Map(vec![
        ("y".into(), FieldUpdate::Increment(1)),
        ("y".into(), FieldUpdate::Add(vec!["a".into()])),
    ]);
    let before = both.clone();
    both.apply(&twice, &actor(1), &none).expect_err("y twice");
    assert_eq!(both, before);
}

#[test]
fn a_field_holding_another_type_than_its_key_is_refused_from_peers() {
    use crdts::CmRDT;
    let mut map = FieldMap::new();
    let key = map::FieldKey {
        name: "n".into(),
        kind: Kind::Counter,
    };
    let add = map.read_ctx().derive_add_ctx(actor(0));
    let op = map.update(key, add, |_, add| {
        map::FieldOp::Set(Orswot::<Member, Actor>::new().add("a".into(), add))
    });
    map.apply(op);
    assert!(!Crdt::Map(map).is_well_formed());
    let mut good = Crdt::new(Kind::Map);
    let update = Update::Map(vec![("n".into(), FieldUpdate::Increment(1))]);
    good.apply(&update, &actor(0), &VersionVector::new())
        .expect("a map");
    assert!(good.is_well_formed());
    // A removal of a field waiting in the map (chorus removes no field; a
    // peer's would reset the counter's increments wherever it reached).
    let Crdt::Map(mut removing) = good.clone() else {
        unreachable!("a map")
    };
    let ahead = VersionVector::from(Dot::new(actor(5), 3));
    let key = map::FieldKey {
        name: "n".into(),
        kind: Kind::Counter,
    };
    let rm = removing.rm(key, crdts::ctx::RmCtx { clock: ahead });
    removing.apply(rm);
    assert!(!Crdt::Map(removing).is_well_formed());
}

#[test]
fn an_add_the_remove_did_not_see_stays_and_one_it_saw_goes() {
    let (mut one, mut two) = (Crdt::new(Kind::Set), Crdt::new(Kind::Set));
    let x = vec!["x".to_string()];
    one.apply(&Update::Add(x.clone()), &actor(1), &VersionVector::new())
        .expect("a set");
    // Two has not seen one's add: its remove leaves it.
    two.apply(&Update::Remove(x.clone()), &actor(2), &two.clock())
        .expect("a set");
    two.merge(&one).expect("a set");
    assert_eq!(two.members(), Some(BTreeSet::from(["x".to_string()])));
    // Now it has: the remove takes it.
    two.apply(&Update::Remove(x), &actor(2), &two.clock())
        .expect("a set");
    one.merge(&two).expect("a set");
    assert_eq!(one.members(), Some(BTreeSet::new()));
}

#[test]
fn a_remove_takes_only_what_its_read_saw() {
    // The client read the set before a second add of "x" reached the
    // replica: its remove leaves that add.
    let (mut one, mut two) = (Crdt::new(Kind::Set), Crdt::new(Kind::Set));
    let x = vec!["x".to_string()];
    two.apply(&Update::Add(x.clone()), &actor(2), &VersionVector::new())
        .expect("a set");
    let read = two.clock();
    one.apply(&Update::Add(x.clone()), &actor(1), &VersionVector::new())
        .expect("a set");
    two.merge(&one).expect("a set");
    two.apply(&Update::Remove(x), &actor(2), &read)
        .expect("a set");
    assert_eq!(two.members(), Some(BTreeSet::from(["x".to_string()])));
}

#[test]
fn a_type_is_fixed_by_the_first_write() {
    let mut counter = Crdt::new(Kind::Counter);
    counter
        .apply(&Update::Increment(5), &actor(0), &VersionVector::new())
        .expect("a counter");
    let before = counter.clone();
    let set = Crdt::new(Kind::Set);
    assert_eq!(
        counter.merge(&set),
        Err(Mismatch::new(
            Shape::Crdt(Kind::Counter),
            Shape::Crdt(Kind::Set)
        ))
    );
    let add = Update::Add(vec!["a".into()]);
    let e = counter
        .apply(&add, &actor(0), &VersionVector::new())
        .expect_err("not a set");
    assert_eq!(e.to_string(), "the key holds a counter, not a set");
    assert_eq!(counter, before, "left as it was");
    assert_eq!(counter.counter().as_deref(), Some("5"));
}

#[test]
fn a_count_that_would_pass_u64_is_refused_not_wrapped() {
    let none = VersionVector::new();
    let one = actor(0);
    let mut counter = Crdt::new(Kind::Counter);
    for _ in 0..2 {
        counter
            .apply(&Update::Increment(i64::MAX), &one, &none)
            .expect("fits");
    }
    let before = counter.clone();
    let e = counter
        .apply(&Update::Increment(i64::MAX), &one, &none)
        .expect_err("2^64 + 2^63 - 3 does not fit one node's count");
    assert!(matches!(e, Refused::Overflow { .. }), "{e}");
    assert_eq!(counter, before);
    // Another node's count, and the other direction, still take it.
    counter
        .apply(&Update::Increment(i64::MAX), &actor(1), &none)
        .expect("another count");
    counter
        .apply(&Update::Increment(-i64::MAX), &one, &none)
        .expect("the decrements' count");
    let want = i128::from(i64::MAX) * 2;
    assert_eq!(counter.counter(), Some(want.to_string()));

    // A map's counter field, with two increments in one update too.
    let mut map = Crdt::new(Kind::Map);
    let field = |n: i64| FieldUpdate::Increment(n);
    let update = Update::Map(vec![
        ("n".into(), field(i64::MAX)),
        ("n".into(), field(i64::MAX)),
    ]);
    map.apply(&update, &one, &none).expect("2^64 - 2 fits");
    let before = map.clone();
    let more = Update::Map(vec![
        ("s".into(), FieldUpdate::Add(vec!["a".into()])),
        ("n".into(), field(2)),
    ]);
    let e = map.apply(&more, &one, &none).expect_err("2^64 does not");
    assert!(matches!(e, Refused::Overflow { .. }), "{e}");
    assert_eq!(map, before, "nothing applied, not even s");
}

#[test]
fn a_counter_holds_more_than_an_i64() {
    let mut c = Crdt::new(Kind::Counter);
    for i in 0..4 {
        c.apply(
            &Update::Increment(i64::MAX),
            &actor(i),
            &VersionVector::new(),
        )
        .expect("a counter");
    }
    let want = (i128::from(i64::MAX) * 4).to_string();
    assert_eq!(c.counter(), Some(want));
}
