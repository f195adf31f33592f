//! Tombstone purge by causal stability: a delete is purged only once every
//! replica holds it, and never comes back, also from a replica that was
//! down during the delete and returns holding the old value.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::client::{Client, key_path};
use chorus::config::AntiEntropyMode;
use common::cluster::TestCluster;
use http::{Method, StatusCode};

const KEYS: usize = 200;

fn key(i: usize) -> String {
    format!("purge-{i}")
}

/// This node's own stored set of `key`, as JSON (`None`: nothing stored).
async fn stored(client: &Client, key: &str) -> Option<serde_json::Value> {
    let reply = common::replica_view(client, key).await;
    match reply.status {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(reply.json().expect("json")),
        other => panic!("{key}: {other}"),
    }
}

fn siblings(set: &serde_json::Value) -> &Vec<serde_json::Value> {
    set["siblings"].as_array().expect("siblings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_is_purged_only_once_every_replica_has_it_and_never_comes_back() {
    purge_after_a_replica_missed_the_deletes(AntiEntropyMode::State).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_works_alike_with_operation_transfer() {
    purge_after_a_replica_missed_the_deletes(AntiEntropyMode::Operation).await;
}

async fn purge_after_a_replica_missed_the_deletes(mode: AntiEntropyMode) {
    let mut cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.antientropy.mode = mode;
        c.antientropy.interval_ms = 100;
        c.antientropy.purge_interval_ms = 200;
        c.limits.max_hints = 0;
    })
    .await;
    let n1 = cluster.client(0);
    for i in 0..KEYS {
        let reply = n1.put(&key(i), format!("{i}"), None).await.expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    // Every replica holds every value before n3 goes.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..KEYS {
        while stored(&cluster.client(2), &key(i)).await.is_none() {
            assert!(Instant::now() < deadline, "{} never reached n3", key(i));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.stop(2).await;
    // Deleted while n3, which still holds the values, is down.
    for i in 0..KEYS {
        let read = n1.get(&key(i)).await.expect("get");
        let ctx = read.context().expect("context").to_string();
        let reply = n1.delete(&key(i), Some(&ctx)).await.expect("delete");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    // Purge rounds run meanwhile, but n3 cannot confirm: nothing is purged.
    let purged = |cluster: &TestCluster| -> u64 {
        cluster
            .running()
            .iter()
            .map(|&i| cluster.node(i).antientropy().stats().purged)
            .sum()
    };
    let rounds_before = cluster.node(0).antientropy().stats().rounds;
    while cluster.node(0).antientropy().stats().rounds < rounds_before + 15 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        purged(&cluster),
        0,
        "a delete was purged while a replica lacked it"
    );
    for node in 0..2 {
        for i in 0..KEYS {
            let set = stored(&cluster.client(node), &key(i)).await;
            let set = set.expect("the live replicas hold the tombstone");
            assert_eq!(siblings(&set).len(), 1, "n{}: {}: {set}", node + 1, key(i));
            assert_eq!(siblings(&set)[0]["deleted"], true);
        }
    }

    // n3 returns with the old values; anti-entropy brings it the
    // tombstones, and then every delete is purged everywhere.
    cluster.restart(2).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut graves = 0;
        for node in 0..3 {
            for i in 0..KEYS {
                let set = stored(&cluster.client(node), &key(i)).await;
                if set.as_ref().is_some_and(|s| siblings(s).is_empty()) {
                    graves += 1;
                }
            }
        }
        if graves == 3 * KEYS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{graves} of {} replicas purged; purged {}",
            3 * KEYS,
            purged(&cluster)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        purged(&cluster),
        KEYS as u64,
        "each delete purged once, by its primary"
    );
    // The graves agree byte for byte, and no value came back: not now...
    for i in 0..KEYS {
        let mut bodies = Vec::new();
        for n in 0..3 {
            bodies.push(stored(&cluster.client(n), &key(i)).await);
        }
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "{}: {bodies:?}",
            key(i)
        );
        let read = cluster
            .client(i % 3)
            .request(
                Method::GET,
                &format!("{}?r=all", key_path(&key(i))),
                &[],
                Bytes::new(),
            )
            .await
            .expect("get");
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{} came back", key(i));
    }
    // ...nor after more rounds of anti-entropy and read repair.
    let rounds_before = cluster.node(2).antientropy().stats().rounds;
    while cluster.node(2).antientropy().stats().rounds < rounds_before + 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..KEYS {
        let read = cluster.client(2).get(&key(i)).await.expect("get");
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{} came back", key(i));
    }
}
