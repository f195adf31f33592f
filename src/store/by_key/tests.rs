//! Scans in key order, asked of both engines against a model.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::StorageConfig;
use crate::ring;
use crate::store::tests::engines;
use crate::store::{FjallStore, Identity, Store, decode_set, encode_set};
use crate::version::{Content, Context, SiblingSet};

fn value_set(identity: &Identity, value: &str) -> SiblingSet {
    let mut set = SiblingSet::default();
    let dot = identity.mint(|actor| set.min_counter(&Context::default(), actor));
    set.write(
        &Context::default(),
        dot,
        Content::Value(Bytes::from(value.to_string())),
    );
    set
}

async fn put(store: &dyn Store, key: &str, set: Option<SiblingSet>) {
    let next = set.unwrap_or_default();
    store
        .update(key, Box::new(move |_| Ok(next)))
        .wait()
        .await
        .expect("update");
}

/// Every page of a scan from `range`'s start, each resumed just after the
/// previous one's `through`: the keys found, and how many pages it took.
fn scan_all(
    store: &dyn Store,
    range: &KeyRange,
    wanted: &dyn Fn(Position) -> bool,
    limits: ScanLimits,
) -> (Vec<String>, usize) {
    let (mut found, mut pages, mut from) = (Vec::new(), 0, range.clone());
    loop {
        pages += 1;
        assert!(pages < 10_000, "the scan makes no progress");
        let page = store.scan_keys(&from, wanted, limits).expect("scan");
        assert!(page.entries.len() <= limits.keys.max(1));
        for (key, bytes) in &page.entries {
            assert_eq!(
                store.get(key).expect("get"),
                Some(decode_set(bytes).expect("decode"))
            );
            found.push(key.clone());
        }
        let Some(through) = page.through else {
            return (found, pages);
        };
        assert!(
            through.as_bytes() >= from.start.as_slice(),
            "a page covers its start"
        );
        from.start = [through.as_bytes(), &[0]].concat();
    }
}

fn wanted_half(position: Position) -> bool {
    position.is_multiple_of(2)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Pages of any size, resumed after `through`, return exactly the
    /// wanted live keys of the range, in order, on both engines, whatever
    /// was written and removed.
    #[test]
    fn pages_resumed_after_through_return_exactly_the_wanted_keys_in_order(
        ops in proptest::collection::vec(("[a-d]{1,3}", any::<bool>()), 1..80),
        start in "[a-d]{0,2}",
        end in proptest::option::of("[a-d]{1,2}"),
        keys in 1usize..7,
        examined in 1usize..9,
        bytes in 1usize..300,
        half in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let identity = Identity::ephemeral("n1");
            for (store, _dir) in engines() {
                let mut model = BTreeMap::new();
                for (key, live) in &ops {
                    let set = live.then(|| value_set(&identity, key));
                    put(store.as_ref(), key, set).await;
                    match live {
                        true => model.insert(key.clone(), ()),
                        false => model.remove(key),
                    };
                }
                let range = KeyRange { start: start.clone().into_bytes(), end: end.clone().map(String::into_bytes) };
                let wanted: &dyn Fn(Position) -> bool = if half { &wanted_half } else { &|_| true };
                let expected: Vec<String> = model
                    .keys()
                    .filter(|k| k.as_bytes() >= range.start.as_slice() && !range.ended_by(k.as_bytes()))
                    .filter(|k| wanted(ring::position(k.as_bytes())))
                    .cloned()
                    .collect();
                let limits = ScanLimits { keys, bytes, examined };
                let (found, _) = scan_all(store.as_ref(), &range, wanted, limits);
                prop_assert_eq!(&found, &expected);
            }
            Ok(())
        })?;
    }
}

/// A data directory written before the index existed: the index is built
/// when it is opened, and scans find every key.
#[tokio::test]
async fn a_data_directory_from_before_the_index_is_indexed_when_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = Identity::ephemeral("n1");
    let keys: Vec<String> = (0..250).map(|i| format!("k{i:03}")).collect();
    {
        // What an older build left: the sets in `kv`, and nothing else.
        let db = fjall::Database::builder(dir.path().join("fjall"))
            .open()
            .expect("open");
        let kv = db
            .keyspace("kv", fjall::KeyspaceCreateOptions::default)
            .expect("kv");
        for key in &keys {
            let set = encode_set(&value_set(&identity, key)).expect("encode");
            kv.insert(crate::store::storage_key(key), set)
                .expect("insert");
        }
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    // Opened by this build: the index is built; opened again, it is kept
    // up to date by the writes between.
    let store = FjallStore::open(dir.path(), &StorageConfig::default()).expect("open");
    let limits = ScanLimits {
        keys: 64,
        bytes: usize::MAX,
        examined: 1000,
    };
    let (found, pages) = scan_all(&store, &KeyRange::default(), &|_| true, limits);
    assert_eq!(found, keys);
    assert_eq!(pages, 4, "250 keys in pages of 64");
    put(&store, "k999", Some(value_set(&identity, "k999"))).await;
    put(&store, "k000", None).await;
    drop(store);
    let store = FjallStore::open(dir.path(), &StorageConfig::default()).expect("reopen");
    let mut expected = keys[1..].to_vec();
    expected.push("k999".into());
    assert_eq!(
        scan_all(&store, &KeyRange::default(), &|_| true, limits).0,
        expected
    );
}

/// A scan whose wanted positions are few stops after `examined` entries
/// and says how far it covered, so its work is bounded however much the
/// node holds outside them.
#[tokio::test]
async fn a_scan_of_few_wanted_keys_stops_after_examining_its_limit() {
    for (store, _dir) in engines() {
        let identity = Identity::ephemeral("n1");
        for i in 0..100 {
            let key = format!("k{i:03}");
            put(store.as_ref(), &key, Some(value_set(&identity, &key))).await;
        }
        let limits = ScanLimits {
            keys: 10,
            bytes: usize::MAX,
            examined: 20,
        };
        let page = store
            .scan_keys(&KeyRange::default(), &|_| false, limits)
            .expect("scan");
        assert!(page.entries.is_empty());
        assert_eq!(page.through.as_deref(), Some("k019"));
        let end = KeyRange {
            start: b"k090".to_vec(),
            end: Some(b"k095".to_vec()),
        };
        let page = store.scan_keys(&end, &|_| true, limits).expect("scan");
        assert_eq!(page.entries.len(), 5);
        assert_eq!(page.through, None, "the range ended first");
    }
}
