//! The same behaviour asked of both engines, plus what only disk can show.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{StorageConfig, SyncPolicy};
use crate::version::{Content, Context};

pub(super) fn engines() -> Vec<(Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let fjall = FjallStore::open(dir.path(), &StorageConfig::default()).expect("open fjall");
    vec![
        (Arc::new(MemoryStore::new()), None),
        (Arc::new(fjall), Some(dir)),
    ]
}

/// A blind write through `identity`: adds a sibling, removes nothing.
fn blind(identity: &Arc<Identity>, content: Content) -> Merge {
    let identity = Arc::clone(identity);
    Box::new(move |current| {
        let mut set = current.unwrap_or_default();
        let dot = identity.mint(|actor| set.min_counter(&Context::default(), actor));
        set.write(&Context::default(), dot, content);
        Ok(set)
    })
}

async fn blind_write(
    store: &dyn Store,
    identity: &Arc<Identity>,
    key: &str,
    value: &str,
) -> SiblingSet {
    let content = Content::Value(Bytes::from(value.to_string()));
    store
        .update(key, blind(identity, content))
        .wait()
        .await
        .expect("update")
}

fn identity() -> Arc<Identity> {
    Arc::new(Identity::ephemeral("n1"))
}

#[tokio::test]
async fn update_then_get_round_trips() {
    for (store, _dir) in engines() {
        assert_eq!(store.get("k").expect("get"), None);
        let written = blind_write(store.as_ref(), &identity(), "k", "1").await;
        assert_eq!(store.get("k").expect("get"), Some(written));
    }
}

#[tokio::test]
async fn an_empty_set_removes_the_key_and_a_later_update_in_the_batch_sees_it_gone() {
    for (store, _dir) in engines() {
        let id = identity();
        blind_write(store.as_ref(), &id, "k", "1").await;
        let remove = store.update("k", Box::new(|_| Ok(SiblingSet::default())));
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let probe = Arc::clone(&seen);
        let after = store.update(
            "k",
            Box::new(move |current| {
                *probe.lock() = Some(current.is_some());
                Err(crate::error::Error::Storage("only looking".into()))
            }),
        );
        assert!(remove.wait().await.expect("remove").is_empty());
        assert!(after.wait().await.is_err());
        assert_eq!(*seen.lock(), Some(false), "the removal was not visible");
        assert_eq!(store.get("k").expect("get"), None);
        assert!(store.scan(0..=u64::MAX, 10).expect("scan").is_empty());
    }
}

#[tokio::test]
async fn a_failed_merge_leaves_the_key_untouched() {
    for (store, _dir) in engines() {
        let before = blind_write(store.as_ref(), &identity(), "k", "1").await;
        let refused: Merge = Box::new(|_| Err(crate::error::Error::Storage("no".into())));
        assert!(store.update("k", refused).wait().await.is_err());
        assert_eq!(store.get("k").expect("get"), Some(before));
    }
}

#[tokio::test]
async fn a_panicking_merge_fails_alone_and_the_store_keeps_writing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), &StorageConfig::default()).expect("open");
    let panics: Merge = Box::new(|_| panic!("a bug in a merge"));
    assert!(store.update("k", panics).wait().await.is_err());
    assert_eq!(store.get("k").expect("get"), None);
    blind_write(&store, &identity(), "k", "1").await;
    assert!(
        store.get("k").expect("get").is_some(),
        "the committer stopped after a panic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_key_lose_nothing() {
    for (store, _dir) in engines() {
        let identity = identity();
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let (store, identity) = (Arc::clone(&store), Arc::clone(&identity));
                tokio::spawn(async move {
                    for i in 0..50 {
                        blind_write(store.as_ref(), &identity, "hot", &format!("{t}-{i}")).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let set = store.get("hot").expect("get").expect("present");
        assert_eq!(set.siblings().len(), 400);
        assert!(set.is_well_formed());
    }
}

#[tokio::test]
async fn scans_follow_ring_order_within_the_range() {
    for (store, _dir) in engines() {
        let identity = identity();
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        for k in &keys {
            blind_write(store.as_ref(), &identity, k, "v").await;
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

#[tokio::test]
async fn fjall_keeps_data_across_restarts_and_every_life_is_a_new_actor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig::default();
    let (first_actor, written) = {
        let store = FjallStore::open(dir.path(), &config).expect("open");
        let identity = Arc::new(
            Identity::load(dir.path(), "n1", crate::clock::system_ms()).expect("identity"),
        );
        let set = blind_write(&store, &identity, "k", "1").await;
        (identity.actor().clone(), set)
    };
    let store = FjallStore::open(dir.path(), &config).expect("reopen");
    assert_eq!(store.get("k").expect("get"), Some(written));
    let identity = Identity::load(dir.path(), "n1", crate::clock::system_ms()).expect("identity");
    assert_eq!(identity.actor().node, first_actor.node);
    assert_ne!(
        identity.actor(),
        first_actor,
        "a restart reused the actor of the previous life"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("identity.json")).expect("read"))
            .expect("json");
    assert_eq!(record["incarnation"], identity.actor().incarnation);
    assert_eq!(record["lives"][0], first_actor.incarnation);
}

/// Riak's kv679 by rollback: the data directory goes back to an older copy
/// (a restored backup), identity file included. The node must never mint
/// a dot it minted in a life the copy does not remember.
#[tokio::test]
async fn a_data_directory_restored_from_a_copy_never_mints_a_dot_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = tempfile::tempdir().expect("copy");
    let config = StorageConfig::default();
    let mut minted = std::collections::HashSet::new();
    // Life 1 writes, then the directory is copied aside.
    {
        let store = FjallStore::open(dir.path(), &config).expect("open");
        let identity = Arc::new(
            Identity::load(dir.path(), "n1", crate::clock::system_ms()).expect("identity"),
        );
        for i in 0..3 {
            let set = blind_write(&store, &identity, "k", &i.to_string()).await;
            minted.extend(set.siblings().iter().map(|s| s.dot.clone()));
        }
    }
    copy_dir(dir.path(), copy.path());
    // Life 2 writes more, then the copy is put back.
    {
        let store = FjallStore::open(dir.path(), &config).expect("open");
        let identity = Arc::new(
            Identity::load(dir.path(), "n1", crate::clock::system_ms()).expect("identity"),
        );
        for i in 0..3 {
            let set = blind_write(&store, &identity, "k", &format!("2{i}")).await;
            minted.extend(set.siblings().iter().map(|s| s.dot.clone()));
        }
    }
    std::fs::remove_dir_all(dir.path()).expect("wipe");
    copy_dir(copy.path(), dir.path());
    // Life 3 on the restored copy: every dot it mints is new.
    let store = FjallStore::open(dir.path(), &config).expect("open");
    let identity =
        Arc::new(Identity::load(dir.path(), "n1", crate::clock::system_ms()).expect("identity"));
    let mut set = SiblingSet::new();
    for i in 0..3 {
        set = blind_write(&store, &identity, "k", &format!("3{i}")).await;
    }
    let third: Vec<_> = set
        .siblings()
        .iter()
        .filter(|s| s.dot.actor == identity.actor())
        .collect();
    assert_eq!(third.len(), 3);
    for sibling in third {
        assert!(
            minted.insert(sibling.dot.clone()),
            "{:?} was minted twice",
            sibling.dot
        );
    }
    assert_eq!(minted.len(), 9);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_retired_actor_never_mints_again_and_amnesia_retires_it() {
    let identity = Identity::in_memory("n1", 7);
    let first = identity.mint(|_| 0);
    assert_eq!(first.counter, 1);
    identity.retire("released", "a test");
    let second = identity.mint(|_| 0);
    assert_ne!(second.actor, first.actor, "a retired actor minted again");
    // A merge holding a dot of the current actor that the local copy lacks.
    let mut local = crate::version::VersionVector::new();
    let mut incoming = crate::version::VersionVector::new();
    crdts::CmRDT::apply(&mut local, second.clone());
    crdts::CmRDT::apply(&mut incoming, second.clone());
    assert!(
        !identity.check_amnesia("k", &local, &incoming),
        "nothing lost"
    );
    let third = identity.mint(|_| 0);
    crdts::CmRDT::apply(&mut incoming, third.clone());
    assert!(
        identity.check_amnesia("k", &local, &incoming),
        "the gap went unseen"
    );
    assert_ne!(identity.mint(|_| 0).actor, third.actor);
    // The same seed retires to the same incarnations (the simulation replays).
    let again = Identity::in_memory("n1", 7);
    again.retire("released", "a test");
    assert_eq!(again.actor(), second.actor);
}

#[test]
fn a_new_data_directory_is_a_new_incarnation_and_a_dir_keeps_its_owner() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let ia = Identity::load(a.path(), "n1", crate::clock::system_ms()).expect("identity");
    let ib = Identity::load(b.path(), "n1", crate::clock::system_ms()).expect("identity");
    assert_eq!(ia.actor().node, ib.actor().node);
    assert_ne!(ia.actor(), ib.actor());
    assert!(
        Identity::load(a.path(), "n2", crate::clock::system_ms()).is_err(),
        "n2 took over n1's data directory"
    );
    // A record from before lives were recorded is read as one life.
    let old = br#"{"node": "n1", "incarnation": 12345, "lease": 1048576}"#;
    std::fs::write(a.path().join("identity.json"), old).expect("old record");
    let next = Identity::load(a.path(), "n1", crate::clock::system_ms()).expect("identity");
    assert_ne!(next.actor().incarnation, 12345);
    std::fs::write(a.path().join("identity.json"), b"{garbage").expect("corrupt");
    assert!(
        Identity::load(a.path(), "n1", crate::clock::system_ms()).is_err(),
        "a corrupt identity was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_every_concurrent_writer_once_durable() {
    for sync in [SyncPolicy::Always, SyncPolicy::Interval] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StorageConfig {
            sync,
            ..StorageConfig::default()
        };
        let store: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path(), &config).expect("open"));
        let identity = identity();
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let (store, identity) = (Arc::clone(&store), Arc::clone(&identity));
                tokio::spawn(async move {
                    // Two writes of each key, so batches hold repeated keys.
                    for round in 0..2 {
                        let key = format!("k{}", (i + round) % 64);
                        store
                            .update(&key, blind(&identity, Content::Tombstone))
                            .wait()
                            .await?;
                    }
                    Ok::<_, crate::error::Error>(())
                })
            })
            .collect();
        for w in writers {
            w.await.expect("task").expect("durable");
        }
        let all = store.scan(0..=u64::MAX, usize::MAX).expect("scan");
        assert_eq!(all.len(), 64);
        assert!(
            all.iter().all(|(_, set)| set.siblings().len() == 2),
            "a write in a batch was lost"
        );
    }
}

#[tokio::test]
async fn an_update_hands_back_its_set_then_says_when_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        sync: SyncPolicy::Always,
        ..StorageConfig::default()
    };
    let fjall: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path(), &config).expect("open"));
    for store in [fjall, Arc::new(MemoryStore::new()) as Arc<dyn Store>] {
        let content = Content::Value(Bytes::from_static(b"1"));
        let (set, _, durable) = store
            .update("k", blind(&identity(), content))
            .applied_with_bytes()
            .await
            .expect("applied");
        assert_eq!(set.siblings().len(), 1);
        durable.wait().await.expect("durable");
        assert_eq!(store.get("k").expect("get"), Some(set));
        // A refused update fails at the first step and writes nothing.
        let refused: Merge = Box::new(|_| Err(Error::Protocol("no".into())));
        assert!(
            store
                .update("k2", refused)
                .applied_with_bytes()
                .await
                .is_err()
        );
        assert_eq!(store.get("k2").expect("get"), None);
    }
}

/// The fjall store hands back the bytes it wrote, so a coordinator sends
/// them to the other replicas without encoding the set again; they are
/// exactly the set's encoding, and a removed key has none.
#[tokio::test]
async fn the_fjall_store_hands_back_the_bytes_it_wrote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), &StorageConfig::default()).expect("open");
    let content = Content::Value(Bytes::from_static(b"\"once\""));
    let (set, bytes, durable) = store
        .update("k", blind(&identity(), content))
        .applied_with_bytes()
        .await
        .expect("applied");
    durable.wait().await.expect("durable");
    let bytes = bytes.expect("the bytes written");
    assert_eq!(bytes.as_ref(), encode_set(&set).expect("encode").as_slice());
    assert_eq!(decode_set(&bytes).expect("decode"), set);
    let remove: Merge = Box::new(|_| Ok(SiblingSet::default()));
    let (removed, bytes, _) = store
        .update("k", remove)
        .applied_with_bytes()
        .await
        .expect("removed");
    assert!(removed.is_empty());
    assert_eq!(bytes, None);
}

/// Records every change it is told of.
#[derive(Default)]
struct Recorder(parking_lot::Mutex<Vec<Change>>);

impl Observer for Recorder {
    fn around(&self, write: &mut dyn FnMut() -> Vec<Change>) {
        let mut seen = self.0.lock();
        seen.extend(write());
    }
}

#[tokio::test]
async fn the_observer_sees_each_change_with_its_old_and_new_encoding_in_order() {
    for (store, _dir) in engines() {
        let recorder = Arc::new(Recorder::default());
        store.observe(recorder.clone());
        let id = identity();
        // Two updates of one key queued together may share a batch: each
        // change's old encoding is the one before it, so replaying them in
        // order gives the final state.
        let first = store.update("k", blind(&id, Content::Value(Bytes::from("1"))));
        let second = store.update("k", blind(&id, Content::Tombstone));
        let (first, second) = (first.wait().await, second.wait().await);
        let (first, second) = (first.expect("first"), second.expect("second"));
        store
            .update("k", Box::new(|_| Ok(SiblingSet::new())))
            .wait()
            .await
            .expect("remove");
        let failed = store.update("k", Box::new(|_| Err(Error::Storage("no".into()))));
        assert!(failed.wait().await.is_err());
        let seen = recorder.0.lock().clone();
        let encoded = |s: &SiblingSet| Some(bytes::Bytes::from(encode_set(s).expect("encode")));
        let skey = storage_key("k");
        let expected = vec![
            Change {
                storage_key: skey.clone(),
                old: None,
                new: encoded(&first),
            },
            Change {
                storage_key: skey.clone(),
                old: encoded(&first),
                new: encoded(&second),
            },
            Change {
                storage_key: skey,
                old: encoded(&second),
                new: None,
            },
        ];
        assert_eq!(seen, expected, "a failed update is no change");
    }
}

/// A life's generations outrank the last life's even when the clock went
/// back between them: the floor is kept in identity.json.
#[test]
fn each_life_reserves_generations_above_the_last_whatever_the_clock() {
    let dir = tempfile::tempdir().expect("dir");
    let first = Identity::load(dir.path(), "n1", 50_000_000).expect("identity");
    assert_eq!(first.generation_floor(), 50_000_000);
    // The clock went back an hour.
    let second = Identity::load(dir.path(), "n1", 50_000_000 - 3_600_000).expect("identity");
    assert!(
        second.generation_floor() >= first.generation_floor() + crate::clock::GENERATIONS_PER_LIFE,
        "{} after {}",
        second.generation_floor(),
        first.generation_floor()
    );
}

/// A scan stops at its byte budget, before the key that would pass it, but
/// always returns at least one key, so a set larger than the budget still
/// moves (alone); both engines alike.
#[tokio::test]
async fn scan_stops_at_its_byte_budget_but_returns_at_least_one() {
    for (store, _dir) in engines() {
        let identity = identity();
        let value = "v".repeat(1000);
        for i in 0..20 {
            blind_write(store.as_ref(), &identity, &format!("key-{i}"), &value).await;
        }
        let all = store.scan(0..=u64::MAX, usize::MAX).expect("scan");
        assert_eq!(all.len(), 20);
        let some = store
            .scan_bytes(0..=u64::MAX, usize::MAX, 5_500)
            .expect("scan");
        assert!(
            (4..=5).contains(&some.len()),
            "{} sets of 1000 bytes within 5,500",
            some.len()
        );
        assert_eq!(
            some[..],
            all[..some.len()],
            "not the first keys in ring order"
        );
        let one = store
            .scan_bytes(0..=u64::MAX, usize::MAX, 10)
            .expect("scan");
        assert_eq!(one.len(), 1, "a set over the budget goes alone");
        let counted = store.scan_bytes(0..=u64::MAX, 3, usize::MAX).expect("scan");
        assert_eq!(counted.len(), 3, "the count still bounds");
    }
}

/// Every group-commit fsync is counted with its time, its batch and the
/// wait of the oldest write it covers (what the p99 below the peak is
/// made of: docs/benchmarks.md).
#[tokio::test]
async fn each_fsync_is_measured_with_its_batch_and_its_wait() {
    let exporter = crate::metrics::install();
    // A histogram's `_count` or `_sum` sample.
    let sample = |name: &str, part: &str| {
        let text = exporter.render();
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_{part} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = |name: &str| sample(name, "count");
    let sum = |name: &str| sample(name, "sum");
    use crate::metrics::{
        STORAGE_COMMIT_SECONDS, STORAGE_FSYNC_SECONDS, STORAGE_FSYNC_WAIT_SECONDS,
        STORAGE_FSYNC_WRITES,
    };
    let before = (
        count(STORAGE_FSYNC_SECONDS),
        count(STORAGE_FSYNC_WAIT_SECONDS),
        sum(STORAGE_FSYNC_WRITES),
        count(STORAGE_COMMIT_SECONDS),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), &StorageConfig::default()).expect("open");
    for i in 0..3 {
        let content = Content::Value(Bytes::from_static(b"1"));
        let (_, _, durable) = store
            .update(&format!("k{i}"), blind(&identity(), content))
            .applied_with_bytes()
            .await
            .expect("applied");
        durable.wait().await.expect("durable");
    }
    // One fsync per write, each waited for; other tests of this process
    // fsync too, so at least these.
    assert!(count(STORAGE_FSYNC_SECONDS) >= before.0 + 3.0);
    assert!(count(STORAGE_FSYNC_WAIT_SECONDS) >= before.1 + 3.0);
    assert!(sum(STORAGE_FSYNC_WRITES) >= before.2 + 3.0);
    // And each batch's computing and journal write before its fsync.
    assert!(count(STORAGE_COMMIT_SECONDS) >= before.3 + 3.0);
}
