//! A rolling upgrade half done, over real HTTP on loopback: three nodes
//! speak this build's peer protocol and one is pinned to the previous one
//! (`cluster.protocol = 1`, which makes it advertise, send and accept only
//! what a node of the older build would). Writes and reads at w = r = 3
//! through every node, anti-entropy repairing the old node, and a leave
//! whose handoff lands on it all work, and nothing acknowledged is lost.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::client::{Client, key_path};
use chorus::peer::versions::{OLDEST_PROTOCOL, PROTOCOL};
use common::cluster::{PerNode, TestCluster};
use http::{Method, StatusCode};

const SETTLE: Duration = Duration::from_secs(60);
/// The node of the older protocol (n4).
const OLD: usize = 3;
// A build with no older protocol has nothing to test here.
const _: () = assert!(OLDEST_PROTOCOL < PROTOCOL);

/// Writes `count` keys at `w`, spread over `clients`; every write must be
/// acknowledged.
async fn write_all(
    clients: &[Client],
    prefix: &str,
    count: usize,
    w: usize,
) -> HashMap<String, String> {
    let mut written = HashMap::new();
    for i in 0..count {
        let (key, value) = (format!("{prefix}-{i}"), format!("\"{prefix} {i}\""));
        let reply = clients[i % clients.len()]
            .request(
                Method::PUT,
                &format!("{}?w={w}", key_path(&key)),
                &[("content-type", "application/json")],
                Bytes::from(value.clone()),
            )
            .await
            .expect("put");
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{key}: {:?}",
            reply.body
        );
        written.insert(key, value);
    }
    written
}

/// Reads every key at r=3 through every client: exactly its value.
async fn read_all(clients: &[Client], expected: &HashMap<String, String>) -> usize {
    let mut checked = 0;
    for (i, client) in clients.iter().enumerate() {
        for (key, value) in expected {
            let reply = client
                .request(
                    Method::GET,
                    &format!("{}?r=3", key_path(key)),
                    &[],
                    Bytes::new(),
                )
                .await
                .expect("get");
            assert_eq!(
                (
                    reply.status,
                    String::from_utf8_lossy(&reply.body).into_owned()
                ),
                (StatusCode::OK, value.clone()),
                "{key} at r=3 through client {i}"
            );
            checked += 1;
        }
    }
    checked
}

/// What node `from` says each member speaks, by `GET /cluster`.
async fn protocols(client: &Client) -> HashMap<String, Option<u64>> {
    let reply = client
        .request(Method::GET, "/cluster", &[], Bytes::new())
        .await
        .expect("cluster");
    let body = reply.json().expect("JSON");
    body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let id = m["id"].as_str().expect("id").to_string();
            (id, m["protocol"].as_u64())
        })
        .collect()
}

async fn repaired(clients: &[Client]) -> f64 {
    let mut total = 0.0;
    for client in clients {
        total += common::metric(client, "chorus_antientropy_keys_repaired_total").await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_the_previous_protocol_keeps_reads_writes_repair_and_handoff_working() {
    let pinned: PerNode = Box::new(|i, config| {
        if i == OLD {
            config.cluster.protocol = Some(OLDEST_PROTOCOL);
        }
    });
    let mut cluster = TestCluster::start_each(
        4,
        0,
        3,
        |config| {
            // Only anti-entropy may bring the old node what it missed.
            config.limits.max_hints = 0;
            config.antientropy.interval_ms = 100;
        },
        Some(pinned),
    )
    .await;
    cluster.await_members_agree(SETTLE).await;

    // The heartbeats teach every node what each peer speaks.
    let deadline = Instant::now() + SETTLE;
    loop {
        let seen = protocols(&cluster.client(0)).await;
        let want = |id: &str, p: u16| seen.get(id) == Some(&Some(u64::from(p)));
        if want("n1", PROTOCOL) && want("n2", PROTOCOL) && want("n4", OLDEST_PROTOCOL) {
            break;
        }
        assert!(Instant::now() < deadline, "protocols not learned: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let transport = cluster.node(0).cluster().transport();
    assert_eq!(transport.protocol_with("n2"), PROTOCOL);
    assert_eq!(transport.protocol_with("n4"), OLDEST_PROTOCOL);
    let from_old = cluster.node(OLD).cluster().transport();
    assert_eq!(from_old.protocol_with("n1"), OLDEST_PROTOCOL);

    // Writes and reads at w = r = 3, every replica involved, through every
    // node, the old one too.
    let clients: Vec<Client> = (0..4).map(|i| cluster.client(i)).collect();
    let mut expected = write_all(&clients, "mixed", 120, 3).await;
    let mut checked = read_all(&clients, &expected).await;

    // Anti-entropy: the old node misses writes while it is down, and the
    // exchanges bring them to it after it restarts on the old protocol.
    cluster.stop(OLD).await;
    let up: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let missed = write_all(&up, "missed", 60, 2).await;
    let before = repaired(&up).await;
    cluster.restart(OLD).await;
    cluster.await_placed(&missed, SETTLE).await;
    let clients: Vec<Client> = (0..4).map(|i| cluster.client(i)).collect();
    assert!(
        repaired(&clients).await > before,
        "nothing was repaired by anti-entropy"
    );
    expected.extend(missed);
    checked += read_all(&clients, &expected).await;

    // A leave: n3 hands everything off, part of it to the old node.
    let reply = cluster
        .client(2)
        .request(Method::POST, "/admin/leave", &[], Bytes::new())
        .await
        .expect("leave");
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    tokio::time::timeout(SETTLE, cluster.node(2).left())
        .await
        .expect("the leave did not finish");
    cluster.stop(2).await;
    cluster.await_members_agree(SETTLE).await;
    cluster.await_placed(&expected, SETTLE).await;
    let clients: Vec<Client> = [0, 1, OLD].iter().map(|&i| cluster.client(i)).collect();
    checked += read_all(&clients, &expected).await;

    // Nobody sent the old node a version it does not speak.
    let refused = common::metric(
        &cluster.client(OLD),
        "chorus_requests_total{op=\"peer\",status=\"501\"",
    )
    .await;
    assert_eq!(refused, 0.0, "the old node refused newer versions");
    // The new nodes' reads and writes to each other travel on streams; the
    // old node was never asked for one (it would have answered 501 above).
    // In-process nodes share one metrics registry: this is all nodes' sum.
    let accepted = common::metric(
        &cluster.client(0),
        "chorus_peer_streams_opened_total{side=\"accepter\"}",
    )
    .await;
    assert!(accepted >= 1.0, "no stream was opened between new nodes");
    assert!(
        expected.len() >= 180 && checked >= 1_200,
        "checked too little: {} keys, {checked} reads",
        expected.len()
    );
}
