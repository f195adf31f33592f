//! Properties of the sibling set, checked over random histories of writes
//! and replica exchanges among three nodes whose counters are shared with
//! other keys (so a key sees gaps in every actor's counter).

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::version::context::Seal;
use crate::version::{Context, ContextError};

const NODES: usize = 3;
/// The peer secret contexts are sealed under in these tests.
const SECRET: &[u8] = b"the cluster's secret, 32 bytes or more";

#[derive(Clone, Debug)]
enum Source {
    /// Read one replica.
    Replica(usize),
    /// Read every replica and merge (R = N).
    All,
    /// No context: a blind write.
    Blind,
    /// A context some earlier read returned: a stale client.
    Stale(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        node: usize,
        source: Source,
        delete: bool,
        gap: u64,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        (0..NODES).prop_map(Source::Replica),
        Just(Source::All),
        Just(Source::Blind),
        any::<usize>().prop_map(Source::Stale),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..NODES, source(), prop::bool::weighted(0.2), 0..5u64).prop_map(
            |(node, source, delete, gap)| Op::Write {
                node,
                source,
                delete,
                gap
            }
        ),
        (0..NODES, 0..NODES).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// A tiny cluster holding one key: every node's replica and dot counter, and
/// a log of what was written and which contexts the writes carried.
struct Model {
    replicas: Vec<SiblingSet>,
    counters: Vec<u64>,
    reads: Vec<VersionVector>,
    written: Vec<Dot>,
    write_contexts: Vec<VersionVector>,
}

fn actor(node: usize) -> Actor {
    Actor::new(format!("n{node}"), 7)
}

impl Model {
    fn new() -> Self {
        Model {
            replicas: vec![SiblingSet::new(); NODES],
            counters: vec![0; NODES],
            reads: vec![VersionVector::new()],
            written: Vec::new(),
            write_contexts: Vec::new(),
        }
    }

    fn read_all(&self) -> SiblingSet {
        let mut all = SiblingSet::new();
        for r in &self.replicas {
            all.merge(r);
        }
        all
    }

    fn context_of(&mut self, source: &Source) -> VersionVector {
        let ctx = match source {
            Source::Replica(i) => self.replicas[*i].context().clone(),
            Source::All => self.read_all().context().clone(),
            Source::Blind => VersionVector::new(),
            Source::Stale(i) => self.reads[i % self.reads.len()].clone(),
        };
        self.reads.push(ctx.clone());
        ctx
    }

    /// Mints as the store does: the node's own counter, never below what the
    /// set or the client context has seen of this actor.
    fn write(&mut self, node: usize, ctx: &VersionVector, content: Content, gap: u64) -> Dot {
        self.write_ctx(node, &Context::read(ctx.clone()), content, gap)
    }

    fn write_ctx(&mut self, node: usize, ctx: &Context, content: Content, gap: u64) -> Dot {
        let me = actor(node);
        let counter =
            (self.counters[node] + 1 + gap).max(self.replicas[node].min_counter(ctx, &me));
        self.counters[node] = counter;
        let dot = Dot::new(me, counter);
        self.replicas[node].write(ctx, dot.clone(), content);
        self.written.push(dot.clone());
        self.write_contexts.push(ctx.vv.clone());
        dot
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write {
                node,
                source,
                delete,
                gap,
            } => {
                let ctx = self.context_of(source);
                let content = if *delete {
                    Content::Tombstone
                } else {
                    Content::Value(Bytes::from(format!("{}", self.written.len())))
                };
                self.write(*node, &ctx, content, *gap);
            }
            Op::Sync { from, to } => {
                let from = self.replicas[*from].clone();
                self.replicas[*to].merge(&from);
            }
        }
    }

    fn run(ops: &[Op]) -> Model {
        let mut model = Model::new();
        for op in ops {
            model.apply(op);
        }
        model
    }
}

fn dots(set: &SiblingSet) -> BTreeSet<(String, u64)> {
    set.siblings()
        .iter()
        .map(|s| (s.dot.actor.to_string(), s.dot.counter))
        .collect()
}

fn merged(a: &SiblingSet, b: &SiblingSet) -> SiblingSet {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn history() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..40)
}

proptest! {
    /// A purged delete's grave absorbs every copy that fed it: no replica's
    /// older state, merged in late, brings a value back.
    #[test]
    fn a_grave_absorbs_every_older_copy(ops in history()) {
        let model = Model::run(&ops);
        let all = model.read_all();
        if all.is_tombstoned() {
            let grave = all.grave();
            prop_assert!(grave.is_deleted() && grave.siblings().is_empty() && !grave.is_empty());
            for replica in model.replicas.iter().chain([&all]) {
                prop_assert_eq!(merged(&grave, replica), grave.clone());
                prop_assert_eq!(merged(replica, &grave), grave.clone());
            }
        }
    }

    #[test]
    fn merge_is_commutative_associative_idempotent(ops in history(), pick in any::<[usize; 3]>()) {
        let model = Model::run(&ops);
        let mut states = model.replicas.clone();
        states.push(model.read_all());
        let [a, b, c] = pick.map(|i| &states[i % states.len()]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(merged(a, a), a.clone());
        prop_assert!(merged(a, b).is_well_formed());
    }

    /// After every replica has exchanged with every other, the siblings are
    /// exactly the writes that no later write's context covered: no
    /// acknowledged write lost, and no sibling that should have gone.
    #[test]
    fn survivors_are_exactly_the_unsuperseded_writes(ops in history()) {
        let model = Model::run(&ops);
        let all = model.read_all();
        let expected: BTreeSet<_> = model
            .written
            .iter()
            .filter(|d| !model.write_contexts.iter().any(|ctx| ctx.get(&d.actor) >= d.counter))
            .map(|d| (d.actor.to_string(), d.counter))
            .collect();
        prop_assert_eq!(dots(&all), expected);
        prop_assert!(all.is_well_formed());
    }

    #[test]
    fn writes_with_the_same_context_through_one_node_both_survive(
        ops in history(), node in 0..NODES, source in source(),
    ) {
        let mut model = Model::run(&ops);
        let ctx = model.context_of(&source);
        let first = model.write(node, &ctx, Content::Value(Bytes::from_static(b"1")), 0);
        let second = model.write(node, &ctx, Content::Value(Bytes::from_static(b"2")), 0);
        let held = dots(&model.replicas[node]);
        prop_assert!(held.contains(&(first.actor.to_string(), first.counter)));
        prop_assert!(held.contains(&(second.actor.to_string(), second.counter)));
    }

    #[test]
    fn writes_with_concurrent_contexts_through_one_node_both_survive(
        ops in history(), node in 0..NODES, x in 0..NODES, y in 0..NODES,
    ) {
        let mut model = Model::run(&ops);
        let (cx, cy) = (model.context_of(&Source::Replica(x)), model.context_of(&Source::Replica(y)));
        let first = model.write(node, &cx, Content::Value(Bytes::from_static(b"x")), 0);
        let second = model.write(node, &cy, Content::Value(Bytes::from_static(b"y")), 0);
        let held = dots(&model.read_all());
        prop_assert!(held.contains(&(first.actor.to_string(), first.counter)));
        prop_assert!(held.contains(&(second.actor.to_string(), second.counter)));
    }

    /// One client that always writes with the context of its previous read
    /// never sees siblings, whatever node coordinates and however partial the
    /// replication in between.
    #[test]
    fn read_then_write_never_creates_a_sibling(
        steps in prop::collection::vec((0..NODES, prop::collection::vec((0..NODES, 0..NODES), 0..3), 0..4u64), 1..30),
    ) {
        let mut model = Model::new();
        let mut last = 0;
        for (node, syncs, gap) in steps {
            for (from, to) in syncs {
                model.apply(&Op::Sync { from, to });
            }
            // The client reads from the replica that took its last write, and
            // from the replica it will write through.
            let view = merged(&model.replicas[last], &model.replicas[node]);
            prop_assert!(view.siblings().len() <= 1, "read saw siblings: {:?}", view);
            model.write(node, &view.context().clone(), Content::Value(Bytes::from_static(b"v")), gap);
            last = node;
            prop_assert_eq!(model.read_all().siblings().len(), 1);
        }
    }

    #[test]
    fn writing_with_the_merged_context_collapses_all_siblings(ops in history(), node in 0..NODES) {
        let mut model = Model::run(&ops);
        for from in 0..NODES {
            model.apply(&Op::Sync { from, to: node });
        }
        let ctx = model.replicas[node].context().clone();
        model.write(node, &ctx, Content::Value(Bytes::from_static(b"resolved")), 0);
        prop_assert_eq!(model.replicas[node].siblings().len(), 1);
        prop_assert_eq!(model.read_all().siblings().len(), 1);
    }

    #[test]
    fn a_stale_context_never_removes_a_sibling_it_did_not_see(
        ops in history(), node in 0..NODES, stale in any::<usize>(),
    ) {
        let mut model = Model::run(&ops);
        let before = model.replicas[node].clone();
        let ctx = model.context_of(&Source::Stale(stale));
        model.write(node, &ctx, Content::Value(Bytes::from_static(b"late")), 0);
        let after = dots(&model.replicas[node]);
        for s in before.siblings() {
            if ctx.get(&s.dot.actor) < s.dot.counter {
                prop_assert!(after.contains(&(s.dot.actor.to_string(), s.dot.counter)));
            }
        }
    }

    /// A client that writes with the context its previous PUT returned, never
    /// reading, supersedes its own writes and nobody else's.
    #[test]
    fn chaining_put_contexts_supersedes_only_the_clients_own_writes(
        ops in history(), node in 0..NODES, chain in 1..6usize, gap in 0..4u64,
    ) {
        let mut model = Model::run(&ops);
        let others: Vec<_> = model.replicas[node].siblings().iter().map(|s| s.dot.clone()).collect();
        let mut ctx = Context::default();
        for i in 0..chain {
            let dot = model.write_ctx(node, &ctx, Content::Value(Bytes::from(format!("mine-{i}"))), gap);
            ctx = ctx.after_write(dot);
            let set = &model.replicas[node];
            let mine = set.siblings().iter().filter(|s| !others.contains(&s.dot)).count();
            prop_assert_eq!(mine, 1, "the client's own writes became siblings");
            for d in &others {
                prop_assert!(set.siblings().iter().any(|s| &s.dot == d), "lost a write the client never saw");
            }
        }
    }

    #[test]
    fn context_round_trips(ops in history()) {
        let model = Model::run(&ops);
        let mut ctx = Context::read(model.read_all().context().clone());
        for d in model.written.iter().rev().take(3) {
            ctx = ctx.after_write(d.clone());
        }
        let seal = Seal::new("c", Some(SECRET));
        prop_assert_eq!(Context::decode(&ctx.encode(&seal, "k"), &seal, "k"), Ok(ctx.clone()));
        let elsewhere = Seal::new("another cluster", Some(SECRET));
        prop_assert_eq!(Context::decode(&ctx.encode(&seal, "k"), &elsewhere, "k"), Err(ContextError::Foreign));
        let other_secret = Seal::new("c", Some(b"another secret, 32 bytes or more!"));
        prop_assert_eq!(Context::decode(&ctx.encode(&seal, "k"), &other_secret, "k"), Err(ContextError::Forged));
        // A context is good for its own key only: one node's counter is
        // shared by all its keys, so key X's vector says nothing of key Y.
        prop_assert_eq!(Context::decode(&ctx.encode(&seal, "k"), &seal, "k2"), Err(ContextError::KeyMismatch));
        prop_assert_eq!(Context::decode(&ctx.encode(&seal, ""), &seal, "k"), Err(ContextError::KeyMismatch));
    }

    /// A client cannot change one bit of a context and have it accepted:
    /// a forged context could claim dots that do not exist yet.
    #[test]
    fn a_changed_context_is_refused(ops in history(), at in any::<usize>(), bit in 0u8..8) {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let seal = Seal::new("c", Some(SECRET));
        let ctx = Context::read(Model::run(&ops).read_all().context().clone());
        let mut raw = engine.decode(ctx.encode(&seal, "k")).unwrap_or_default();
        let at = at % raw.len();
        raw[at] ^= 1 << bit;
        prop_assert!(Context::decode(&engine.encode(&raw), &seal, "k").is_err());
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic(text in ".{0,200}") {
        let _ = Context::decode(&text, &Seal::new("c", None), "k");
    }

    #[test]
    fn decoding_corrupted_bytes_is_an_error_not_a_panic(
        ops in history(), cut in any::<usize>(), flip in any::<(usize, u8)>(),
    ) {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let ctx = Context::read(Model::run(&ops).read_all().context().clone());
        let seal = Seal::new("c", None);
        let mut raw = engine.decode(ctx.encode(&seal, "k")).unwrap_or_default();
        let at = flip.0 % raw.len();
        raw[at] ^= flip.1;
        let cut = cut % (raw.len() + 1);
        let result = Context::decode(&engine.encode(&raw[..cut]), &seal, "k");
        if cut < raw.len() && at < cut && flip.1 == 0 {
            prop_assert!(result.is_err(), "a truncated context decoded");
        }
    }
}

#[test]
fn a_context_with_trailing_bytes_or_a_bad_header_is_corrupt() {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let seal = Seal::new("c", Some(SECRET));
    let mut vv = VersionVector::new();
    crdts::CmRDT::apply(&mut vv, Dot::new(actor(0), 3));
    let mut raw = engine
        .decode(Context::read(vv).encode(&seal, "k"))
        .expect("own encoding");
    // A byte after the postcard body, sealed as if the cluster had issued it.
    raw.truncate(raw.len() - 16);
    raw.push(0);
    let tag = seal.tag(&raw, "k");
    raw.extend_from_slice(&tag);
    assert_eq!(
        Context::decode(&engine.encode(&raw), &seal, "k"),
        Err(ContextError::Corrupt)
    );
    assert_eq!(
        Context::decode("", &seal, "k"),
        Err(ContextError::UnknownFormat)
    );
    assert_eq!(
        Context::decode("!!!", &seal, "k"),
        Err(ContextError::NotBase64)
    );
    // Format 1 (unsealed) and format 2 (sealed, bound to no key), from
    // earlier versions.
    for format in [1, 2] {
        assert_eq!(
            Context::decode(&engine.encode([format, 5, 5, 5, 5]), &seal, "k"),
            Err(ContextError::UnknownFormat)
        );
    }
    assert_eq!(
        Context::decode(&"A".repeat(20_000), &seal, "k"),
        Err(ContextError::TooLong)
    );
}

#[test]
fn deletes_leave_a_tombstone_that_reads_as_deleted() {
    let mut set = SiblingSet::new();
    set.write(
        &Context::default(),
        Dot::new(actor(0), 1),
        Content::Value(Bytes::from_static(b"1")),
    );
    assert!(!set.is_deleted());
    let ctx = Context::read(set.context().clone());
    set.write(&ctx, Dot::new(actor(0), 2), Content::Tombstone);
    assert!(set.is_deleted());
    assert_eq!(set.siblings().len(), 1);
    assert_eq!(set.context().get(&actor(0)), 2);
}

/// `set` with a TTL on some of its values, as a function of each
/// sibling's dot, so that every replica's copy of one write agrees (one
/// dot names one write, with one expiry instant).
fn with_ttls(set: &SiblingSet) -> SiblingSet {
    let mut out = set.clone();
    for s in &mut out.siblings {
        if let Content::Value(v) = &s.content
            && s.dot.counter % 2 == 1
        {
            s.content = Content::Expiring {
                value: v.clone(),
                expires_ms: s.dot.counter * 3 % 40,
            };
        }
    }
    out
}

proptest! {
    /// Any node may drop expired siblings on its own, at any time after
    /// their instant: expiring commutes with the merge, is monotone in
    /// time, drops exactly the expired siblings and keeps the context, so
    /// a copy that still holds an expired value loses it in a merge.
    #[test]
    fn expiring_commutes_with_merge(ops in history(), at in 0..45u64, later in 0..45u64) {
        let model = Model::run(&ops);
        let sets: Vec<SiblingSet> = model.replicas.iter().map(with_ttls).collect();
        for a in &sets {
            let mut expired = a.clone();
            let dropped = expired.expire(at);
            prop_assert_eq!(expired.context(), a.context());
            prop_assert_eq!(
                dropped,
                a.siblings().iter().filter(|s| s.content.is_expired(at)).count()
            );
            for s in a.siblings() {
                prop_assert_eq!(expired.siblings().contains(s), !s.content.is_expired(at));
            }
            let mut twice = expired.clone();
            twice.expire(later);
            let mut once = a.clone();
            once.expire(at.max(later));
            prop_assert_eq!(&twice, &once);
            // Its own older copy, merged in late, brings nothing back.
            let back = merged(&expired, a);
            prop_assert!(back.siblings().iter().all(|s| !s.content.is_expired(at)));
            for b in &sets {
                let mut whole = merged(a, b);
                whole.expire(at);
                let mut other = b.clone();
                other.expire(at);
                prop_assert_eq!(whole, merged(&expired, &other));
            }
        }
    }
}

#[test]
fn an_expiring_value_is_a_value_until_its_instant() {
    let content = Content::Expiring {
        value: Bytes::from_static(b"1"),
        expires_ms: 100,
    };
    assert_eq!(content.value(), Some(&Bytes::from_static(b"1")));
    assert!(!content.is_expired(99));
    assert!(content.is_expired(100));
    let mut set = SiblingSet::new();
    set.write(&Context::default(), Dot::new(actor(0), 1), content);
    assert!(!set.is_deleted());
    assert_eq!(set.next_expiry(), Some(100));
    assert_eq!(set.value_bytes(), 1);
    assert_eq!(set.expire(99), 0);
    assert_eq!(set.expire(100), 1);
    assert!(set.is_deleted() && !set.context().is_empty());
    // Encoded after the older variants: their bytes are unchanged.
    let old = postcard::to_allocvec(&Content::Tombstone).expect("encode");
    assert_eq!(old, [1]);
    let new = postcard::to_allocvec(&Content::Expiring {
        value: Bytes::from_static(b"1"),
        expires_ms: 5,
    })
    .expect("encode");
    assert_eq!(new, [2, 1, b'1', 5]);
}
