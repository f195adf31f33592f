//! Liveness gossip: every node learns of a failure and of a return, through
//! heartbeats gossiped among the others and the phi-accrual detector.

mod common;

use std::time::{Duration, Instant};

use chorus::client::Client;
use common::cluster::TestCluster;
use http::Method;

/// Node `of`'s liveness as `client`'s node reports it in `/cluster`.
async fn seen(client: &Client, of: &str) -> (String, Option<f64>) {
    let reply = client
        .request(Method::GET, "/cluster", &[], bytes::Bytes::new())
        .await
        .expect("cluster");
    let body = reply.json().expect("json");
    let members = body["members"].as_array().expect("members");
    let member = members
        .iter()
        .find(|m| m["id"] == of)
        .expect("the member is listed");
    let liveness = member["liveness"].as_str().expect("liveness").to_string();
    (liveness, member["phi"].as_f64())
}

async fn await_seen(cluster: &TestCluster, observers: &[usize], of: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for &i in observers {
            views.push(seen(&cluster.client(i), of).await);
        }
        if views.iter().all(|(l, _)| l == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{of} is not seen {want} by every node: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_and_a_return_are_known_cluster_wide() {
    let mut cluster = TestCluster::start(5, 0, 3).await;
    let all: Vec<usize> = (0..5).collect();
    for of in ["n1", "n2", "n3", "n4", "n5"] {
        await_seen(&cluster, &all, of, "up").await;
    }
    // Up by the detector, not only by a call: n1 comes to hold a phi for
    // n5 (a call can mark n5 up before its first heartbeat reaches n1).
    let deadline = Instant::now() + Duration::from_secs(10);
    let phi = loop {
        let (_, phi) = seen(&cluster.client(0), "n5").await;
        if phi.is_some() || Instant::now() > deadline {
            break phi;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(phi.is_some_and(|p| p < 8.0), "phi of n5 at n1: {phi:?}");

    cluster.stop(4).await;
    let live: Vec<usize> = (0..4).collect();
    await_seen(&cluster, &live, "n5", "down").await;
    // The others stay up meanwhile.
    for of in ["n1", "n2", "n3", "n4"] {
        await_seen(&cluster, &live, of, "up").await;
    }

    cluster.restart(4).await;
    await_seen(&cluster, &all, "n5", "up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hints_for_a_node_held_down_go_to_fallbacks_and_return_when_it_does() {
    // No periodic sweep and no anti-entropy: only a return can deliver hints.
    let mut cluster = TestCluster::start_with(5, 0, 3, |c| {
        c.ring.handoff_interval_ms = 3_600_000;
        c.antientropy.mode = chorus::config::AntiEntropyMode::Off;
    })
    .await;
    let all: Vec<usize> = (0..5).collect();
    await_seen(&cluster, &all, "n5", "up").await;
    cluster.stop(4).await;
    let live: Vec<usize> = (0..4).collect();
    await_seen(&cluster, &live, "n5", "down").await;

    let placer = std::sync::Arc::clone(cluster.node(0).cluster());
    let keys: Vec<String> = (0..400)
        .map(|i| format!("hinted-{i}"))
        .filter(|k| {
            placer
                .routes()
                .preference_list(k)
                .contains(&"n5".to_string())
        })
        .take(60)
        .collect();
    assert!(
        keys.len() >= 30,
        "{} keys with n5 among their replicas",
        keys.len()
    );
    let client = cluster.client(0);
    let queued_before = common::metric(&client, "chorus_hints_total{event=\"queued\"}").await;
    for key in &keys {
        // w=3: two live primaries and a fallback's hint for n5.
        let path = format!("{}?w=3", chorus::client::key_path(key));
        let headers = [("content-type", "application/json")];
        let reply = client
            .request(
                Method::PUT,
                &path,
                &headers,
                bytes::Bytes::from_static(b"1"),
            )
            .await
            .expect("put");
        assert_eq!(
            reply.status,
            http::StatusCode::NO_CONTENT,
            "{key}: {:?}",
            reply.body
        );
    }
    let queued = common::metric(&client, "chorus_hints_total{event=\"queued\"}").await;
    assert!(
        queued - queued_before >= keys.len() as f64,
        "hints queued: {queued_before} -> {queued}"
    );

    cluster.restart(4).await;
    await_seen(&cluster, &all, "n5", "up").await;
    // The return, not a timer, sends the hints home.
    let n5 = cluster.client(4);
    let deadline = Instant::now() + Duration::from_secs(60);
    for key in &keys {
        loop {
            let reply = common::replica_view(&n5, key).await;
            if reply.status == http::StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "{key} never reached n5");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
