//! `POST /batch` over real HTTP on in-process three-node clusters: every
//! op answers as its single route would, in the order sent; one bad op
//! fails alone; the bounds (ops, body bytes, answer bytes) are 413s; a
//! batch's contexts work on the single routes and back.

mod common;

use bytes::Bytes;
use chorus::client::{Client, Reply};
use common::cluster::TestCluster;
use common::error_code;
use http::{Method, StatusCode};
use serde_json::{Value, json};

async fn batch(client: &Client, query: &str, body: &Value) -> Reply {
    let path = match query {
        "" => "/batch".to_string(),
        q => format!("/batch?{q}"),
    };
    client
        .request(
            Method::POST,
            &path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
        .expect("batch")
}

/// The results of a batch that must have answered 200.
async fn results(client: &Client, body: &Value) -> Vec<Value> {
    let reply = batch(client, "", body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let json = reply.json().expect("a JSON answer");
    json["results"].as_array().expect("results").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_answers_each_op_as_its_route_would_in_order() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));

    let puts: Vec<Value> = (0..60)
        .map(|i| json!({"op": "put", "key": format!("item/{i}"), "value": {"n": i}}))
        .collect();
    let written = results(&a, &json!({ "ops": puts })).await;
    assert_eq!(written.len(), 60);
    for (i, r) in written.iter().enumerate() {
        assert_eq!(r["key"], format!("item/{i}"), "in the order sent");
        assert_eq!(r["status"], 204, "{r}");
        assert!(r["context"].is_string(), "{r}");
    }
    // Every write is there for a single GET through another node.
    for i in [0, 17, 59] {
        let reply = b.get(&format!("item/{i}")).await.expect("get");
        assert_eq!(reply.json(), Some(json!({"n": i})));
    }

    // Two blind writes make siblings; the batch shows them as GET would.
    a.put("pair", "1", None).await.expect("put");
    a.put("pair", "2", None).await.expect("put");
    let mut gets: Vec<Value> = (0..60)
        .map(|i| json!({"op": "get", "key": format!("item/{i}")}))
        .collect();
    gets.push(json!({"op": "get", "key": "never-written"}));
    gets.push(json!({"op": "get", "key": "pair"}));
    let read = results(&b, &json!({ "ops": gets })).await;
    for (i, r) in read.iter().take(60).enumerate() {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["value"], json!({"n": i}));
    }
    assert_eq!(read[60]["status"], 404);
    assert_eq!(read[60]["error"], "not_found");
    assert_eq!(read[61]["status"], 300);
    assert_eq!(read[61]["siblings"].as_array().map(Vec::len), Some(2));

    // A batch read's context resolves the siblings on the single route...
    let context = read[61]["context"].as_str().expect("context").to_string();
    assert_eq!(
        a.put("pair", "3", Some(&context))
            .await
            .expect("put")
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(a.get("pair").await.expect("get").json(), Some(json!(3)));
    // ...and a single read's context serves a batch delete and If-Match.
    let fresh = common::read_context(&a, "pair").await;
    let ops = json!({"ops": [
        {"op": "delete", "key": "item/0", "context": written[0]["context"]},
        {"op": "put", "key": "pair", "value": 4, "if_match": fresh},
        {"op": "put", "key": "item/1", "value": 0, "if_none_match": "*"},
        {"op": "put", "key": "fresh", "value": 0, "if_none_match": "*"},
    ]});
    let changed = results(&b, &ops).await;
    let statuses: Vec<&Value> = changed.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [204, 204, 412, 204], "{changed:?}");
    assert_eq!(changed[2]["error"], "precondition_failed");
    assert_eq!(
        a.get("item/0").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(a.get("pair").await.expect("get").json(), Some(json!(4)));
    assert_eq!(
        a.get("item/1").await.expect("get").json(),
        Some(json!({"n": 1}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_op_fails_alone_with_the_error_its_route_would_give() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    let long_key = "k".repeat(2000);
    let ops = json!({"ops": [
        {"op": "put", "key": "good", "value": [1, 2]},
        {"op": "upsert", "key": "bad-op", "value": 1},
        {"op": "put", "key": "no-value"},
        {"op": "get", "key": "get-with-value", "value": 1},
        {"op": "put", "key": long_key, "value": 1},
        {"op": "put", "key": "", "value": 1},
        {"op": "put", "key": "ctx", "value": 1, "context": "garbage"},
        {"op": "put", "key": "cond", "value": 1, "if_none_match": "abc"},
        {"op": "delete", "key": "cond", "if_none_match": "*"},
        {"op": "put", "key": "extra", "value": 1, "colour": "red"},
        {"key": "no-op"},
        "not an object",
        {"op": "put", "key": "good2", "value": {"nested": [true, null, "x"]}},
    ]});
    let got = results(&a, &ops).await;
    let statuses: Vec<u64> = got
        .iter()
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        statuses,
        [
            204, 400, 400, 400, 413, 400, 400, 400, 400, 400, 400, 400, 204
        ],
        "{got:#?}"
    );
    for r in got.iter().filter(|r| r["status"] != 204) {
        assert!(r["error"].is_string() && r["message"].is_string(), "{r}");
    }
    assert!(got[1]["message"].as_str().unwrap_or("").contains("upsert"));
    assert_eq!(got[4]["error"], "key_too_large");
    assert_eq!(got[6]["error"], "malformed_context");
    assert_eq!(got[11]["key"], Value::Null);
    // Only the good ops were applied.
    assert_eq!(
        a.get("good").await.expect("get").json(),
        Some(json!([1, 2]))
    );
    assert_eq!(
        a.get("good2").await.expect("get").json(),
        Some(json!({"nested": [true, null, "x"]}))
    );
    for key in ["bad-op", "no-value", "extra", "cond", "ctx"] {
        let reply = a.get(key).await.expect("get");
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_over_its_bounds_is_refused_whole_with_a_json_error() {
    let cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.limits.max_value_bytes = 15_000;
        c.limits.max_batch_bytes = 40_000;
    })
    .await;
    let a = cluster.client(0);
    let get = |i: usize| json!({"op": "get", "key": format!("k{i}")});

    let too_many = json!({"ops": (0..1001).map(get).collect::<Vec<_>>()});
    let reply = batch(&a, "", &too_many).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&reply), "batch_too_large");
    assert!(String::from_utf8_lossy(&reply.body).contains("1000"));
    // 1,000 is allowed (and fits 40,000 bytes).
    let most = json!({"ops": (0..1000).map(|i| json!({"op":"get","key":i.to_string()})).collect::<Vec<_>>()});
    assert!(most.to_string().len() < 40_000);
    assert_eq!(results(&a, &most).await.len(), 1000);

    let big = "x".repeat(14_000);
    let too_big = json!({"ops": (0..3).map(|i| json!({"op":"put","key":format!("b{i}"),"value":big})).collect::<Vec<_>>()});
    let reply = batch(&a, "", &too_big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&reply.body).contains("max_batch_bytes"));

    // The answer is bounded too: the third 14,002-byte value would pass
    // 40,000 bytes, and answers 413 alone.
    for i in 0..3 {
        let value = Bytes::from(json!(big).to_string());
        let reply = a.put(&format!("b{i}"), value, None).await.expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let reads = json!({"ops": (0..3).map(|i| json!({"op":"get","key":format!("b{i}")})).collect::<Vec<_>>()});
    let got = results(&a, &reads).await;
    let statuses: Vec<&Value> = got.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [200, 200, 413]);
    assert_eq!(got[2]["error"], "batch_too_large");

    let malformed: [(&[u8], StatusCode, &str); 5] = [
        (b"{oops", StatusCode::BAD_REQUEST, "invalid_json"),
        (b"{\"ops\": 3}", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            b"{\"ops\": [], \"more\": 1}",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (b"[]", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            b"{\"ops\": [\"\xff\"]}",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (body, status, code) in malformed {
        let reply = a
            .request(
                Method::POST,
                "/batch",
                &[("content-type", "application/json")],
                Bytes::from_static(body),
            )
            .await
            .expect("batch");
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(body));
        assert_eq!(error_code(&reply), code);
    }
    let empty = results(&a, &json!({"ops": []})).await;
    assert!(empty.is_empty());
    let text = a
        .request(
            Method::POST,
            "/batch",
            &[("content-type", "text/plain")],
            Bytes::from_static(b"{\"ops\":[]}"),
        )
        .await
        .expect("batch");
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown = batch(&a, "limit=3", &json!({"ops": []})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&unknown.body).contains("limit"));
    let bad_quorum = batch(&a, "w=4", &json!({"ops": []})).await;
    assert_eq!(bad_quorum.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_keeps_its_quorum_per_op_with_a_node_down() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    cluster.stop(2).await;
    let a = cluster.client(0);
    let ops: Vec<Value> = (0..20)
        .map(|i| json!({"op": "put", "key": format!("q{i}"), "value": i}))
        .collect();
    let ok = results(&a, &json!({ "ops": ops.clone() })).await;
    assert!(ok.iter().all(|r| r["status"] == 204), "{ok:?}");
    let reply = batch(&a, "w=3&timeout_ms=500", &json!({ "ops": ops })).await;
    assert_eq!(reply.status, StatusCode::OK);
    let all = reply.json().expect("json")["results"].clone();
    let failed = all.as_array().expect("results");
    assert_eq!(failed.len(), 20);
    assert!(
        failed
            .iter()
            .all(|r| r["status"] == 503 && r["error"] == "quorum_not_met"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_runs_within_the_nodes_inflight_limit() {
    // Two permits: the batch's own and one more, so its ops run two at a
    // time, and all of them are still answered.
    let cluster = TestCluster::start_with(3, 0, 3, |c| c.limits.max_inflight = 2).await;
    let a = cluster.client(0);
    let ops: Vec<Value> = (0..50)
        .map(|i| json!({"op": "put", "key": format!("p{i}"), "value": i}))
        .collect();
    let done = results(&a, &json!({ "ops": ops })).await;
    assert_eq!(done.len(), 50);
    assert!(done.iter().all(|r| r["status"] == 204), "{done:?}");
    assert_eq!(a.get("p49").await.expect("get").json(), Some(json!(49)));
}

/// A peer's `replica.merges` or `replica.reads` of more keys than a
/// message may carry is refused whole with an error, never a panic, and
/// the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_merges_or_reads_over_the_bound_is_refused() {
    use chorus::config::MAX_HANDOFF_BATCH;
    use chorus::replica::rpc::{EncodedSet, Merge, Merges, Reads};
    use chorus::version::SiblingSet;
    let cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    let set = EncodedSet::encode(&SiblingSet::default()).expect("encode");
    let merges = (0..=MAX_HANDOFF_BATCH)
        .map(|i| Merge {
            key: format!("k{i}"),
            set: set.clone(),
        })
        .collect();
    let refused = common::peer_rpc(&a, Merges(merges))
        .await
        .expect_err("refused");
    assert_eq!(refused.code, "protocol_error", "{refused:?}");
    assert!(refused.message.contains("at most 4096"), "{refused:?}");
    let keys = (0..=MAX_HANDOFF_BATCH).map(|i| format!("k{i}")).collect();
    let refused = common::peer_rpc(&a, Reads(keys))
        .await
        .expect_err("refused");
    assert!(refused.message.contains("at most 4096"), "{refused:?}");
    let ok = a
        .put("after", Bytes::from_static(b"1"), None)
        .await
        .expect("put");
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
}

/// A batch's writes at w = 1, whose merges to a stopped replica fail
/// (in one message, `coordinator::outbox`), hint that replica, and the
/// hints reach it when it returns: with anti-entropy off, nothing else
/// would bring the writes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batchs_writes_reach_a_replica_that_was_down_through_hints() {
    let mut cluster = TestCluster::start_with(4, 0, 3, |c| {
        c.antientropy.mode = chorus::config::AntiEntropyMode::Off;
    })
    .await;
    let placer = std::sync::Arc::clone(cluster.node(0).cluster());
    cluster.stop(3).await;
    let a = cluster.client(0);
    let keys: Vec<String> = (0..60).map(|i| format!("h/{i}")).collect();
    let ops: Vec<Value> = keys
        .iter()
        .map(|k| json!({"op": "put", "key": k, "value": k}))
        .collect();
    let reply = batch(&a, "w=1", &json!({ "ops": ops })).await;
    assert_eq!(reply.status, StatusCode::OK);
    let done = reply.json().expect("json")["results"].clone();
    let done = done.as_array().expect("results");
    assert!(done.iter().all(|r| r["status"] == 204), "{done:?}");
    let owned: Vec<&String> = keys
        .iter()
        .filter(|k| {
            placer
                .routes()
                .preference_list(k)
                .contains(&"n4".to_string())
        })
        .collect();
    assert!(owned.len() >= 20, "only {} keys on n4", owned.len());
    cluster.restart(3).await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for key in owned {
        while cluster.node(3).store().get(key).expect("get").is_none() {
            assert!(std::time::Instant::now() < until, "{key} never reached n4");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_of_json_null_stores_null_and_null_elsewhere_is_unset() {
    let cluster = TestCluster::start(1, 0, 1).await;
    let client = cluster.client(0);
    let answers = results(
        &client,
        &json!({"ops": [
            {"op": "put", "key": "nothing", "value": null},
            {"op": "get", "key": "nothing", "value": null, "context": null},
            {"op": "delete", "key": "gone", "value": null},
            {"op": "put", "key": "unset"},
        ]}),
    )
    .await;
    let statuses: Vec<_> = answers.iter().map(|a| a["status"].as_u64()).collect();
    // The get may run before the put (a batch has no order): 200 or 404.
    assert_eq!(statuses[0], Some(204), "{answers:?}");
    assert!(matches!(statuses[1], Some(200 | 404)), "{answers:?}");
    assert_eq!(statuses[2], Some(204), "{answers:?}");
    assert_eq!(statuses[3], Some(400), "{answers:?}");
    assert!(
        answers[3]["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs a value"))
    );
    // Stored as the value null: a 200 whose body is `null`.
    let read = client.get("nothing").await.expect("get");
    assert_eq!(
        (read.status, &read.body[..]),
        (StatusCode::OK, &b"null"[..])
    );
    let again = results(&client, &json!({"ops": [{"op": "get", "key": "nothing"}]})).await;
    assert_eq!(again[0]["status"], 200, "{again:?}");
    assert!(
        again[0]["value"].is_null() && again[0].get("value").is_some(),
        "{again:?}"
    );
}
