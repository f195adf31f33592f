//! Values with a TTL over real HTTP on in-process three-node clusters:
//! the expiry instant is stamped once and answered in `X-Chorus-Expires`;
//! an expired value is gone from every node and every route, a replica
//! that slept through the expiry does not bring it back, a later write
//! supersedes it as usual; bad TTLs are 400s; a cluster with a node of an
//! older protocol refuses TTL writes and takes the rest.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus::client::{Client, Reply, key_path};
use common::cluster::{PerNode, TestCluster};
use common::{error_code, get_with, replica_view};
use http::{Method, StatusCode};
use serde_json::{Value, json};

async fn put_ttl(client: &Client, key: &str, query: &str, value: &'static str) -> Reply {
    client
        .request(
            Method::PUT,
            &format!("{}?{query}", key_path(key)),
            &[("content-type", "application/json")],
            Bytes::from_static(value.as_bytes()),
        )
        .await
        .expect("put")
}

/// A TTL write, retried while the node has not yet heard every member
/// say which protocol it speaks (the first heartbeats after start).
async fn put_ttl_ready(client: &Client, key: &str, ttl_ms: u64, value: &'static str) -> Reply {
    let query = format!("ttl_ms={ttl_ms}");
    for _ in 0..50 {
        let reply = put_ttl(client, key, &query, value).await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a TTL write was refused for 5 s");
}

/// `X-Chorus-Expires` as ms since the epoch, checked to be RFC 3339 UTC
/// to the millisecond (`2026-12-06T05:30:00.123Z`).
fn expires_ms(reply: &Reply) -> u64 {
    let text = reply
        .headers
        .get("x-chorus-expires")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Chorus-Expires header");
    parse_rfc3339(text)
}

fn parse_rfc3339(text: &str) -> u64 {
    let b = text.as_bytes();
    assert!(
        text.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{text}"
    );
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().expect("digits");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

async fn status_everywhere(cluster: &TestCluster, key: &str, query: &str) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for i in cluster.running() {
        out.push(get_with(&cluster.client(i), key, query).await.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_with_a_ttl_reads_until_its_instant_and_then_is_gone_everywhere() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    let before = now_ms();
    let put = put_ttl_ready(&a, "session", 1_500, r#"{"user":"ann"}"#).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let instant = expires_ms(&put);
    assert!(
        (before + 1_500..=now_ms() + 1_500).contains(&instant),
        "{instant}"
    );
    // Every node reads it, with the same instant.
    let read = b.get("session").await.expect("get");
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), Some(json!({"user": "ann"})));
    assert_eq!(expires_ms(&read), instant);
    // A value without a TTL beside it stays.
    assert_eq!(
        a.put("kept", "1", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );

    tokio::time::sleep(Duration::from_millis(instant + 50 - now_ms().min(instant))).await;
    for query in ["r=1", "r=all"] {
        let statuses = status_everywhere(&cluster, "session", query).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::NOT_FOUND),
            "{query}: {statuses:?}"
        );
    }
    assert_eq!(b.get("kept").await.expect("get").status, StatusCode::OK);
    // A batch does not see it either, and If-None-Match may create the
    // key again: the new value supersedes the expired one.
    let batch = b
        .request(
            Method::POST,
            "/batch",
            &[("content-type", "application/json")],
            Bytes::from(json!({"ops": [{"op": "get", "key": "session"}]}).to_string()),
        )
        .await
        .expect("batch");
    assert_eq!(batch.json().expect("json")["results"][0]["status"], 404);
    let create = b
        .request(
            Method::PUT,
            &key_path("session"),
            &[("content-type", "application/json"), ("if-none-match", "*")],
            Bytes::from_static(b"2"),
        )
        .await
        .expect("put");
    assert_eq!(create.status, StatusCode::NO_CONTENT);
    assert!(create.headers.get("x-chorus-expires").is_none());
    let read = a.get("session").await.expect("get");
    assert_eq!((read.status, read.json()), (StatusCode::OK, Some(json!(2))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_slept_through_the_expiry_does_not_bring_the_value_back() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    let put = put_ttl_ready(&a, "token", 1_000, "\"secret\"").await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let instant = expires_ms(&put);
    // n3 holds it before it stops.
    for _ in 0..50 {
        let held = replica_view(&cluster.client(2), "token").await;
        if held.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop(2).await;
    tokio::time::sleep(Duration::from_millis(instant + 100 - now_ms().min(instant))).await;
    // Touch the key on the two that stayed: a write after the expiry.
    let later = a.put("token", "\"new\"", None).await.expect("put");
    assert_eq!(later.status, StatusCode::NO_CONTENT);
    cluster.restart(2).await;
    // n3 still holds the expired value and not the newer write. No read
    // through any node, at any r, shows the expired value: at r=1 n3
    // answers from its own copy, where it has expired (404), and at
    // r=all every node reads the newer write.
    let c = cluster.client(2);
    let held = replica_view(&c, "token").await;
    assert!(String::from_utf8_lossy(&held.body).contains("secret"));
    for query in ["r=1", "r=all"] {
        for i in cluster.running() {
            let reply = get_with(&cluster.client(i), "token", query).await;
            let seen = (reply.status, reply.json());
            assert!(
                seen == (StatusCode::OK, Some(json!("new")))
                    || (query == "r=1" && seen.0 == StatusCode::NOT_FOUND),
                "n{} {query}: {seen:?}",
                i + 1
            );
        }
    }
    // Once n3 merges what the others hold (the r=all read repaired it),
    // its own copy drops the expired sibling too.
    let mut view = Value::Null;
    for _ in 0..50 {
        view = replica_view(&c, "token").await.json().unwrap_or_default();
        let values: Vec<&Value> = view["siblings"]
            .as_array()
            .map(|s| s.iter().map(|s| &s["value"]).collect())
            .unwrap_or_default();
        if values == [&json!("new")] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("n3 still holds: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_ttls_are_400s_that_name_ttl_ms() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    for ttl in [
        "0",
        "-1",
        "soon",
        "1.5",
        "630720000001",
        "99999999999999999999",
    ] {
        let reply = put_ttl(&a, "k", &format!("ttl_ms={ttl}"), "1").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{ttl}");
        assert_eq!(error_code(&reply), "bad_parameter");
        assert!(
            String::from_utf8_lossy(&reply.body).contains("ttl_ms"),
            "{ttl}"
        );
    }
    let delete = a
        .request(Method::DELETE, "/kv/k?ttl_ms=5", &[], Bytes::new())
        .await
        .expect("delete");
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.get("k").await.expect("get").status, StatusCode::NOT_FOUND);
    // The longest TTL is taken.
    let longest = put_ttl_ready(&a, "k", 630_720_000_000, "1").await;
    assert_eq!(longest.status, StatusCode::NO_CONTENT);
    assert!(expires_ms(&longest) > now_ms() + 600_000_000_000);
    // In a batch, a bad TTL fails its op alone.
    let batch = a
        .request(
            Method::POST,
            "/batch",
            &[("content-type", "application/json")],
            Bytes::from(
                json!({"ops": [
                    {"op": "put", "key": "b1", "value": 1, "ttl_ms": 0},
                    {"op": "put", "key": "b2", "value": 1, "ttl_ms": -5},
                    {"op": "delete", "key": "b3", "ttl_ms": 5},
                    {"op": "put", "key": "b4", "value": 1, "ttl_ms": 60000},
                ]})
                .to_string(),
            ),
        )
        .await
        .expect("batch");
    let results = batch.json().expect("json")["results"].clone();
    let statuses: Vec<&Value> = results
        .as_array()
        .expect("results")
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [400, 400, 400, 204], "{results}");
    let expires = results[3]["expires"].as_str().expect("expires");
    assert!(parse_rfc3339(expires) > now_ms() + 50_000, "{expires}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_an_older_protocol_holds_ttl_writes_back_and_nothing_else() {
    let pinned: PerNode = Box::new(|i, config| {
        if i == 2 {
            config.cluster.protocol = Some(3);
        }
    });
    let cluster = TestCluster::start_each(3, 0, 3, |_| {}, Some(pinned)).await;
    cluster.await_members_agree(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for i in 0..3 {
        let client = cluster.client(i);
        let refused = put_ttl(&client, "k", "ttl_ms=60000", "1").await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "n{}",
            i + 1
        );
        let body = String::from_utf8_lossy(&refused.body).into_owned();
        assert!(body.contains("protocol 4"), "{body}");
        assert!(body.contains("n3"), "names the node: {body}");
        let plain = client.put("k", "1", None).await.expect("put");
        assert_eq!(plain.status, StatusCode::NO_CONTENT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_values_nobody_touches_leave_every_replicas_disk() {
    const KEYS: usize = 40;
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.antientropy.interval_ms = 100;
        c.antientropy.purge_interval_ms = 200;
    })
    .await;
    let a = cluster.client(0);
    let mut last = 0;
    for i in 0..KEYS {
        let reply = put_ttl_ready(&a, &format!("t{i}"), 700, "\"soon gone\"").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        last = last.max(expires_ms(&reply));
    }
    assert_eq!(
        a.put("stays", "1", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_millis(last + 50 - now_ms().min(last))).await;
    // No client reads or writes them again: the purge scan of each key's
    // primary drops them, and anti-entropy carries the drop to the rest.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut holding = Vec::new();
        let mut checked = 0;
        for node in 0..3 {
            for i in 0..KEYS {
                let view = replica_view(&cluster.client(node), &format!("t{i}")).await;
                checked += 1;
                if String::from_utf8_lossy(&view.body).contains("soon gone") {
                    holding.push(format!("n{} t{i}", node + 1));
                }
            }
        }
        assert_eq!(checked, 3 * KEYS);
        if holding.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still stored after 30 s: {holding:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.get("stays").await.expect("get").status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_that_hides_an_expired_value_drops_it_from_the_replicas_it_asked() {
    // No purge scan and no anti-entropy: only the read can drop it.
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.antientropy.mode = chorus::config::AntiEntropyMode::Off;
    })
    .await;
    let a = cluster.client(0);
    let put = put_ttl_ready(&a, "once", 500, "\"short\"").await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let instant = expires_ms(&put);
    let holding = || async {
        let mut nodes = Vec::new();
        for node in 0..3 {
            let view = replica_view(&cluster.client(node), "once").await;
            if String::from_utf8_lossy(&view.body).contains("short") {
                nodes.push(node + 1);
            }
        }
        nodes
    };
    for _ in 0..50 {
        if holding().await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(holding().await, [1, 2, 3], "every replica holds it first");
    tokio::time::sleep(Duration::from_millis(instant + 50 - now_ms().min(instant))).await;
    assert_eq!(holding().await, [1, 2, 3], "nothing dropped it yet");
    let read = get_with(&a, "once", "r=all").await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    for _ in 0..50 {
        if holding().await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still held by {:?}", holding().await);
}
