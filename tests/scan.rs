//! Scans (`GET /kv`) over real HTTP on in-process clusters: every live key
//! of a range, in order, once, through any node and with a node down;
//! pages that resume from their cursor; values, siblings and contexts as
//! a GET gives them; deleted and expired keys absent; divergent replicas
//! repaired; every bad parameter a 400 that names it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chorus::client::{Client, Reply, key_path};
use common::cluster::{PerNode, TestCluster};
use common::error_code;
use http::{Method, StatusCode};
use serde_json::Value;

async fn scan(client: &Client, query: &str) -> Reply {
    client
        .request(Method::GET, &format!("/kv?{query}"), &[], Bytes::new())
        .await
        .expect("scan")
}

/// Every page of a scan, following `next`: the items in the order
/// returned, and how many pages it took.
async fn scan_all(client: &Client, query: &str) -> (Vec<Value>, usize) {
    let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        pages += 1;
        assert!(pages < 1000, "the scan never ends");
        let q = match &cursor {
            Some(c) => format!("{query}&cursor={c}"),
            None => query.to_string(),
        };
        let reply = scan(client, &q).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json().expect("a JSON page");
        items.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert!(body["next"].is_null());
                return (items, pages);
            }
        }
    }
}

fn keys_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["key"].as_str().expect("a key").to_string())
        .collect()
}

async fn put(client: &Client, key: &str, value: &str) {
    let reply = client
        .put(key, Bytes::from(value.to_string()), None)
        .await
        .expect("put");
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "put {key}");
}

/// 150 keys under `user/`, 40 under `item/`, a few deleted; scans by
/// prefix, by start and end, and of everything, through every node, in
/// pages of several sizes: each returns exactly the live keys of its
/// range, in bytewise order, once, with the value a GET gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_returns_every_live_key_of_its_range_once_in_order_through_any_node() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    let mut live = BTreeMap::new();
    for i in 0..150 {
        let key = format!("user/{i:04}");
        put(&n1, &key, &format!("{i}")).await;
        live.insert(key, i.to_string());
    }
    for i in 0..40 {
        let key = format!("item/{i:02}");
        put(&n1, &key, &format!("\"item {i}\"")).await;
        live.insert(key, format!("\"item {i}\""));
    }
    for i in (0..150).step_by(10) {
        let key = format!("user/{i:04}");
        let context = common::read_context(&n1, &key).await;
        let reply = n1.delete(&key, Some(&context)).await.expect("delete");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        live.remove(&key);
    }
    let expect = |from: &str, to: &str| -> Vec<String> {
        live.keys()
            .filter(|k| k.as_str() >= from && k.as_str() < to)
            .cloned()
            .collect()
    };
    let mut checked = 0;
    for node in 0..3 {
        let client = cluster.client(node);
        for (query, want) in [
            ("prefix=user/&limit=17", expect("user/", "user0")),
            ("prefix=item/&limit=1000", expect("item/", "item0")),
            (
                "start=item/10&end=user/0100&limit=50",
                expect("item/10", "user/0100"),
            ),
            ("limit=64", expect("", "\u{10ffff}")),
            ("prefix=nothing/", Vec::new()),
        ] {
            let (items, pages) = scan_all(&client, query).await;
            assert_eq!(keys_of(&items), want, "node {node}: {query}");
            for item in &items {
                let key = item["key"].as_str().expect("key");
                assert_eq!(
                    serde_json::to_string(&item["value"]).expect("value"),
                    live[key],
                    "{key}"
                );
                assert!(item["context"].as_str().is_some_and(|c| !c.is_empty()));
            }
            if query.contains("limit=17") {
                assert!(pages >= 135 / 17, "{pages} pages of at most 17");
            }
            checked += items.len();
        }
    }
    assert!(checked > 3 * 300, "checked {checked} items");
    // keys_only: keys alone.
    let (items, _) = scan_all(&n1, "prefix=item/&keys_only=true").await;
    assert_eq!(keys_of(&items), expect("item/", "item0"));
    assert!(
        items
            .iter()
            .all(|i| i.get("value").is_none() && i.get("context").is_none())
    );
}

/// A scan item's context is the key's: a conditional write with it goes
/// through, and a key with siblings is returned with all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_gives_siblings_and_contexts_as_a_get_does() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    put(&n1, "s/one", "1").await;
    // Two blind writes: siblings.
    put(&n1, "s/two", "2").await;
    put(&n1, "s/two", "3").await;
    let (items, _) = scan_all(&n1, "prefix=s/").await;
    assert_eq!(keys_of(&items), ["s/one", "s/two"]);
    let siblings: Vec<String> = items[1]["siblings"]
        .as_array()
        .expect("siblings")
        .iter()
        .map(|s| s["value"].to_string())
        .collect();
    assert_eq!(siblings.len(), 2, "{}", items[1]);
    let get = n1.get("s/two").await.expect("get");
    assert_eq!(get.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(items[1]["context"].as_str(), get.context());
    // The scan's context resolves the siblings in one write.
    let context = items[1]["context"].as_str().expect("context").to_string();
    let reply = n1
        .request(
            Method::PUT,
            &key_path("s/two"),
            &[
                ("if-match", context.as_str()),
                ("x-chorus-context", context.as_str()),
            ],
            Bytes::from_static(b"4"),
        )
        .await
        .expect("put");
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let (items, _) = scan_all(&n1, "prefix=s/").await;
    assert_eq!(items[1]["value"], Value::from(4));
}

/// With one node of three down, a scan at r=2 through either other node
/// still returns every key; at r=3 it is a 503 that names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_with_a_node_down_still_returns_every_key_at_a_quorum() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    let mut want = Vec::new();
    for i in 0..120 {
        let key = format!("d/{i:03}");
        put(&n1, &key, &i.to_string()).await;
        want.push(key);
    }
    cluster.stop(2).await;
    for node in 0..2 {
        let (items, _) = scan_all(&cluster.client(node), "prefix=d/&limit=25&r=2").await;
        assert_eq!(keys_of(&items), want, "through node {node}");
    }
    let reply = scan(&n1, "prefix=d/&r=3&timeout_ms=2000").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "quorum_not_met");
}

/// A replica that lacks keys its peers hold is repaired by a scan that
/// read it (anti-entropy is off, so only the scan can).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_repairs_the_replicas_it_read() {
    // Off, not slow: a node runs its first round as it starts, which
    // could repair the third replica before the scan does.
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.antientropy.mode = chorus::config::AntiEntropyMode::Off;
    })
    .await;
    let n1 = cluster.client(0);
    put(&n1, "r/seed", "0").await;
    let template = cluster
        .node(0)
        .store()
        .get("r/seed")
        .expect("get")
        .expect("set");
    // Two replicas hold r/k0..r/k9; the third never heard of them.
    for i in 0..10 {
        let key = format!("r/k{i}");
        for node in 0..2 {
            let set = template.clone();
            cluster
                .node(node)
                .store()
                .update(&key, Box::new(move |_| Ok(set)))
                .wait()
                .await
                .expect("update");
        }
    }
    assert_eq!(cluster.node(2).store().get("r/k0").expect("get"), None);
    let (items, _) = scan_all(&n1, "prefix=r/&r=3").await;
    assert_eq!(items.len(), 11);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for i in 0..10 {
        let key = format!("r/k{i}");
        while cluster.node(2).store().get(&key).expect("get").as_ref() != Some(&template) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} was not repaired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A key written with a TTL is in scans until it expires, and absent
/// after, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_key_is_absent_from_scans() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    put(&n1, "t/stays", "1").await;
    let mut written = false;
    for _ in 0..50 {
        let reply = n1
            .request(
                Method::PUT,
                &format!("{}?ttl_ms=700", key_path("t/goes")),
                &[("content-type", "application/json")],
                Bytes::from_static(b"2"),
            )
            .await
            .expect("put");
        if reply.status == StatusCode::NO_CONTENT {
            written = true;
            break;
        }
        // Not every member heard yet which protocol the others speak.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "the TTL write was refused for 5 s");
    let (items, _) = scan_all(&n1, "prefix=t/").await;
    assert_eq!(keys_of(&items), ["t/goes", "t/stays"]);
    assert!(items[0]["expires"].as_str().is_some());
    tokio::time::sleep(Duration::from_millis(900)).await;
    for node in 0..3 {
        let (items, _) = scan_all(&cluster.client(node), "prefix=t/").await;
        assert_eq!(keys_of(&items), ["t/stays"], "node {node}");
    }
}

/// Every malformed parameter is a 400 `bad_parameter` that names it; a
/// cursor from another scan or edited by hand too; other methods are 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_scan_parameters_are_400s_that_name_them() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    for i in 0..5 {
        put(&n1, &format!("b/{i}"), "1").await;
    }
    let page = scan(&n1, "prefix=b/&limit=2").await.json().expect("json");
    let cursor = page["next"].as_str().expect("a next page").to_string();
    let long = "x".repeat(2000);
    let cases = [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("keys_only=maybe", "keys_only"),
        ("r=4", "r"),
        ("timeout_ms=0", "timeout_ms"),
        ("colour=red", "colour"),
        (&format!("prefix={long}") as &str, "prefix"),
        ("cursor=!!!", "cursor"),
        ("cursor=AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cursor"),
        (&format!("prefix=c/&cursor={cursor}") as &str, "cursor"),
        (
            &format!("prefix=b/&cursor={}x", &cursor[..cursor.len() - 1]),
            "cursor",
        ),
    ];
    for (query, name) in cases {
        let reply = scan(&n1, query).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(&reply), "bad_parameter", "{query}");
        let body = reply.json().expect("a JSON error");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(name)),
            "{query}: {body}"
        );
    }
    // The cursor of the page before, with the same scan, goes on.
    let reply = scan(&n1, &format!("prefix=b/&limit=2&cursor={cursor}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        keys_of(
            reply.json().expect("json")["items"]
                .as_array()
                .expect("items")
        ),
        ["b/2", "b/3"]
    );
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let reply = n1
            .request(method.clone(), "/kv", &[], Bytes::new())
            .await
            .expect("request");
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
}

/// A node of the protocol before scans (4) refuses its part: a scan at
/// r=2 asks the range's other replicas instead and misses nothing, and at
/// r=3 it is a 503 naming that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_the_protocol_before_scans_is_covered_by_the_other_replicas() {
    use chorus::peer::versions::SCAN_PROTOCOL;
    let pinned: PerNode = Box::new(|i, config| {
        if i == 2 {
            config.cluster.protocol = Some(SCAN_PROTOCOL - 1);
        }
    });
    let cluster = TestCluster::start_each(3, 0, 3, |_| {}, Some(pinned)).await;
    let n1 = cluster.client(0);
    let mut want = Vec::new();
    for i in 0..60 {
        let key = format!("p/{i:02}");
        put(&n1, &key, &i.to_string()).await;
        want.push(key);
    }
    for node in 0..2 {
        let (items, _) = scan_all(&cluster.client(node), "prefix=p/&limit=20&r=2").await;
        assert_eq!(keys_of(&items), want, "through node {node}");
    }
    let reply = scan(&n1, "prefix=p/&r=3").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(body.contains("n3"), "{body}");
}

/// A replica's part of a scan asked by a peer with a bound longer than any
/// key, or for no keys, is refused with an error, never a panic: the node
/// goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_scan_with_bad_bounds_is_refused_and_the_node_goes_on() {
    use chorus::replica::rpc::Scan;
    use chorus::store::KeyRange;
    let cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    put(&n1, "x/1", "1").await;
    let long = KeyRange {
        start: vec![b'a'; 70_000],
        end: None,
    };
    let whole = vec![0..=u64::MAX];
    for (keys, limit) in [
        (long, 10),
        (KeyRange::default(), 0),
        (KeyRange::default(), 5000),
    ] {
        let request = Scan {
            keys,
            positions: whole.clone(),
            limit,
        };
        let refused = common::peer_rpc(&n1, request).await.expect_err("refused");
        assert_eq!(refused.status, 400, "{refused:?}");
    }
    let (items, _) = scan_all(&n1, "prefix=x/").await;
    assert_eq!(keys_of(&items), ["x/1"]);
}

/// A page's answer stays within `limits.max_batch_bytes`, cursor and all:
/// pages are cut before the item that would pass it, hold at least one
/// item, and together still return every key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_stays_within_the_answer_byte_limit() {
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.limits.max_value_bytes = 1024;
        c.limits.max_batch_bytes = 4096;
    })
    .await;
    let n1 = cluster.client(0);
    let value = format!("\"{}\"", "v".repeat(900));
    let mut want = Vec::new();
    for i in 0..20 {
        let key = format!("big/{i:02}");
        put(&n1, &key, &value).await;
        want.push(key);
    }
    let (mut found, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        pages += 1;
        assert!(pages < 100, "no end");
        let query = match &cursor {
            Some(c) => format!("prefix=big/&limit=100&cursor={c}"),
            None => "prefix=big/&limit=100".to_string(),
        };
        let reply = scan(&n1, &query).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.len() <= 4096,
            "a page of {} bytes",
            reply.body.len()
        );
        let page = reply.json().expect("json");
        let items = page["items"].as_array().expect("items").clone();
        assert!(!items.is_empty(), "an empty page: {page}");
        found.extend(keys_of(&items));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(found, want);
    assert!(
        pages >= 5,
        "20 values of 900 bytes in pages of 4 KiB: {pages} pages"
    );
}
