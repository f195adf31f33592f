//! The same behaviour asked of both engines, plus what only disk can show.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{StorageConfig, SyncPolicy};
use crate::version::{Content, Context};

fn engines() -> Vec<(Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let fjall = FjallStore::open(dir.path(), &StorageConfig::default()).expect("open fjall");
    vec![
        (Arc::new(MemoryStore::new()), None),
        (Arc::new(fjall), Some(dir)),
    ]
}

/// A blind write through `identity`: adds a sibling, removes nothing.
fn blind_write(store: &dyn Store, identity: &Identity, key: &str, value: &str) -> SiblingSet {
    let (set, _durable) = store
        .update(key, &mut |current| {
            let mut set = current.unwrap_or_default();
            let dot = identity.mint(
                store,
                set.min_counter(&Context::default(), identity.actor()),
            )?;
            set.write(
                &Context::default(),
                dot,
                Content::Value(Bytes::from(value.to_string())),
            );
            Ok(set)
        })
        .expect("update");
    set
}

#[test]
fn update_then_get_round_trips() {
    for (store, _dir) in engines() {
        let identity = Identity::load(store.as_ref(), "n1").expect("identity");
        assert_eq!(store.get("k").expect("get"), None);
        let written = blind_write(store.as_ref(), &identity, "k", "1");
        assert_eq!(store.get("k").expect("get"), Some(written));
    }
}

#[test]
fn a_failed_merge_function_leaves_the_key_untouched() {
    for (store, _dir) in engines() {
        let identity = Identity::load(store.as_ref(), "n1").expect("identity");
        let before = blind_write(store.as_ref(), &identity, "k", "1");
        let result = store.update("k", &mut |_| Err(crate::error::Error::Storage("no".into())));
        assert!(result.is_err());
        assert_eq!(store.get("k").expect("get"), Some(before));
    }
}

#[test]
fn concurrent_updates_of_one_key_lose_nothing() {
    for (store, _dir) in engines() {
        let identity = Arc::new(Identity::load(store.as_ref(), "n1").expect("identity"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (store, identity) = (Arc::clone(&store), Arc::clone(&identity));
                std::thread::spawn(move || {
                    for i in 0..50 {
                        blind_write(store.as_ref(), &identity, "hot", &format!("{t}-{i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        let set = store.get("hot").expect("get").expect("present");
        assert_eq!(set.siblings().len(), 400);
        assert!(set.is_well_formed());
    }
}

#[test]
fn scans_follow_ring_order_within_the_range() {
    for (store, _dir) in engines() {
        let identity = Identity::load(store.as_ref(), "n1").expect("identity");
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        for k in &keys {
            blind_write(store.as_ref(), &identity, k, "v");
        }
        let all = store.scan(0..=u64::MAX, usize::MAX).expect("scan");
        assert_eq!(all.len(), 200);
        let positions: Vec<u64> = all
            .iter()
            .map(|(k, _)| ring::position(k.as_bytes()))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] <= w[1]),
            "not in ring order"
        );

        let (lo, hi) = (u64::MAX / 4, u64::MAX / 2);
        let part = store.scan(lo..=hi, usize::MAX).expect("scan");
        let expected = keys
            .iter()
            .filter(|k| (lo..=hi).contains(&ring::position(k.as_bytes())))
            .count();
        assert_eq!(part.len(), expected);
        assert!(
            part.iter()
                .all(|(k, _)| (lo..=hi).contains(&ring::position(k.as_bytes())))
        );
        assert_eq!(store.scan(0..=u64::MAX, 7).expect("scan").len(), 7);
    }
}

#[test]
fn fjall_keeps_data_identity_and_counter_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig::default();
    let (first_actor, last_dot, written) = {
        let store = FjallStore::open(dir.path(), &config).expect("open");
        let identity = Identity::load(&store, "n1").expect("identity");
        let set = blind_write(&store, &identity, "k", "1");
        let dot = set.siblings()[0].dot.clone();
        (identity.actor().clone(), dot, set)
    };
    let store = FjallStore::open(dir.path(), &config).expect("reopen");
    assert_eq!(store.get("k").expect("get"), Some(written));
    let identity = Identity::load(&store, "n1").expect("identity");
    assert_eq!(identity.actor(), &first_actor);
    let next = identity.mint(&store, 0).expect("mint");
    assert!(
        next.counter > last_dot.counter,
        "counter went back after restart"
    );
}

#[test]
fn a_new_data_directory_is_a_new_incarnation() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let config = StorageConfig::default();
    let sa = FjallStore::open(a.path(), &config).expect("open");
    let sb = FjallStore::open(b.path(), &config).expect("open");
    let ia = Identity::load(&sa, "n1").expect("identity");
    let ib = Identity::load(&sb, "n1").expect("identity");
    assert_eq!(ia.actor().node, ib.actor().node);
    assert_ne!(ia.actor(), ib.actor());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_acknowledges_every_concurrent_writer() {
    for sync in [SyncPolicy::Always, SyncPolicy::Interval] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StorageConfig {
            sync,
            ..StorageConfig::default()
        };
        let store: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path(), &config).expect("open"));
        let identity = Arc::new(Identity::load(store.as_ref(), "n1").expect("identity"));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (store, identity) = (Arc::clone(&store), Arc::clone(&identity));
                tokio::spawn(async move {
                    let (_, durable) = store
                        .update(&format!("k{i}"), &mut |cur| {
                            let mut set = cur.unwrap_or_default();
                            let dot = identity.mint(store.as_ref(), 1)?;
                            set.write(&Context::default(), dot, Content::Tombstone);
                            Ok(set)
                        })
                        .expect("update");
                    durable.wait().await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("durable");
        }
        assert_eq!(
            store.scan(0..=u64::MAX, usize::MAX).expect("scan").len(),
            64
        );
    }
}
