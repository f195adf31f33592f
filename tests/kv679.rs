//! Riak's kv679 scenarios against chorus (issue 19), each a way Riak
//! lost acknowledged writes by minting a version-vector entry it had
//! minted before (basho/riak_kv issue 679, pull requests 1094 and 1643;
//! basho/riak_test kv679_*):
//!
//! - the backup restore: tests/rollback.rs, against real processes;
//! - the doomstone: a tombstone handed off after the key was purged and
//!   written again;
//! - one replica loses a key to a disk error, takes a merge from a stale
//!   replica, then coordinates a write on the key (Riak's 2017 finding:
//!   amnesia on a replica that does not coordinate).
//!
//! chorus mints from one counter per node life, never per key, and draws
//! a new actor for every life, so none of them can make a dot twice; the
//! tests show the outcome a client sees: nothing acknowledged is lost.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::client::{Client, key_path};
use common::cluster::TestCluster;
use http::{Method, StatusCode};

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

fn index(id: &str) -> usize {
    id.trim_start_matches('n').parse::<usize>().expect("id") - 1
}

/// Riak's "doomstone" (kv679): a key is deleted while a primary is down, so
/// a fallback keeps the tombstone as a hint; the delete is purged on the
/// primaries; the key is written again; then the fallback comes back and
/// hands the old tombstone off. In Riak the reaped key's counters started
/// over, the old tombstone's clock dominated the new value, and the new
/// value was lost. Here a purge leaves a grave that keeps the key's
/// version vector, so the old tombstone is seen and dropped and the new
/// value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_tombstone_handed_off_after_a_purge_does_not_delete_a_new_write() {
    let mut cluster = TestCluster::start_with(4, 0, 3, |c| {
        c.antientropy.interval_ms = 100;
        c.antientropy.purge_interval_ms = 200;
    })
    .await;
    cluster.await_members_agree(Duration::from_secs(30)).await;
    let ring = cluster.node(0).cluster();
    let k = (0..)
        .map(|i| format!("doom-{i}"))
        .find(|k| ring.routes().preference_list(k).first().map(String::as_str) == Some("n1"))
        .expect("a key n1 leads");
    let primaries = ring.routes().preference_list(&k);
    let fallback = ring.fallbacks(&k)[0].clone();
    let (p3, f) = (index(&primaries[2]), index(&fallback));
    let n1 = cluster.client(0);
    let all = |path: &str| format!("{path}?w=all");

    let put = n1
        .request(
            Method::PUT,
            &all(&key_path(&k)),
            &[("content-type", "application/json")],
            Bytes::from_static(b"\"v1\""),
        )
        .await
        .expect("put v1");
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    // The delete, with a primary down: the fallback keeps a hint for it.
    cluster.stop(p3).await;
    let ctx = common::read_context(&n1, &k).await;
    let delete = n1
        .request(
            Method::DELETE,
            &all(&key_path(&k)),
            &[(chorus::api::CONTEXT_HEADER, ctx.as_str())],
            Bytes::new(),
        )
        .await
        .expect("delete");
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    let hint = stored(&cluster.client(f), &k)
        .await
        .expect("the fallback holds the hint");
    assert_eq!(siblings(&hint)[0]["deleted"], true);

    // The fallback goes away with its hint; the primary comes back, gets
    // the tombstone from the others, and the delete is purged.
    cluster.stop(f).await;
    cluster.restart(p3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &primaries {
        let client = cluster.client(index(node));
        loop {
            let set = stored(&client, &k).await;
            if set.as_ref().is_some_and(|s| siblings(s).is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node} never purged {k}: {set:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Written again, blind, on every primary.
    let put = n1
        .request(
            Method::PUT,
            &all(&key_path(&k)),
            &[("content-type", "application/json")],
            Bytes::from_static(b"\"v2\""),
        )
        .await
        .expect("put v2");
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    // The fallback returns and hands its old tombstone off.
    cluster.restart(f).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&cluster.client(f), &k).await.is_some() {
        assert!(Instant::now() < deadline, "the hint was never handed off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &primaries {
        let read = cluster
            .client(index(node))
            .request(
                Method::GET,
                &format!("{}?r=all", key_path(&k)),
                &[],
                Bytes::new(),
            )
            .await
            .expect("get");
        assert_eq!(
            (read.status, &read.body[..]),
            (StatusCode::OK, &b"\"v2\""[..]),
            "through {node}: the new write was lost to the old tombstone"
        );
    }
}

/// Riak's 2017 finding: a replica that does not coordinate loses a key to a
/// disk error, receives the key back from a replica that is behind, and
/// then coordinates a blind write on it. Riak minted the next counter after
/// the stale copy's entry for itself, a counter it had used before, and an
/// acknowledged write was lost. Every value written must stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_lost_a_key_and_got_a_stale_copy_mints_nothing_twice() {
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        // No background repair: the stale copy arrives only as the test says.
        c.antientropy.mode = chorus::config::AntiEntropyMode::Off;
    })
    .await;
    let k = "lost-key";
    let (a, b) = (cluster.client(1), cluster.client(2));
    let mut written = Vec::new();
    // n2 coordinates writes on the key; n3 keeps a copy of the first only.
    for i in 0..3 {
        let value = format!("\"a{i}\"");
        let reply = a
            .request(
                Method::PUT,
                &format!("{}?w=all", key_path(k)),
                &[("content-type", "application/json")],
                Bytes::from(value.clone()),
            )
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        written.push(value);
        if i == 0 {
            // The stale copy: n3's set after the first write.
            let stale = cluster
                .node(2)
                .store()
                .get(k)
                .expect("get")
                .expect("n3 holds it");
            cluster
                .node(2)
                .store()
                .update("stale-copy", Box::new(move |_| Ok(stale)))
                .wait()
                .await
                .expect("keep the stale copy");
        }
    }
    // A disk error: n2 loses the key.
    cluster
        .node(1)
        .store()
        .update(k, Box::new(|_| Ok(chorus::version::SiblingSet::default())))
        .wait()
        .await
        .expect("lose the key");
    assert!(stored(&a, k).await.is_none());
    // n3's stale copy reaches n2 (as a late merge would), then n2
    // coordinates blind writes on the key at once.
    let stale = cluster
        .node(2)
        .store()
        .get("stale-copy")
        .expect("get")
        .expect("stale");
    let request = chorus::replica::rpc::Merge {
        key: k.to_string(),
        set: chorus::replica::rpc::EncodedSet::encode(&stale).expect("encode"),
    };
    common::peer_rpc(&a, request)
        .await
        .expect("merge the stale copy");
    for i in 0..3 {
        let value = format!("\"b{i}\"");
        let reply = a
            .request(
                Method::PUT,
                &format!("{}?w=2", key_path(k)),
                &[("content-type", "application/json")],
                Bytes::from(value.clone()),
            )
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        written.push(value);
    }
    // Every write was blind, so every value is a sibling: none may be gone.
    let read = b
        .request(
            Method::GET,
            &format!("{}?r=all", key_path(k)),
            &[],
            Bytes::new(),
        )
        .await
        .expect("get");
    let body = String::from_utf8_lossy(&read.body).to_string();
    for value in &written {
        assert!(body.contains(value.as_str()), "{value} was lost: {body}");
    }
}
