//! How a batch's writes and reads travel to the other replicas: in a few
//! `replica.merges` and `replica.reads` messages per replica
//! (`coordinator::outbox`), and one by one to a replica of the protocol
//! before them. One test, its
//! scenarios in turn: the nodes of a process share its metrics, so a
//! test of its own binary is the only one whose calls these counters
//! count.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::client::Client;
use chorus::peer::versions::OUTBOX_PROTOCOL;
use common::cluster::{PerNode, TestCluster};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// The peer calls to `service` that this process's nodes took, by any way
/// (stream, batch, post).
async fn calls(client: &Client, service: &str) -> f64 {
    let mut sum = 0.0;
    for via in ["stream", "batch", "post"] {
        let series = format!("chorus_peer_calls_total{{service=\"{service}\",via=\"{via}\"}}");
        sum += common::metric(client, &series).await;
    }
    sum
}

/// Sends `ops` in one batch through `client` with `query`; the results,
/// one per op.
async fn batch(client: &Client, query: &str, ops: Vec<Value>) -> Vec<Value> {
    let reply = client
        .request(
            Method::POST,
            &format!("/batch?{query}"),
            &[("content-type", "application/json")],
            Bytes::from(json!({ "ops": ops }).to_string()),
        )
        .await
        .expect("batch");
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json().expect("json");
    let results = json["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), ops.len());
    results
}

/// Puts every key in one batch through `client`; all must answer 204.
async fn put_batch(client: &Client, keys: &[String]) {
    let ops = keys
        .iter()
        .map(|k| json!({"op": "put", "key": k, "value": k}))
        .collect();
    let results = batch(client, "", ops).await;
    assert!(results.iter().all(|r| r["status"] == 204), "{results:?}");
}

/// Gets every key in one batch through `client` at `r`; each must answer
/// 200 with the value `put_batch` wrote.
async fn get_batch(client: &Client, keys: &[String], r: u8) {
    let ops = keys
        .iter()
        .map(|k| json!({"op": "get", "key": k}))
        .collect();
    let results = batch(client, &format!("r={r}"), ops).await;
    for (key, r) in keys.iter().zip(results) {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["value"], json!(key), "{r}");
    }
}

/// Every replica holds each of `keys` in its own store, within 10 s (a
/// write answered at w = 2 has its third copy on the way).
async fn on_every_replica(cluster: &TestCluster, keys: &[String]) {
    let until = Instant::now() + Duration::from_secs(10);
    for node in 0..3 {
        for key in keys {
            loop {
                let view = common::replica_view(&cluster.client(node), key).await;
                if view.status == StatusCode::OK {
                    break;
                }
                assert!(Instant::now() < until, "{key} is not on node {node}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Writes `keys` in one batch through the first node, waits until every
/// replica holds them, and counts the peer calls that carried their
/// merges: (`replica.merges` messages, `replica.merge` calls).
async fn batch_and_count(cluster: &TestCluster, keys: &[String]) -> (f64, f64) {
    let a = cluster.client(0);
    let before = (
        calls(&a, "replica.merges").await,
        calls(&a, "replica.merge").await,
    );
    put_batch(&a, keys).await;
    on_every_replica(cluster, keys).await;
    (
        calls(&a, "replica.merges").await - before.0,
        calls(&a, "replica.merge").await - before.1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batchs_merges_go_to_each_replica_in_a_few_messages() {
    // 100 writes, each merged into two other replicas: a few messages,
    // not 200 merges.
    let cluster = TestCluster::start(3, 0, 3).await;
    let keys: Vec<String> = (0..100).map(|i| format!("m/{i}")).collect();
    let (messages, one_by_one) = batch_and_count(&cluster, &keys).await;
    assert!(
        (2.0..=20.0).contains(&messages),
        "200 merges in {messages} messages"
    );
    assert_eq!(one_by_one, 0.0, "merges one by one");
    // Read back at r = 3: every key asks both other replicas, together.
    let a = cluster.client(0);
    let before = (
        calls(&a, "replica.reads").await,
        calls(&a, "replica.read").await,
    );
    get_batch(&a, &keys, 3).await;
    let messages = calls(&a, "replica.reads").await - before.0;
    assert!(
        (2.0..=20.0).contains(&messages),
        "200 reads in {messages} messages"
    );
    let one_by_one = calls(&a, "replica.read").await - before.1;
    assert_eq!(one_by_one, 0.0, "reads one by one");
    drop(cluster);

    // The same with the third node at the protocol before `replica.merges`:
    // it takes its 40 one by one, the second in a few messages.
    let pinned: PerNode = Box::new(|i, config| {
        if i == 2 {
            config.cluster.protocol = Some(OUTBOX_PROTOCOL - 1);
        }
    });
    let cluster = TestCluster::start_each(3, 0, 3, |_| {}, Some(pinned)).await;
    // The nodes learn each other's protocols from their answers and beats.
    let a = cluster.client(0);
    let warm = a.put("warm", Bytes::from_static(b"1"), None).await;
    assert!(warm.expect("put").status.is_success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let keys: Vec<String> = (0..40).map(|i| format!("old/{i}")).collect();
    let (messages, one_by_one) = batch_and_count(&cluster, &keys).await;
    assert!((1.0..=10.0).contains(&messages), "{messages} messages");
    assert_eq!(one_by_one, 40.0, "the old node's merges");
    let before = calls(&a, "replica.read").await;
    get_batch(&a, &keys, 3).await;
    assert_eq!(
        calls(&a, "replica.read").await - before,
        40.0,
        "the old node's reads"
    );
}
