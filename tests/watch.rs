//! Watches (`GET /kv/{key}?watch=true`) over real HTTP on in-process
//! clusters: a watcher on any node, a replica of the key or not, is
//! answered by a write through another node; a written key answers at
//! once; a timeout is a 304 with the context, and a loop of watches never
//! misses a write; watchers are bounded and take no request permits; a
//! stopped replica does not keep a watcher from its answer, and a node
//! that stops answers its own watchers at once.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chorus::client::{Client, Reply, key_path};
use common::cluster::TestCluster;
use common::error_code;
use http::{Method, StatusCode};
use serde_json::json;

/// `GET /kv/{key}?watch=true&{query}` with the context `seen`.
async fn watch(client: &Client, key: &str, query: &str, seen: Option<&str>) -> Reply {
    let path = format!("{}?watch=true&{query}", key_path(key));
    let headers: Vec<(&str, &str)> = seen.map(|c| ("x-chorus-context", c)).into_iter().collect();
    client
        .request(Method::GET, &path, &headers, Bytes::new())
        .await
        .expect("watch")
}

/// A watch of `key` in a task of its own.
fn spawn_watch(
    client: &Client,
    key: &'static str,
    query: &'static str,
    seen: &str,
) -> tokio::task::JoinHandle<Reply> {
    let (client, seen) = (client.clone(), seen.to_string());
    tokio::spawn(async move { watch(&client, key, query, Some(&seen)).await })
}

/// Writes `value` to `key` blind and returns the context a read gives.
async fn written(client: &Client, key: &str, value: &str) -> String {
    client.put(key, value.to_string(), None).await.expect("put");
    let read = client.get(key).await.expect("get");
    read.context().expect("a context").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_on_every_node_hear_of_a_write_through_another() {
    // Four nodes and N = 2: two of them replicate the key, two do not and
    // learn of the write through their subscriptions at its replicas.
    let cluster = TestCluster::start(4, 0, 2).await;
    cluster.await_members_agree(Duration::from_secs(10)).await;
    let written = cluster.client(0).put("doc", "1", None).await.expect("put");
    assert_eq!(written.status, StatusCode::NO_CONTENT);
    let seen = cluster
        .client(0)
        .get("doc")
        .await
        .expect("get")
        .context()
        .expect("context")
        .to_string();
    let watchers: Vec<_> = (0..4)
        .map(|i| {
            let (client, seen) = (cluster.client(i), seen.clone());
            tokio::spawn(
                async move { watch(&client, "doc", "timeout_ms=20000", Some(&seen)).await },
            )
        })
        .collect();
    // The watchers are parked (a watch answers at once only when it has
    // something to say); then one write through one node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        watchers.iter().all(|w| !w.is_finished()),
        "nothing to say yet"
    );
    let started = std::time::Instant::now();
    let update = cluster
        .client(3)
        .put("doc", "2", Some(&seen))
        .await
        .expect("put");
    assert_eq!(update.status, StatusCode::NO_CONTENT);
    for (i, w) in watchers.into_iter().enumerate() {
        let reply = w.await.expect("watcher");
        assert_eq!(reply.status, StatusCode::OK, "node {i}: {:?}", reply.body);
        assert_eq!(reply.json(), Some(json!(2)), "node {i}");
        assert!(reply.context().is_some());
    }
    // Well before the 20 s timeout (how soon is a benchmark's to say).
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_loop_never_misses_a_write() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    // A key never written: a watch with no context waits, and times out
    // with a 304 (no body).
    let idle = watch(&a, "log", "timeout_ms=300", None).await;
    assert_eq!(idle.status, StatusCode::NOT_MODIFIED);
    assert!(idle.body.is_empty());
    // Written while nobody watched: the next watch answers at once.
    b.put("log", "\"one\"", None).await.expect("put");
    let first = watch(&a, "log", "timeout_ms=5000", None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json(), Some(json!("one")));
    let seen = first.context().expect("context").to_string();
    // Nothing new: a 304 that hands the context back.
    let quiet = watch(&a, "log", "timeout_ms=300", Some(&seen)).await;
    assert_eq!(quiet.status, StatusCode::NOT_MODIFIED);
    let again = quiet.context().expect("the context back").to_string();
    // A write between two watches is found by the next.
    b.put("log", "\"two\"", Some(&seen)).await.expect("put");
    let next = watch(&a, "log", "timeout_ms=5000", Some(&again)).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.json(), Some(json!("two")));
    // A delete is a change: 404 with the context.
    let seen = next.context().expect("context").to_string();
    let waiting = {
        let a = a.clone();
        let seen = seen.clone();
        tokio::spawn(async move { watch(&a, "log", "timeout_ms=20000", Some(&seen)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.delete("log", Some(&seen)).await.expect("delete");
    let gone = waiting.await.expect("watcher");
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.context().is_some());
    // Bad input: named.
    let bad = a
        .request(Method::GET, "/kv/log?watch=maybe", &[], Bytes::new())
        .await
        .expect("get");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&bad.body).contains("watch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_are_bounded_and_take_no_request_permits() {
    let cluster = TestCluster::start_with(1, 0, 1, |c| {
        c.limits.max_watchers = 2;
        c.limits.max_inflight = 1;
    })
    .await;
    let a = cluster.client(0);
    let parked: Vec<_> = (0..2)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { watch(&a, &format!("w{i}"), "timeout_ms=3000", None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = watch(&a, "w3", "timeout_ms=3000", None).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&third), "overloaded");
    assert!(String::from_utf8_lossy(&third.body).contains("max_watchers"));
    // Two watchers wait, and the one request permit is still free.
    let read = a.get("w0").await.expect("get");
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    let metrics = common::series(&a, &["chorus_watchers"]).await;
    assert!(metrics.contains("chorus_watchers 2"), "{metrics}");
    for p in parked {
        assert_eq!(p.await.expect("watcher").status, StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_hears_of_a_write_while_a_replica_is_down() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    let seen = written(&a, "k", "1").await;
    let waiting = spawn_watch(&a, "k", "timeout_ms=20000", &seen);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A replica stops while the watcher waits; a write through the third
    // node still reaches the watcher's node (w = 2 of the two left).
    cluster.stop(1).await;
    let written = cluster
        .client(2)
        .put("k", "2", Some(&seen))
        .await
        .expect("put");
    assert_eq!(written.status, StatusCode::NO_CONTENT);
    let reply = waiting.await.expect("watcher");
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json(), Some(json!(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_stops_answers_its_watchers_at_once() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    let seen = written(&a, "k", "1").await;
    let waiting: Vec<_> = (0..3)
        .map(|_| spawn_watch(&a, "k", "timeout_ms=600000", &seen))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The watchers' own node stops: each gets a 304 with its context, to
    // watch again through another node, not a connection cut at the end
    // of the node's drain.
    // (A hang guard: without the answer, the stop waits out its drain
    // and the watchers' connections are cut.)
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        cluster.stop(0).await;
        let mut contexts = Vec::new();
        for w in waiting {
            let reply = w.await.expect("watcher");
            assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
            contexts.push(reply.context().expect("the context back").to_string());
        }
        contexts
    });
    let mut contexts = stopped.await.expect("the stop answered its watchers");
    // Through another node the watch goes on, and a write answers it.
    let b = cluster.client(1);
    let again = contexts.pop().expect("a context");
    let watcher =
        tokio::spawn(async move { watch(&b, "k", "timeout_ms=20000", Some(&again)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.client(2).put("k", "2", None).await.expect("put");
    let reply = watcher.await.expect("watcher");
    assert_eq!(
        reply.status,
        StatusCode::MULTIPLE_CHOICES,
        "a blind write beside the first"
    );
}
