//! CRDT keys (`/crdt/{key}`) over real HTTP on in-process clusters:
//! counters count every acknowledged increment through any node, sets keep
//! adds a remove did not see, a map's fields do both and keep their types, a key never shows siblings, types are fixed
//! by the first write, retries with an `Idempotency-Key` count once, and
//! a node of an older protocol holds CRDT updates back.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chorus::client::{Client, Reply, crdt_path};
use common::cluster::{PerNode, TestCluster};
use common::{error_code, replica_view};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// `POST /crdt/{key}`, retried while the cluster has not yet heard every
/// member speak the protocol that carries CRDTs (a fresh cluster's first
/// second).
async fn update(client: &Client, key: &str, body: Value, context: Option<&str>) -> Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client
            .crdt_update(key, &body, context)
            .await
            .expect("update");
        let heard_of_all = !(reply.status == StatusCode::SERVICE_UNAVAILABLE
            && String::from_utf8_lossy(&reply.body).contains("not been heard from"));
        if heard_of_all || std::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn incr(client: &Client, key: &str, n: i64) {
    let reply = update(
        client,
        key,
        json!({"type": "counter", "increment": n}),
        None,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply.context().is_some(), "a write answers with a context");
}

/// `GET /crdt/{key}?{query}` that must answer 200: the JSON and the context.
async fn read(client: &Client, key: &str, query: &str) -> (Value, String) {
    let path = format!("{}?{query}", crdt_path(key));
    let reply = client
        .request(Method::GET, &path, &[], Bytes::new())
        .await
        .expect("read");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let context = reply.context().expect("a context").to_string();
    (reply.json().expect("json"), context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_through_every_node_all_count() {
    // Four nodes and N = 2: some increments are forwarded to a replica.
    let cluster = TestCluster::start(4, 0, 2).await;
    cluster.await_members_agree(Duration::from_secs(10)).await;
    incr(&cluster.client(0), "hits", 1).await;
    const PER_NODE: i64 = 25;
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let client = cluster.client(i);
            tokio::spawn(async move {
                for j in 0..PER_NODE {
                    // Up and down: +2 then -1, +2, ...
                    let n = if j % 2 == 0 { 2 } else { -1 };
                    incr(&client, "hits", n).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let per_node: i64 = (0..PER_NODE).map(|j| if j % 2 == 0 { 2 } else { -1 }).sum();
    let want = 1 + 4 * per_node;
    for i in 0..4 {
        let (value, _) = read(&cluster.client(i), "hits", "r=all").await;
        assert_eq!(value, json!({"type": "counter", "value": want}), "node {i}");
    }
    // Concurrent updates through different coordinators leave siblings on
    // the replicas; a read folds them, and a client never sees one.
    let plain = cluster.client(1).get("hits").await.expect("get");
    assert_eq!(plain.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&plain), "type_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_counter_goes_past_i64_and_below_zero() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    incr(&a, "big", i64::MAX).await;
    incr(&b, "big", i64::MAX).await;
    incr(&a, "big", 3).await;
    // JSON numbers of any size, written as digits (a client must read
    // them as such: serde_json here would make them floats).
    let body = |reply: Reply| String::from_utf8(reply.body.to_vec()).expect("UTF-8");
    let big = a.crdt("big").await.expect("get");
    assert_eq!(
        body(big),
        r#"{"type":"counter","value":18446744073709551617}"#
    );
    incr(&b, "low", -7).await;
    incr(&a, "low", i64::MIN).await;
    let low = b.crdt("low").await.expect("get");
    assert_eq!(
        body(low),
        r#"{"type":"counter","value":-9223372036854775815}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_count_past_u64_is_a_409_and_the_counter_stays_exact() {
    // One node: every increment is its own actor's.
    let cluster = TestCluster::start(1, 0, 1).await;
    let a = cluster.client(0);
    incr(&a, "full", i64::MAX).await;
    incr(&a, "full", i64::MAX).await;
    let over = update(&a, "full", json!({"type": "counter", "increment": 2}), None).await;
    assert_eq!(over.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&over), "counter_overflow");
    let body = String::from_utf8_lossy(&over.body).into_owned();
    assert!(body.contains("2^64 - 1"), "{body}");
    let field = json!({"type": "map", "update": {"n": {"type": "counter", "increment": i64::MAX}}});
    for _ in 0..2 {
        let ok = update(&a, "m", field.clone(), None).await;
        assert_eq!(ok.status, StatusCode::NO_CONTENT);
    }
    let over = update(&a, "m", field, None).await;
    assert_eq!(error_code(&over), "counter_overflow");
    let read = a.crdt("full").await.expect("get");
    assert_eq!(
        String::from_utf8_lossy(&read.body),
        r#"{"type":"counter","value":18446744073709551614}"#
    );
    let read = a.crdt("m").await.expect("get");
    assert_eq!(
        String::from_utf8_lossy(&read.body),
        r#"{"type":"map","value":{"n":{"type":"counter","value":18446744073709551614}}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remove_takes_only_the_adds_its_read_saw() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    let added = update(&a, "tags", json!({"type": "set", "add": ["x", "y"]}), None).await;
    assert_eq!(added.status, StatusCode::NO_CONTENT);
    let (value, seen) = read(&b, "tags", "r=all").await;
    assert_eq!(value, json!({"type": "set", "value": ["x", "y"]}));

    // After that read, another client adds `x` again (a new add) and `z`.
    let again = update(&a, "tags", json!({"type": "set", "add": ["x", "z"]}), None).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    // A remove with the earlier read's context removes the `x` and `y` it
    // saw, not the add it did not: the set is add-wins.
    let removed = update(
        &b,
        "tags",
        json!({"type": "set", "remove": ["x", "y", "z"]}),
        Some(&seen),
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let (value, fresh) = read(&cluster.client(2), "tags", "r=all").await;
    assert_eq!(value, json!({"type": "set", "value": ["x", "z"]}));

    // Without a context a remove removes nothing; with a fresh one, all.
    let blind = update(&a, "tags", json!({"type": "set", "remove": ["x"]}), None).await;
    assert_eq!(blind.status, StatusCode::NO_CONTENT);
    let (value, _) = read(&a, "tags", "r=all").await;
    assert_eq!(value["value"], json!(["x", "z"]));
    let all = update(
        &a,
        "tags",
        json!({"type": "set", "remove": ["x", "z"]}),
        Some(&fresh),
    )
    .await;
    assert_eq!(all.status, StatusCode::NO_CONTENT);
    let (value, _) = read(&b, "tags", "r=all").await;
    assert_eq!(value, json!({"type": "set", "value": []}));

    // `returnbody` answers with the state the update made, and its
    // context removes what it shows.
    let path = format!("{}?returnbody=true", crdt_path("tags"));
    let body = Bytes::from(json!({"type": "set", "add": ["w"]}).to_string());
    let reply = a
        .request(
            Method::POST,
            &path,
            &[("content-type", "application/json")],
            body,
        )
        .await
        .expect("post");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), Some(json!({"type": "set", "value": ["w"]})));
    let context = reply.context().expect("context").to_string();
    let gone = update(
        &b,
        "tags",
        json!({"type": "set", "remove": ["w"]}),
        Some(&context),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let (value, _) = read(&a, "tags", "r=all").await;
    assert_eq!(value["value"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_maps_fields_merge_by_their_own_laws() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let clients: Vec<_> = (0..3).map(|i| cluster.client(i)).collect();
    // Every node increments `visits` and adds itself to `seen_by`, in one
    // update each, concurrently.
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let client = client.clone();
            tokio::spawn(async move {
                for j in 0..10 {
                    let body = json!({"type": "map", "update": {
                        "visits": {"type": "counter", "increment": 2},
                        "seen_by": {"type": "set", "add": [format!("n{i}-{j}")]},
                    }});
                    let reply = update(&client, "page", body, None).await;
                    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.json());
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let seen_by: Vec<String> = (0..3)
        .flat_map(|i| (0..10).map(move |j| format!("n{i}-{j}")))
        .collect();
    let mut seen_by_sorted = seen_by.clone();
    seen_by_sorted.sort();
    for client in &clients {
        let (value, _) = read(client, "page", "r=all").await;
        assert_eq!(
            value,
            json!({"type": "map", "value": {
                "seen_by": {"type": "set", "value": seen_by_sorted},
                "visits": {"type": "counter", "value": 60},
            }})
        );
    }

    // A remove in a set field takes what the read saw, not an add made
    // after it.
    let (_, context) = read(&clients[1], "page", "r=all").await;
    let late = update(
        &clients[0],
        "page",
        json!({"type": "map", "update": {"seen_by": {"type": "set", "add": ["n0-0"]}}}),
        None,
    )
    .await;
    assert_eq!(late.status, StatusCode::NO_CONTENT);
    let removed = update(
        &clients[2],
        "page",
        json!({"type": "map", "update": {"seen_by": {"type": "set", "remove": seen_by}}}),
        Some(&context),
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let (value, _) = read(&clients[1], "page", "r=all").await;
    assert_eq!(value["value"]["seen_by"]["value"], json!(["n0-0"]));
    assert_eq!(value["value"]["visits"]["value"], json!(60));

    // A field's type is fixed by its first update: a 409 naming the field,
    // and nothing of the refused update applied.
    let wrong = update(
        &clients[0],
        "page",
        json!({"type": "map", "update": {
            "visits": {"type": "set", "add": ["a"]},
            "other": {"type": "counter", "increment": 1},
        }}),
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&wrong), "type_mismatch");
    let message = wrong.json().expect("json")["message"].to_string();
    assert!(
        message.contains("field `visits` holds a counter, not a set"),
        "{message}"
    );
    let (value, _) = read(&clients[0], "page", "r=all").await;
    assert!(value["value"].get("other").is_none(), "{value}");
    // The key is a map: a counter's update is a 409 too.
    let counter = update(
        &clients[0],
        "page",
        json!({"type": "counter", "increment": 1}),
        None,
    )
    .await;
    assert_eq!(counter.status, StatusCode::CONFLICT);
    // Nested maps are refused, naming where.
    let nested = update(
        &clients[0],
        "page",
        json!({"type": "map", "update": {"inner": {"type": "map", "update": {}}}}),
        None,
    )
    .await;
    assert_eq!(nested.status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&nested.body).contains("update.inner.type"),
        "{:?}",
        nested.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keys_type_is_fixed_by_its_first_write() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    assert_eq!(
        a.put("plain", "1", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    incr(&a, "count", 1).await;

    let mut refusals: Vec<(&str, Reply)> = vec![
        (
            "update of a plain key",
            update(
                &a,
                "plain",
                json!({"type": "counter", "increment": 1}),
                None,
            )
            .await,
        ),
        ("read of a plain key", a.crdt("plain").await.expect("get")),
        (
            "a set update of a counter",
            update(&a, "count", json!({"type": "set", "add": ["a"]}), None).await,
        ),
        ("GET /kv of a counter", a.get("count").await.expect("get")),
        (
            "PUT /kv of a counter",
            a.put("count", "2", None).await.expect("put"),
        ),
        (
            "DELETE /kv of a counter",
            a.delete("count", None).await.expect("delete"),
        ),
    ];
    let batch =
        json!({"ops": [{"op": "get", "key": "count"}, {"op": "put", "key": "count", "value": 1}]});
    let reply = a
        .request(
            Method::POST,
            "/batch",
            &[("content-type", "application/json")],
            Bytes::from(batch.to_string()),
        )
        .await
        .expect("batch");
    let results = reply.json().expect("json")["results"].clone();
    for r in results.as_array().expect("results") {
        assert_eq!(r["status"], 409, "{r}");
        assert_eq!(r["error"], "type_mismatch", "{r}");
    }
    for (what, reply) in refusals.drain(..) {
        assert_eq!(reply.status, StatusCode::CONFLICT, "{what}");
        assert_eq!(error_code(&reply), "type_mismatch", "{what}");
        let message = reply.json().expect("json")["message"].to_string();
        assert!(message.contains("first write"), "{what}: {message}");
    }
    // Nothing changed.
    assert_eq!(a.get("plain").await.expect("get").json(), Some(json!(1)));
    let (value, _) = read(&a, "count", "").await;
    assert_eq!(value["value"], 1);
    // A scan shows a CRDT key's state beside the plain ones.
    let scan = a
        .request(Method::GET, "/kv?limit=10", &[], Bytes::new())
        .await
        .expect("scan");
    let items = scan.json().expect("json")["items"].clone();
    let count = items
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["key"] == "count")
        .expect("the counter is scanned")
        .clone();
    assert_eq!(count["crdt"], json!({"type": "counter", "value": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_increment_retried_with_its_idempotency_key_counts_once() {
    let cluster = TestCluster::start(3, 0, 3).await;
    // The first update waits for the protocol; the retries below do not.
    incr(&cluster.client(0), "paid", 1).await;
    let body = Bytes::from(json!({"type": "counter", "increment": 5}).to_string());
    for i in [0, 1, 2, 0] {
        let reply = cluster
            .client(i)
            .request(
                Method::POST,
                &crdt_path("paid"),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "order-17"),
                ],
                body.clone(),
            )
            .await
            .expect("post");
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "through node {i}");
    }
    let (value, _) = read(&cluster.client(2), "paid", "r=all").await;
    assert_eq!(
        value["value"], 6,
        "the retries through every node counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_updates_and_contexts_get_clear_errors() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    incr(&a, "c", 1).await;
    let post = |body: &'static str, headers: Vec<(&'static str, String)>| {
        let a = a.clone();
        async move {
            let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            a.request(Method::POST, &crdt_path("c"), &all, Bytes::from(body))
                .await
                .expect("post")
        }
    };
    for (body, code) in [
        ("", "invalid_json"),
        ("{\"type\":\"counter\"}", "bad_parameter"),
        ("{\"type\":\"counter\",\"increment\":\"1\"}", "invalid_json"),
        ("{\"type\":\"map\",\"update\":{}}", "bad_parameter"),
        ("{\"type\":\"register\"}", "bad_parameter"),
        ("{\"type\":\"set\",\"add\":[1]}", "invalid_json"),
    ] {
        let reply = post(body, vec![]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&reply), code, "{body}");
    }
    // A plain key's context, and one of another key, are refused by name.
    a.put("p", "1", None).await.expect("put");
    let plain = a.get("p").await.expect("get");
    let wrong = plain.context().expect("context").to_string();
    let reply = post(
        r#"{"type":"counter","increment":1}"#,
        vec![("x-chorus-context", wrong)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&reply.body).contains("plain key"),
        "{:?}",
        reply.body
    );
    incr(&a, "other", 1).await;
    let (_, other) = read(&a, "other", "").await;
    let reply = post(
        r#"{"type":"counter","increment":1}"#,
        vec![("x-chorus-context", other.clone())],
    )
    .await;
    assert_eq!(error_code(&reply), "context_key_mismatch");
    // And a CRDT context is no plain key's.
    let reply = a.put("p", "2", Some(&other)).await.expect("put");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Unknown parameters, a wrong method, a missing key.
    let reply = a
        .request(Method::GET, "/crdt/c?ttl_ms=5", &[], Bytes::new())
        .await
        .expect("get");
    assert_eq!(error_code(&reply), "bad_parameter");
    let reply = a
        .request(Method::PUT, "/crdt/c", &[], Bytes::new())
        .await
        .expect("put");
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = a.crdt("never").await.expect("get");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&reply), "not_found");
    // None of it changed the counter.
    let (value, _) = read(&a, "c", "r=all").await;
    assert_eq!(value["value"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_converge_on_one_state_and_a_read_folds_what_differs() {
    let cluster = TestCluster::start(3, 0, 3).await;
    // Updates through all three nodes at once: each mints on its own copy.
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let client = cluster.client(i);
            tokio::spawn(async move {
                for j in 0..10 {
                    let member = format!("m{i}-{j}");
                    let reply =
                        update(&client, "s", json!({"type": "set", "add": [member]}), None).await;
                    assert_eq!(reply.status, StatusCode::NO_CONTENT);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let (value, _) = read(&cluster.client(0), "s", "r=all").await;
    assert_eq!(value["value"].as_array().expect("members").len(), 30);
    // Anti-entropy and read repair bring every replica's own copy to the
    // same state; each copy's siblings fold to all thirty members.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut folded = Vec::new();
        for i in 0..3 {
            let view = replica_view(&cluster.client(i), "s").await;
            let json = view.json().expect("json");
            let mut members = std::collections::BTreeSet::new();
            for s in json["siblings"].as_array().expect("siblings") {
                for m in s["crdt"]["value"].as_array().expect("a set") {
                    members.insert(m.as_str().expect("member").to_string());
                }
            }
            folded.push(members.len());
        }
        if folded == [30, 30, 30] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas hold {folded:?} members"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three nodes whose n3 speaks peer protocol `protocol` (as a node of an
/// older build would), once the members agree.
async fn with_n3_at(protocol: u16) -> TestCluster {
    let pinned: PerNode = Box::new(move |i, config| {
        if i == 2 {
            config.cluster.protocol = Some(protocol);
        }
    });
    let cluster = TestCluster::start_each(3, 0, 3, |_| {}, Some(pinned)).await;
    cluster.await_members_agree(Duration::from_secs(10)).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_an_older_protocol_holds_crdt_updates_back() {
    let cluster = with_n3_at(chorus::peer::versions::CRDT_PROTOCOL - 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for i in 0..3 {
        let reply = update(
            &cluster.client(i),
            "c",
            json!({"type": "counter", "increment": 1}),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "n{}", i + 1);
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(body.contains("protocol 7"), "{body}");
        assert!(body.contains("n3"), "names the node: {body}");
    }
    assert_eq!(
        cluster.client(0).crdt("c").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_the_protocol_before_maps_holds_map_updates_back() {
    let cluster = with_n3_at(chorus::peer::versions::MAP_PROTOCOL - 1).await;
    // Counters it decodes: they go through once it has been heard from.
    incr(&cluster.client(0), "c", 1).await;
    for i in 0..3 {
        let body = json!({"type": "map", "update": {"n": {"type": "counter", "increment": 1}}});
        let reply = update(&cluster.client(i), "m", body, None).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "n{}", i + 1);
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(body.contains("protocol 8"), "{body}");
        assert!(body.contains("n3"), "names the node: {body}");
    }
    assert_eq!(
        cluster.client(0).crdt("m").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}
