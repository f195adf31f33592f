//! Pages against a model: real stores answer each ask as a replica would,
//! and following `next` returns every live key of the range once, in
//! order, whatever the ring, `r`, the page size and the replicas' limits.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::coordinator::coverage::Coverage;
use crate::replica::rpc::EncodedSet;
use crate::ring::{Owner, Position, Ring};
use crate::store::{Identity, KeyRange, MemoryStore, ScanLimits, Store};
use crate::version::{Content, Context};

fn set(identity: &Identity, live: bool) -> SiblingSet {
    let mut set = SiblingSet::default();
    let dot = identity.mint(|actor| set.min_counter(&Context::default(), actor));
    let content = match live {
        true => Content::Value(bytes::Bytes::from_static(b"1")),
        false => Content::Tombstone,
    };
    set.write(&Context::default(), dot, content);
    set
}

/// What `store` answers `ask`, as `Replica::scan` does.
fn answer(
    store: &MemoryStore,
    plan: &Coverage,
    ask: &Ask,
    keys: &KeyRange,
    limit: u32,
    examined: usize,
    bytes: usize,
) -> Scanned {
    let positions: Vec<_> = ask
        .ranges
        .iter()
        .map(|&i| plan.positions(i).clone())
        .collect();
    let wanted = |at: Position| positions.iter().any(|r| r.contains(&at));
    let limits = ScanLimits {
        keys: ask_limit(plan.share(ask), limit) as usize,
        bytes,
        examined,
    };
    let found = store.scan_keys(keys, &wanted, limits).expect("scan");
    Scanned {
        entries: found
            .entries
            .into_iter()
            .map(|(k, s)| (k, EncodedSet::stored(s)))
            .collect(),
        through: found.through,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn following_next_returns_every_live_key_once_in_order(
        tokens in proptest::collection::vec(proptest::collection::vec(any::<u64>(), 1..4), 3..6),
        keys in proptest::collection::btree_map("[a-c]{1,4}", any::<bool>(), 0..60),
        r in 1usize..4,
        limit in 1u32..12,
        examined in 1usize..40,
        bytes in prop_oneof![Just(usize::MAX), 1usize..200],
        start in "[a-c]{0,2}",
        end in proptest::option::of("[a-c]{1,3}"),
        rotate in 0usize..3,
    ) {
        let ring = Ring::new(tokens.iter().enumerate().map(|(i, t)| {
            (Owner { id: format!("n{i}"), zone: None }, t.clone())
        }));
        let ranges = ring.ranges(3);
        let identity = Identity::ephemeral("n0");
        let stores: BTreeMap<String, MemoryStore> =
            (0..tokens.len()).map(|i| (format!("n{i}"), MemoryStore::new())).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        for (key, live) in &keys {
            let at = position(key.as_bytes());
            let range = ranges.iter().find(|r| r.positions.contains(&at)).expect("a range");
            let set = set(&identity, *live);
            for node in &range.replicas {
                let set = set.clone();
                let pending = stores[node].update(key, Box::new(move |_| Ok(set)));
                runtime.block_on(pending.wait()).expect("update");
            }
        }
        let mut range = KeyRange { start: start.clone().into_bytes(), end: end.clone().map(String::into_bytes) };
        let mut found: Vec<String> = Vec::new();
        for page in 0.. {
            prop_assert!(page < 500, "no progress");
            let (plan, asks) = Coverage::new(&ranges, r, |mut replicas| {
                let k = rotate % replicas.len();
                replicas.rotate_left(k);
                replicas
            });
            let answers: Vec<(Ask, Scanned)> = asks
                .into_iter()
                .map(|ask| {
                    let scanned = answer(&stores[&ask.node], &plan, &ask, &range, limit, examined, bytes);
                    (ask, scanned)
                })
                .collect();
            let merged = merge(&plan, &answers, limit as usize, 0);
            let live: Vec<String> = merged
                .keys
                .iter()
                .filter(|k| !k.merged.is_deleted())
                .map(|k| k.key.clone())
                .collect();
            prop_assert!(live.len() <= limit as usize);
            for k in &merged.keys {
                // Replicas that agree need no repair; no replica differs here.
                prop_assert!(k.repair.is_none(), "{:?}", k.repair);
            }
            found.extend(live);
            match merged.next {
                Some(next) => {
                    prop_assert!(next > range.start, "a page moves on");
                    range.start = next;
                }
                None => break,
            }
        }
        let expected: Vec<String> = keys
            .iter()
            .filter(|(k, live)| {
                **live && k.as_str() >= start.as_str() && end.as_deref().is_none_or(|e| k.as_str() < e)
            })
            .map(|(k, _)| k.clone())
            .collect();
        prop_assert_eq!(found, expected);
    }
}

/// A replica that lacks a key its peers hold, or holds another set of it,
/// is named for the repair with what it answered; replicas that agree are
/// merged from one decode and need none.
#[test]
fn replicas_that_differ_are_named_for_the_repair() {
    let ring = Ring::new((0..3).map(|i| {
        let owner = Owner {
            id: format!("n{i}"),
            zone: None,
        };
        (owner, vec![(i as u64 + 1) << 60])
    }));
    let ranges = ring.ranges(3);
    let identity = Identity::ephemeral("n0");
    let stores: Vec<MemoryStore> = (0..3).map(|_| MemoryStore::new()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (same, older) = (set(&identity, true), set(&identity, true));
    let mut newer = older.clone();
    newer.merge(&set(&identity, true));
    let put = |store: &MemoryStore, key: &str, set: SiblingSet| {
        runtime
            .block_on(store.update(key, Box::new(move |_| Ok(set))).wait())
            .expect("update");
    };
    for store in &stores {
        put(store, "agree", same.clone());
    }
    put(&stores[0], "lacking", same.clone());
    put(&stores[1], "lacking", same.clone());
    put(&stores[0], "stale", older.clone());
    put(&stores[1], "stale", newer.clone());
    put(&stores[2], "stale", newer.clone());
    let (plan, asks) = Coverage::new(&ranges, 3, |replicas| replicas);
    let keys = KeyRange::default();
    let answers: Vec<(Ask, Scanned)> = asks
        .into_iter()
        .map(|ask| {
            let i: usize = ask.node[1..].parse().expect("n<i>");
            let scanned = answer(&stores[i], &plan, &ask, &keys, 10, 100, usize::MAX);
            (ask, scanned)
        })
        .collect();
    let merged = merge(&plan, &answers, 10, 0);
    let by_key: BTreeMap<&str, &Key> = merged.keys.iter().map(|k| (k.key.as_str(), k)).collect();
    assert!(by_key["agree"].repair.is_none());
    let lacking = by_key["lacking"].repair.as_ref().expect("a repair");
    assert_eq!(lacking.len(), 3);
    assert_eq!(lacking.iter().filter(|(_, set)| set.is_none()).count(), 1);
    assert_eq!(by_key["stale"].merged, newer);
    assert_eq!(by_key["stale"].repair.as_ref().map(Vec::len), Some(3));
    assert_eq!(merged.next, None);
}
