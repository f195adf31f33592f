use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::ring::position;

type Entries = BTreeMap<String, u8>;

const WHOLE: RangeInclusive<Position> = 0..=Position::MAX;

fn tree_of(entries: &Entries) -> Tree {
    let mut tree = Tree::new();
    for (key, value) in entries {
        let h = entry_hash(key.as_bytes(), &[*value]);
        tree.toggle(leaf(&WHOLE, position(key.as_bytes())), &h);
    }
    tree
}

/// The sorted `(key, hash)` list of the entries in `leaves`.
fn listed(entries: &Entries, leaves: &[usize]) -> Vec<(String, Hash)> {
    entries
        .iter()
        .filter(|(k, _)| leaves.contains(&leaf(&WHOLE, position(k.as_bytes()))))
        .map(|(k, v)| (k.clone(), entry_hash(k.as_bytes(), &[*v])))
        .collect()
}

/// Two replicas' entries: a shared base, then each side's own changes.
fn replicas() -> impl Strategy<Value = (Entries, Entries)> {
    let entries = || prop::collection::btree_map("[a-z]{1,6}", 0u8..4, 0..40);
    (
        entries(),
        entries(),
        entries(),
        prop::collection::vec("[a-z]{1,6}", 0..10),
    )
        .prop_map(|(base, only_a, only_b, dropped)| {
            let mut a = base.clone();
            a.extend(only_a);
            let mut b = base;
            b.extend(only_b);
            for key in dropped {
                b.remove(&key);
            }
            (a, b)
        })
}

proptest! {
    /// The walk and the leaf comparison find exactly the keys whose
    /// entries differ: nothing missed, nothing extra.
    #[test]
    fn the_diff_equals_the_real_difference((a, b) in replicas()) {
        let (ta, tb) = (tree_of(&a), tree_of(&b));
        let mut descent = Descent::start(&ta, &tb.root());
        let mut rounds = 0;
        while let Some((level, asked)) = descent.asking() {
            let theirs: Vec<Vec<Digest>> =
                asked.iter().map(|&n| tb.child_digests(level, n)).collect();
            descent.step(&ta, &theirs);
            rounds += 1;
        }
        prop_assert!(rounds <= DEPTH);
        let leaves = descent.leaves().to_vec();
        let found = differing_keys(&listed(&a, &leaves), &listed(&b, &leaves));
        let expected: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        prop_assert_eq!(found, expected);
        // Only leaves holding a difference are visited.
        prop_assert!(leaves.len() <= a.len() + b.len());
        prop_assert_eq!(ta == tb, a == b);
    }

    /// Entries added in any order, or added and removed again, give the
    /// same tree.
    #[test]
    fn the_tree_does_not_depend_on_order_and_toggling_twice_undoes(
        entries in prop::collection::btree_map("[a-z]{1,6}", 0u8..4, 0..40),
        extra in "[A-Z]{1,4}",
    ) {
        let forward = tree_of(&entries);
        let mut backward = Tree::new();
        for (key, value) in entries.iter().rev() {
            backward.toggle(leaf(&WHOLE, position(key.as_bytes())), &entry_hash(key.as_bytes(), &[*value]));
        }
        prop_assert_eq!(&forward, &backward);
        let h = entry_hash(extra.as_bytes(), b"x");
        let at = leaf(&WHOLE, position(extra.as_bytes()));
        backward.update(at, None, Some(&h));
        prop_assert_ne!(&forward, &backward);
        backward.update(at, Some(&h), None);
        prop_assert_eq!(forward, backward);
    }

    /// Every position of a range falls in a leaf whose range holds it, and
    /// the leaves' ranges tile the range in order.
    #[test]
    fn leaves_tile_their_range(start in any::<u64>(), len in 1u64..5000, big in any::<bool>(), pos in any::<u64>()) {
        let end = if big { Position::MAX } else { start.saturating_add(len - 1) };
        let range = start..=end;
        let pos = start + pos % (end - start).saturating_add(1).max(1);
        let at = leaf(&range, pos);
        prop_assert!(at < LEAVES);
        let covered = leaf_range(&range, at).expect("the leaf of a position covers it");
        prop_assert!(covered.contains(&pos));
        if !big {
            let mut next = start;
            for i in 0..LEAVES {
                if let Some(r) = leaf_range(&range, i) {
                    prop_assert_eq!(*r.start(), next);
                    next = r.end() + 1;
                }
            }
            prop_assert_eq!(next, end + 1);
        }
    }
}

#[test]
fn children_of_a_node_that_does_not_exist_are_empty() {
    let tree = Tree::new();
    assert_eq!(tree.children(0, 0).len(), FANOUT);
    assert!(tree.children(0, 1).is_empty());
    assert!(tree.children(DEPTH, 0).is_empty());
    assert!(tree.children(DEPTH - 1, LEAVES).is_empty());
}
