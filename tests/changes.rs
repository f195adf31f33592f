//! The change feed (`GET /changes`) over real HTTP on in-process clusters
//! with their data on disk: `since=now` answers at once; a long poll
//! answers a write through any node, only under its prefix, deletes
//! included; a reader that resumes from each `next` sees every
//! acknowledged write, across a node's restart and while a node is down,
//! and with no fault sees each write once; cursors are sealed (400) and
//! expire with retention (410 with a fresh one); readers are bounded.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chorus::client::{Client, Reply};
use common::cluster::TestCluster;
use common::error_code;
use http::StatusCode;
use serde_json::Value;

/// One page: its changes as (key, deleted, context), and its `next`.
struct Page {
    changes: Vec<(String, bool, String)>,
    next: String,
}

fn page(reply: &Reply) -> Page {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.json().expect("a JSON page");
    let changes = body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let text = |f: &str| c[f].as_str().expect(f).to_string();
            (
                text("key"),
                c["deleted"].as_bool().expect("deleted"),
                text("context"),
            )
        })
        .collect();
    let next = body["next"].as_str().expect("next").to_string();
    Page { changes, next }
}

async fn poll(client: &Client, prefix: &str, since: &str, timeout_ms: u64) -> Page {
    page(
        &client
            .changes(prefix, since, timeout_ms)
            .await
            .expect("changes"),
    )
}

async fn now(client: &Client, prefix: &str) -> String {
    let start = poll(client, prefix, "now", 0).await;
    assert!(start.changes.is_empty(), "since=now has no changes");
    start.next
}

/// Follows the feed from `cursor` until every key of `wanted` was seen or
/// `within` passes; returns how often each key was seen and the cursor.
async fn follow(
    clients: &[Client],
    prefix: &str,
    mut cursor: String,
    wanted: &HashSet<String>,
    within: Duration,
) -> (HashMap<String, usize>, String) {
    let deadline = Instant::now() + within;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut turn = 0;
    while Instant::now() < deadline && !wanted.iter().all(|k| seen.contains_key(k)) {
        // Any node serves the feed: take turns.
        let client = &clients[turn % clients.len()];
        turn += 1;
        let Ok(reply) = client.changes(prefix, &cursor, 500).await else {
            continue;
        };
        if reply.status != StatusCode::OK {
            continue;
        }
        let next = page(&reply);
        for (key, _, _) in next.changes {
            *seen.entry(key).or_default() += 1;
        }
        cursor = next.next;
    }
    (seen, cursor)
}

/// Fails unless the feed showed every key of `acked`; returns how many of
/// them it showed more than once (printed, named `what`).
fn checked(what: &str, acked: &HashSet<String>, seen: &HashMap<String, usize>) -> usize {
    let missing: Vec<_> = acked.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{what}: acknowledged writes not in the feed: {missing:?}"
    );
    let repeated = acked
        .iter()
        .filter(|k| seen.get(*k).is_some_and(|&n| n > 1))
        .count();
    eprintln!(
        "{what}: {} writes, {repeated} seen more than once",
        acked.len()
    );
    repeated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_answers_a_write_through_any_node_under_its_prefix() {
    // Four nodes, N = 2: the reader's node replicates some keys, not others.
    let cluster = TestCluster::start(4, 0, 2).await;
    cluster.await_members_agree(Duration::from_secs(10)).await;
    let a = cluster.client(0);
    let cursor = now(&a, "orders/").await;
    let waiting = {
        let (a, cursor) = (a.clone(), cursor.clone());
        tokio::spawn(async move { poll(&a, "orders/", &cursor, 20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "nothing under the prefix yet");
    // A write under another prefix does not answer it; one under it does.
    cluster
        .client(3)
        .put("users/1", "1", None)
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "another prefix's write is not a change"
    );
    cluster
        .client(2)
        .put("orders/1", "{\"n\":1}", None)
        .await
        .expect("put");
    // Answered with the write (its 20 s timeout would answer none).
    let first = waiting.await.expect("reader");
    assert_eq!(
        first.changes.len(),
        1,
        "one write, once: {:?}",
        first.changes
    );
    let (key, deleted, context) = &first.changes[0];
    assert_eq!((key.as_str(), *deleted), ("orders/1", false));
    // The change's context is the key's: a write with it leaves no sibling.
    cluster
        .client(1)
        .put("orders/1", "{\"n\":2}", Some(context))
        .await
        .expect("put");
    let read = a.get("orders/1").await.expect("get");
    assert_eq!(read.status, StatusCode::OK, "one value, no siblings");

    // The next page has that update; then nothing until the timeout.
    let second = poll(&a, "orders/", &first.next, 10_000).await;
    assert_eq!(second.changes.len(), 1, "{:?}", second.changes);
    let quiet = poll(&a, "orders/", &second.next, 300).await;
    assert!(quiet.changes.is_empty());
    // A delete is a change, marked deleted.
    let context = common::read_context(&a, "orders/1").await;
    a.delete("orders/1", Some(&context)).await.expect("delete");
    let gone = poll(&cluster.client(3), "orders/", &quiet.next, 10_000).await;
    assert_eq!(gone.changes.len(), 1, "{:?}", gone.changes);
    assert!(gone.changes[0].1, "the delete says so");
    // The reader's requests were counted while they waited.
    let metrics = common::series(&a, &["chorus_feed_changes_total"]).await;
    assert!(metrics.contains("chorus_feed_changes_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_resumes_sees_every_acknowledged_write_across_a_restart_and_a_failure() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    let clients: Vec<_> = (0..3).map(|i| cluster.client(i)).collect();
    let cursor = now(&clients[0], "k/").await;
    let mut acked = HashSet::new();
    let write = |i: usize| format!("k/{i:04}");
    // No fault: every write is seen, and once.
    for i in 0..100 {
        let key = write(i);
        let reply = clients[i % 3].put(&key, "1", None).await.expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        acked.insert(key);
    }
    let (seen, cursor) = follow(&clients, "k/", cursor, &acked, Duration::from_secs(30)).await;
    let repeated = checked("no fault", &acked, &seen);
    assert!(
        repeated * 20 <= acked.len(),
        "with no fault a write is rarely seen twice: {repeated} of {}",
        acked.len()
    );

    // A reader long-polling while the writes go on: still each write once,
    // nearly always (the replicas' entries of a write come in one page).
    let live: HashSet<String> = (0..60).map(|i| format!("k/live/{i:02}")).collect();
    let follower = {
        let (clients, live, cursor) = (clients.clone(), live.clone(), cursor.clone());
        tokio::spawn(async move {
            follow(&clients, "k/live/", cursor, &live, Duration::from_secs(30)).await
        })
    };
    let mut sorted: Vec<_> = live.iter().cloned().collect();
    sorted.sort();
    for (i, key) in sorted.iter().enumerate() {
        let reply = clients[i % 3].put(key, "1", None).await.expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let (seen_live, _) = follower.await.expect("follower");
    let repeated = checked("long poll", &live, &seen_live);
    assert!(
        repeated * 10 <= live.len(),
        "a long-polling reader rarely sees a write twice: {repeated} of {}",
        live.len()
    );

    // Node 1 restarts (its log goes on in a new life), node 2 is down while
    // writes go on (W = 2 of the two left): nothing acknowledged is missed.
    cluster.stop(1).await;
    let mut during = HashSet::new();
    for i in 100..140 {
        let key = write(i);
        let reply = clients[if i % 2 == 0 { 0 } else { 2 }]
            .put(&key, "1", None)
            .await
            .expect("put");
        if reply.status == StatusCode::NO_CONTENT {
            during.insert(key);
        }
    }
    cluster.restart(1).await;
    cluster.stop(2).await;
    let clients: Vec<_> = (0..2).map(|i| cluster.client(i)).collect();
    for i in 140..180 {
        let key = write(i);
        let reply = clients[i % 2].put(&key, "1", None).await.expect("put");
        if reply.status == StatusCode::NO_CONTENT {
            during.insert(key);
        }
    }
    assert!(
        during.len() >= 60,
        "too few writes were acknowledged to mean anything: {}",
        during.len()
    );
    let (seen, cursor) = follow(&clients, "k/", cursor, &during, Duration::from_secs(30)).await;
    // Duplicates are allowed here: a node that missed writes logs them
    // when a read repair brings them.
    checked("across faults", &during, &seen);
    // Node 2 comes back: its log's entries are read from where the cursor
    // left it (duplicates at most), and a write through it is seen.
    cluster.restart(2).await;
    let clients: Vec<_> = (0..3).map(|i| cluster.client(i)).collect();
    clients[2].put("k/last", "1", None).await.expect("put");
    let last = HashSet::from(["k/last".to_string()]);
    let (seen, _) = follow(&clients, "k/", cursor, &last, Duration::from_secs(30)).await;
    assert!(seen.contains_key("k/last"));
    eprintln!(
        "checked {} acknowledged writes without a fault and {} across faults",
        acked.len(),
        during.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cursors_are_sealed_expire_with_retention_and_readers_are_bounded() {
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.changes.retention_ms = 1_000;
        c.changes.trim_interval_ms = 100;
        c.changes.max_readers = 1;
    })
    .await;
    let a = cluster.client(0);
    let cursor = now(&a, "").await;
    // Not a cursor this cluster sealed: 400, named.
    let context = {
        a.put("x", "1", None).await.expect("put");
        common::read_context(&a, "x").await
    };
    let mut flipped = cursor.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    for bad in ["garbage!", context.as_str(), flipped.as_str()] {
        let reply = a.changes("", bad, 0).await.expect("changes");
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {:?}",
            reply.body
        );
        assert_eq!(error_code(&reply), "bad_cursor");
    }
    let reply = a.changes("", "now", 0).await.expect("changes");
    assert_eq!(reply.status, StatusCode::OK);
    let missing = a
        .request(
            http::Method::GET,
            "/changes?prefix=a",
            &[],
            bytes::Bytes::new(),
        )
        .await
        .expect("changes");
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&missing.body).contains("since"));

    // One reader at a time here: a second is a 503 while the first waits.
    let waiting = {
        let (a, cursor) = (a.clone(), cursor.clone());
        tokio::spawn(async move { a.changes("nothing/", &cursor, 2_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = a.changes("nothing/", &cursor, 0).await.expect("changes");
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&second), "overloaded");
    assert_eq!(
        waiting.await.expect("reader").expect("changes").status,
        StatusCode::OK
    );

    // The write to `x` is older than retention once a trim has run: the
    // cursor from before it is gone, and the 410 carries a fresh one.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expired = a.changes("", &cursor, 0).await.expect("changes");
    assert_eq!(expired.status, StatusCode::GONE, "{:?}", expired.body);
    assert_eq!(error_code(&expired), "cursor_expired");
    let body: Value = expired.json().expect("json");
    let fresh = body["next"].as_str().expect("a fresh cursor");
    a.put("y", "1", None).await.expect("put");
    let after = poll(&cluster.client(1), "", fresh, 10_000).await;
    let keys: Vec<_> = after.changes.iter().map(|c| c.0.as_str()).collect();
    assert!(keys.contains(&"y"), "{keys:?}");
    assert!(
        !keys.contains(&"x"),
        "a write before the fresh cursor: {keys:?}"
    );
}
