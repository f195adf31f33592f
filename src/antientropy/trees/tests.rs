use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::store::MemoryStore;
use crate::version::{Actor, Content, Context, Dot, SiblingSet};

/// Two ranges of this node, and one (the rest of the ring) it does not keep.
fn ranges() -> Vec<Range> {
    let half = Position::MAX / 2;
    vec![
        Range {
            positions: 0..=half / 2,
            replicas: vec!["n1".into()],
        },
        Range {
            positions: half / 2 + 1..=half,
            replicas: vec!["n1".into(), "n2".into()],
        },
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Write(u8, u8),
    Remove(u8),
    Build(usize),
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..60, any::<u8>()).prop_map(|(k, v)| Op::Write(k, v)),
        1 => (0u8..60).prop_map(Op::Remove),
        2 => (1usize..8).prop_map(Op::Build),
        1 => Just(Op::Rebuild),
    ]
}

async fn apply(store: &MemoryStore, key: u8, value: Option<u8>) {
    let merge: crate::store::Merge = Box::new(move |current: Option<SiblingSet>| {
        let Some(value) = value else {
            return Ok(SiblingSet::new());
        };
        let mut set = current.unwrap_or_default();
        let actor = Actor::new("n1", 1);
        let dot = Dot::new(actor.clone(), set.min_counter(&Context::default(), &actor));
        let content = Content::Value(Bytes::from(value.to_string()));
        set.write(&Context::default(), dot, content);
        Ok(set)
    });
    store
        .update(&format!("key-{key}"), merge)
        .wait()
        .await
        .expect("update");
}

fn roots(trees: &Trees) -> Vec<Option<Hash>> {
    ranges().iter().map(|r| trees.root(&r.positions)).collect()
}

fn built_from_scratch(store: &MemoryStore) -> Vec<Option<Hash>> {
    let trees = Trees::new();
    trees.set_ranges(ranges());
    while trees.build_step(store, 1000).expect("build") {}
    roots(&trees)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn trees_kept_by_observation_equal_trees_built_from_the_store(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let store = MemoryStore::new();
            let trees = Arc::new(Trees::new());
            store.observe(trees.clone());
            prop_assert_eq!(trees.set_ranges(ranges()), 2);
            for op in ops {
                match op {
                    Op::Write(k, v) => apply(&store, k, Some(v)).await,
                    Op::Remove(k) => apply(&store, k, None).await,
                    Op::Build(chunk) => {
                        trees.build_step(&store, chunk).expect("build");
                    }
                    Op::Rebuild => {
                        trees.rebuild();
                    }
                }
            }
            while trees.build_step(&store, 3).expect("build") {}
            prop_assert_eq!(roots(&trees), built_from_scratch(&store));
            prop_assert!(roots(&trees).iter().all(Option::is_some));
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn only_complete_trees_answer_and_an_unchanged_range_keeps_its_tree() {
    let store = MemoryStore::new();
    let trees = Arc::new(Trees::new());
    store.observe(trees.clone());
    trees.set_ranges(ranges());
    for k in 0..40 {
        apply(&store, k, Some(k)).await;
    }
    assert_eq!(roots(&trees), vec![None, None], "nothing built yet");
    assert!(trees.build_step(&store, 1000).expect("build"));
    assert!(!trees.build_step(&store, 1000).expect("build"));
    assert_eq!(trees.ranges(), ranges());
    let before = roots(&trees);
    assert_ne!(before[0], Some([0; 32]), "the range holds keys");
    // The same ranges again, one with a new replica list: nothing to build.
    let mut again = ranges();
    again[1].replicas.push("n3".into());
    assert_eq!(trees.set_ranges(again.clone()), 0);
    assert_eq!(trees.ranges(), again);
    assert_eq!(roots(&trees), before);
    // A range cut differently starts over.
    let mut cut = ranges();
    cut[0].positions = 0..=10;
    assert_eq!(trees.set_ranges(cut), 1);
    // Leaf lists hold every key of the range once, sorted within each leaf.
    let positions = &ranges()[1].positions;
    let leaves: Vec<u32> = (0..merkle::LEAVES as u32).collect();
    let lists = trees
        .leaf_lists(&store, positions, &leaves, usize::MAX)
        .expect("lists");
    let listed: usize = lists.iter().map(|(_, l)| l.len()).sum();
    let held = store
        .scan(positions.clone(), usize::MAX)
        .expect("scan")
        .len();
    assert_eq!(listed, held);
    assert!(
        lists
            .iter()
            .all(|(_, l)| l.windows(2).all(|w| w[0].0 < w[1].0))
    );
    // A bound cuts the answer after the leaf that reaches it.
    let some = trees
        .leaf_lists(&store, positions, &leaves, 1)
        .expect("lists");
    assert!(some.len() < leaves.len() && some.last().is_some_and(|(_, l)| !l.is_empty()));
}

#[tokio::test]
async fn a_leaf_that_drifted_from_the_store_is_rehashed_where_it_is_listed() {
    let store = MemoryStore::new();
    let trees = Arc::new(Trees::new());
    store.observe(trees.clone());
    trees.set_ranges(ranges());
    while trees.build_step(&store, 1000).expect("build") {}
    for k in 0..40 {
        apply(&store, k, Some(k)).await;
    }
    let good = roots(&trees);
    let positions = ranges()[1].positions.clone();
    // A change the observer never saw.
    let key = (0..40)
        .map(|k| format!("key-{k}"))
        .find(|k| positions.contains(&crate::ring::position(k.as_bytes())))
        .expect("a key in the range");
    let leaf = merkle::leaf(&positions, crate::ring::position(key.as_bytes()));
    trees
        .slots
        .lock()
        .get_mut(positions.start())
        .expect("slot")
        .tree
        .toggle(leaf, &[7; 32]);
    assert_ne!(roots(&trees), good);
    trees
        .leaf_lists(&store, &positions, &[leaf as u32], usize::MAX)
        .expect("lists");
    assert_eq!(roots(&trees), good);
    assert_eq!(roots(&trees), built_from_scratch(&store));
}
