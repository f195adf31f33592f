//! In-process clusters on loopback: placement, forwarding, joining and
//! leaving under load. Every acknowledged write must be readable through
//! every node and sit on its preference list when the ring settles.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{Load, TestCluster, write_keys};
use http::{Method, StatusCode};

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_of_three_serves_any_key() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let clients: Vec<_> = (0..3).map(|i| cluster.client(i)).collect();
    let acked = write_keys(&clients, "k", 60).await;
    cluster.assert_readable_everywhere(&acked).await;
    cluster.await_placed(&acked, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_of_five_serves_any_key_forwarding_to_a_replica() {
    let cluster = TestCluster::start(5, 0, 3).await;
    let clients: Vec<_> = (0..5).map(|i| cluster.client(i)).collect();
    let acked = write_keys(&clients, "k", 100).await;
    cluster.assert_readable_everywhere(&acked).await;
    cluster.await_placed(&acked, SETTLE).await;
    // With 3 replicas of 5, two nodes in five hold no copy of a key: they
    // forwarded, and the lookup went through the ring.
    let forwards = common::metric(&clients[0], "chorus_forwards_total{result=\"ok\"}").await;
    assert!(forwards > 0.0, "no request was forwarded");
    assert!(common::metric(&clients[0], "chorus_lookup_hops_count").await > 0.0);
    // A lookup through the ring finds a replica; the cache makes the next
    // one a single hop (the forward itself).
    let n1 = cluster.node(0).cluster();
    let key = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|k| !n1.routes().preference_list(k).contains(&"n1".to_string()))
        .expect("a key n1 does not replicate");
    let pos = chorus::ring::position(key.as_bytes());
    let (first, hops) = n1.find_replicas(pos).await;
    assert!(hops >= 1, "{hops}");
    assert_eq!(
        first.first(),
        n1.routes().preference_list(&key).first(),
        "not the key's primary"
    );
    let (again, hops) = n1.find_replicas(pos).await;
    assert_eq!((again, hops), (first, 1));
    // A node holds only the keys it replicates: about 3/5 of them.
    for i in 0..5 {
        let held = cluster
            .node(i)
            .store()
            .scan(0..=u64::MAX, 1000)
            .expect("scan")
            .len();
        assert!(
            (30..=90).contains(&held),
            "node {i} holds {held} of 100 keys"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_node_joins_under_write_load_and_loses_nothing() {
    let mut cluster = TestCluster::start(3, 1, 3).await;
    let clients: Vec<_> = (0..3).map(|i| cluster.client(i)).collect();
    let mut expected = write_keys(&clients, "before", 150).await;

    let load = Load::start(clients.clone(), "during");
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.join(3, 1).await;
    cluster.await_members_agree(SETTLE).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (during, failed) = load.finish().await;
    assert!(
        during.len() > 20,
        "the load wrote only {} keys",
        during.len()
    );
    assert_eq!(failed, 0, "writes failed during the join");
    expected.extend(during);

    let all: Vec<_> = (0..4).map(|i| cluster.client(i)).collect();
    expected.extend(write_keys(&all, "after", 100).await);

    // Settled: every key on its new preference list (the new node among
    // them for about 3/4 of the keys), readable through every node.
    cluster.await_placed(&expected, SETTLE).await;
    cluster.assert_readable_everywhere(&expected).await;
    let on_new = cluster
        .node(3)
        .store()
        .scan(0..=u64::MAX, 100_000)
        .expect("scan")
        .len();
    let share = on_new as f64 / expected.len() as f64;
    assert!(
        (0.5..=0.95).contains(&share),
        "the new node holds {share:.2} of the keys"
    );
    // Displaced replicas dropped what they no longer own.
    for i in 0..3 {
        let held = cluster
            .node(i)
            .store()
            .scan(0..=u64::MAX, 100_000)
            .expect("scan")
            .len();
        assert!(held < expected.len(), "node {i} still holds every key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_leaves_gracefully_under_write_load_and_loses_nothing() {
    let mut cluster = TestCluster::start(4, 0, 3).await;
    let writers: Vec<_> = (0..3).map(|i| cluster.client(i)).collect();
    let mut expected = write_keys(&writers, "before", 150).await;
    assert!(
        !cluster
            .node(3)
            .store()
            .scan(0..=u64::MAX, 1)
            .expect("scan")
            .is_empty()
    );

    let load = Load::start(writers.clone(), "during");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = cluster
        .client(3)
        .request(Method::POST, "/admin/leave", &[], Bytes::new())
        .await
        .expect("leave");
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    tokio::time::timeout(SETTLE, cluster.node(3).left())
        .await
        .expect("the node did not finish leaving");
    // It handed everything off before going.
    assert!(
        cluster
            .node(3)
            .store()
            .scan(0..=u64::MAX, 1)
            .expect("scan")
            .is_empty()
    );
    cluster.stop(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (during, failed) = load.finish().await;
    assert!(
        during.len() > 20,
        "the load wrote only {} keys",
        during.len()
    );
    assert_eq!(failed, 0, "writes failed during the leave");
    expected.extend(during);
    expected.extend(write_keys(&writers, "after", 100).await);

    cluster.await_members_agree(SETTLE).await;
    let members = cluster.node(0).cluster().roster().members();
    assert_eq!(
        members.get("n4").map(|m| m.status),
        Some(chorus::ring::Status::Removed)
    );
    cluster.await_placed(&expected, SETTLE).await;
    cluster.assert_readable_everywhere(&expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_route_and_admin_errors() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let client = cluster.client(0);
    let reply = client
        .request(Method::GET, "/cluster", &[], Bytes::new())
        .await
        .expect("cluster");
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json().expect("json");
    let members = body["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m["tokens"] == 16 && m["status"] == "active")
    );
    let owned: f64 = members.iter().filter_map(|m| m["ownership"].as_f64()).sum();
    assert!((owned - 1.0).abs() < 1e-9, "ownership sums to {owned}");
    // This node's own figures for operators: hints and anti-entropy lag.
    assert_eq!(body["hints_pending"], 0);
    assert_eq!(body["antientropy"]["mode"], "state");
    assert!(body["antientropy"]["lag"].is_u64(), "{body}");
    assert!(body["antientropy"]["rounds"].is_u64(), "{body}");
    assert_eq!(body["routing"].as_array().map(Vec::len), Some(16));
    assert_eq!(
        body["routing"][0]["successors"].as_array().map(Vec::len),
        Some(8)
    );

    let cases: [(Method, &str, StatusCode, &str); 4] = [
        (
            Method::POST,
            "/admin/remove/nobody",
            StatusCode::NOT_FOUND,
            "unknown_node",
        ),
        (
            Method::POST,
            "/admin/remove/n1",
            StatusCode::CONFLICT,
            "membership_conflict",
        ),
        (
            Method::GET,
            "/admin/leave",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/cluster",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, status, code) in cases {
        let reply = client
            .request(method, path, &[], Bytes::new())
            .await
            .expect("request");
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(common::error_code(&reply), code, "{path}");
    }
    // Garbage on the peer route is a JSON 401 without the cluster's MAC,
    // and a JSON 400 with it: never a crash.
    let garbage: &[u8] = &[0xff, 0xfe, 0x00];
    let rpc = (chorus::peer::rpc::RPC_HEADER, common::MERGE);
    let reply = client
        .request(Method::POST, "/peer", &[rpc], Bytes::from_static(garbage))
        .await
        .expect("peer");
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(common::error_code(&reply), "peer_unauthenticated");
    let auth = common::test_signer().sign("n1", common::MERGE, garbage);
    let reply = client
        .request(
            Method::POST,
            "/peer",
            &[
                (chorus::security::peer_auth::AUTH_HEADER, auth.as_str()),
                rpc,
            ],
            Bytes::from_static(garbage),
        )
        .await
        .expect("peer");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(common::error_code(&reply), "body_unreadable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_node_does_not_stop_lookups_for_keys_it_does_not_hold() {
    let mut cluster = TestCluster::start(5, 0, 3).await;
    let clients: Vec<_> = (0..5).map(|i| cluster.client(i)).collect();
    let acked = write_keys(&clients, "k", 150).await;
    let placer = std::sync::Arc::clone(cluster.node(0).cluster());
    // n5 goes away without a word to anyone: no leave, no membership change.
    cluster.stop(4).await;
    let live: Vec<_> = (0..4).map(|i| cluster.client(i)).collect();
    let (without, with): (Vec<_>, Vec<_>) = acked.keys().cloned().partition(|k| {
        !placer
            .routes()
            .preference_list(k)
            .contains(&"n5".to_string())
    });
    assert!(without.len() > 20 && with.len() > 20);
    for (i, client) in live.iter().enumerate() {
        for key in &without {
            let reply = client.get(key).await.expect("get");
            assert_eq!(reply.status, StatusCode::OK, "{key} through n{}", i + 1);
            assert_eq!(String::from_utf8_lossy(&reply.body), acked[key]);
        }
    }
    // Fresh writes of keys n5 does not hold succeed through every live node.
    let fresh: Vec<String> = (0..)
        .map(|i| format!("fresh-{i}"))
        .filter(|k| {
            !placer
                .routes()
                .preference_list(k)
                .contains(&"n5".to_string())
        })
        .take(40)
        .collect();
    for (i, key) in fresh.iter().enumerate() {
        let reply = live[i % 4].put(key, "1", None).await.expect("put");
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{key}: {:?}",
            reply.body
        );
    }
    // Keys n5 held keep two live replicas: majority reads still succeed.
    for key in &with {
        let reply = live[0].get(key).await.expect("get");
        assert_eq!(reply.status, StatusCode::OK, "{key}");
    }
}

/// Handoff is bounded by bytes, not only by keys (issue 20): with 1 MiB
/// values on a ring of one token a node, the leaving node's ranges hold
/// about 150 MiB each, and a handoff batch of `ring.handoff_batch` (256)
/// sets went over the 64 MiB peer message limit: the receiver refused it
/// (413) again and again and the leave never finished. Split by a byte
/// budget, the leave finishes and every key reads back at r=3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leave_of_200_one_mib_keys_finishes_and_every_key_reads_back() {
    let mut cluster = TestCluster::start_with(4, 0, 3, |c| {
        c.ring.tokens = 1;
        c.ring.handoff_batch = 256;
    })
    .await;
    const KEYS: usize = 200;
    let value = Bytes::from(format!("\"{}\"", "x".repeat((1 << 20) - 2)));
    let clients: Vec<_> = (0..4).map(|i| cluster.client(i)).collect();
    let mut writes: Vec<_> = (0..KEYS)
        .map(|i| {
            let (client, value) = (&clients[i % 4], value.clone());
            async move {
                let path = format!("/kv/big-{i}?w=3&timeout_ms=60000");
                let headers = [("content-type", "application/json")];
                client.request(Method::PUT, &path, &headers, value).await
            }
        })
        .collect();
    let mut written = 0;
    while !writes.is_empty() {
        let rest = writes.split_off(writes.len().min(16));
        for reply in futures_util::future::join_all(writes).await {
            assert_eq!(reply.expect("put").status, StatusCode::NO_CONTENT);
            written += 1;
        }
        writes = rest;
    }
    let held = cluster
        .node(3)
        .store()
        .scan(0..=u64::MAX, usize::MAX)
        .expect("scan")
        .len();
    assert!(held >= 100, "n4 holds only {held} of the {written} keys");

    let reply = clients[3]
        .request(Method::POST, "/admin/leave", &[], Bytes::new())
        .await
        .expect("leave");
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    tokio::time::timeout(Duration::from_secs(180), cluster.node(3).left())
        .await
        .expect("the leave of 1 MiB values did not finish within 180 s");
    cluster.stop(3).await;
    let mut read = 0;
    for i in 0..KEYS {
        let reply = clients[i % 3]
            .request(
                Method::GET,
                &format!("/kv/big-{i}?r=3&timeout_ms=60000"),
                &[],
                Bytes::new(),
            )
            .await
            .expect("get");
        assert_eq!(reply.status, StatusCode::OK, "big-{i}");
        assert_eq!(reply.body.len(), 1 << 20, "big-{i}");
        read += 1;
    }
    assert_eq!(read, KEYS);
}
