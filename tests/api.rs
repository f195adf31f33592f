//! The public REST API over real HTTP on loopback: every route, every
//! status, every error the contract names.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chorus::api::CONTEXT_HEADER;
use chorus::client::key_path;
use common::{TestNode, error_code, raw_exchange, raw_exchange_closed};
use http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn put_then_get_returns_the_value_and_a_context() {
    let t = TestNode::start().await;
    let put = t
        .client
        .put("greeting", r#"{"hello":"world"}"#, None)
        .await
        .expect("put");
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert!(put.context().is_some(), "a PUT returns the new context");

    let got = t.client.get("greeting").await.expect("get");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), Some(json!({"hello": "world"})));
    assert_eq!(got.headers["content-type"], "application/json");
    assert!(got.context().is_some());
}

#[tokio::test]
async fn stored_values_come_back_byte_for_byte() {
    let t = TestNode::start().await;
    let raw = "{ \"spaced\" :  [1, 2.50, \"\\u00e9\"] }";
    t.client.put("k", raw, None).await.expect("put");
    let got = t.client.get("k").await.expect("get");
    assert_eq!(got.body, Bytes::from(raw), "the value was re-encoded");
}

#[tokio::test]
async fn an_absent_key_is_404_without_a_context() {
    let t = TestNode::start().await;
    let got = t.client.get("nothing-here").await.expect("get");
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&got), "not_found");
    assert!(got.context().is_none());
}

#[tokio::test]
async fn concurrent_writes_become_siblings_and_a_merged_context_resolves_them() {
    let t = TestNode::start().await;
    t.client
        .put("cart", r#"["milk"]"#, None)
        .await
        .expect("put");
    let read = t.client.get("cart").await.expect("get");
    let ctx = read.context().expect("context").to_string();

    // Two clients write with the same context, through the same node.
    let a = t
        .client
        .put("cart", r#"["milk","eggs"]"#, Some(&ctx))
        .await
        .expect("put a");
    let b = t
        .client
        .put("cart", r#"["milk","bread"]"#, Some(&ctx))
        .await
        .expect("put b");
    assert_eq!(
        (a.status, b.status),
        (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT)
    );

    let siblings = t.client.get("cart").await.expect("get");
    assert_eq!(siblings.status, StatusCode::MULTIPLE_CHOICES);
    let body = siblings.json().expect("json");
    let mut values: Vec<_> = body["siblings"]
        .as_array()
        .expect("siblings array")
        .iter()
        .map(|s| s["value"].clone())
        .collect();
    values.sort_by_key(|v| v.to_string());
    assert_eq!(
        values,
        vec![json!(["milk", "bread"]), json!(["milk", "eggs"])]
    );

    let merged_ctx = siblings.context().expect("merged context").to_string();
    let resolved = t
        .client
        .put("cart", r#"["milk","eggs","bread"]"#, Some(&merged_ctx))
        .await
        .expect("resolve");
    assert_eq!(resolved.status, StatusCode::NO_CONTENT);
    let after = t.client.get("cart").await.expect("get");
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.json(), Some(json!(["milk", "eggs", "bread"])));
}

#[tokio::test]
async fn a_put_context_supersedes_only_the_clients_own_write() {
    let t = TestNode::start().await;
    let mine = t.client.put("k", "1", None).await.expect("put");
    let other = t
        .client
        .put("k", "\"other\"", None)
        .await
        .expect("concurrent blind put");
    assert_eq!(other.status, StatusCode::NO_CONTENT);
    let again = t
        .client
        .put("k", "2", mine.context())
        .await
        .expect("put with own context");
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let got = t.client.get("k").await.expect("get");
    assert_eq!(
        got.status,
        StatusCode::MULTIPLE_CHOICES,
        "the other client's write must survive"
    );
    let body = got.json().expect("json");
    let values: Vec<_> = body["siblings"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["value"].clone())
        .collect();
    assert_eq!(values.len(), 2);
    assert!(values.contains(&json!("other")) && values.contains(&json!(2)));
}

#[tokio::test]
async fn returnbody_answers_with_the_value_or_the_siblings() {
    let t = TestNode::start().await;
    let path = format!("{}?returnbody=true", key_path("rb"));
    let headers = [("content-type", "application/json")];
    let one = t
        .client
        .request(Method::PUT, &path, &headers, Bytes::from("1"))
        .await
        .expect("put");
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json(), Some(json!(1)));
    let two = t
        .client
        .request(Method::PUT, &path, &headers, Bytes::from("2"))
        .await
        .expect("blind put");
    assert_eq!(two.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(
        two.json().expect("json")["siblings"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // The returned context covers both siblings: writing with it resolves them.
    let resolved = t.client.put("rb", "3", two.context()).await.expect("put");
    assert_eq!(resolved.status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.client.get("rb").await.expect("get").json(),
        Some(json!(3))
    );
    let off = format!("{}?returnbody=false", key_path("rb"));
    let plain = t
        .client
        .request(Method::PUT, &off, &headers, Bytes::from("4"))
        .await
        .expect("put");
    assert_eq!(plain.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn delete_leaves_a_tombstone_that_a_later_write_supersedes() {
    let t = TestNode::start().await;
    t.client.put("gone", "1", None).await.expect("put");
    let ctx = common::read_context(&t.client, "gone").await;
    let deleted = t.client.delete("gone", Some(&ctx)).await.expect("delete");
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let got = t.client.get("gone").await.expect("get");
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&got), "not_found");
    let tomb_ctx = got
        .context()
        .expect("a tombstone's 404 carries the context")
        .to_string();

    let back = t
        .client
        .put("gone", "2", Some(&tomb_ctx))
        .await
        .expect("put");
    assert_eq!(back.status, StatusCode::NO_CONTENT);
    let got = t.client.get("gone").await.expect("get");
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the tombstone should be superseded"
    );
    assert_eq!(got.json(), Some(json!(2)));
}

#[tokio::test]
async fn a_delete_concurrent_with_a_write_shows_as_a_deleted_sibling() {
    let t = TestNode::start().await;
    t.client.put("k", "1", None).await.expect("put");
    let ctx = common::read_context(&t.client, "k").await;
    t.client.put("k", "2", Some(&ctx)).await.expect("put");
    t.client.delete("k", Some(&ctx)).await.expect("delete");
    let got = t.client.get("k").await.expect("get");
    assert_eq!(got.status, StatusCode::MULTIPLE_CHOICES);
    let siblings = got.json().expect("json")["siblings"].clone();
    let siblings = siblings.as_array().expect("array");
    assert!(siblings.contains(&json!({"value": 2})));
    assert!(siblings.contains(&json!({"deleted": true})));
}

#[tokio::test]
async fn keys_are_percent_decoded_utf8() {
    let t = TestNode::start().await;
    for key in ["a/b", "späce and ünïcode", "100%", "?&=#"] {
        let put = t.client.put(key, "true", None).await.expect("put");
        assert_eq!(put.status, StatusCode::NO_CONTENT, "{key}");
        let got = t.client.get(key).await.expect("get");
        assert_eq!(got.json(), Some(json!(true)), "{key}");
    }
    // The encoded and the plain spelling name the same key.
    let got = t
        .client
        .request(
            Method::GET,
            "/kv/sp%C3%A4ce%20and%20%C3%BCn%C3%AFcode",
            &[],
            Bytes::new(),
        )
        .await
        .expect("get");
    assert_eq!(got.status, StatusCode::OK);
}

/// Method, path, headers, body, expected status, expected error code.
type Case<'a> = (
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    &'a str,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn client_errors_are_json_with_a_status_and_a_code() {
    let t = TestNode::start().await;
    let json_header = [("content-type", "application/json")];
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            key_path("k"),
            json_header.to_vec(),
            "{not json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PUT,
            key_path("k"),
            json_header.to_vec(),
            "",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::GET,
            "/kv/%FF%FE".into(),
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/kv/".into(),
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::PUT,
            "/kv".into(),
            vec![],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            format!("{}?r=2", key_path("k")),
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "bad_parameter",
        ),
        (
            Method::PUT,
            format!("{}?returnbody=maybe", key_path("k")),
            json_header.to_vec(),
            "1",
            StatusCode::BAD_REQUEST,
            "bad_parameter",
        ),
        (
            Method::PUT,
            key_path("k"),
            vec![("content-type", "text/plain")],
            "1",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Method::PUT,
            key_path("k"),
            vec![(CONTEXT_HEADER, "not base64!")],
            "1",
            StatusCode::BAD_REQUEST,
            "malformed_context",
        ),
        (
            Method::DELETE,
            key_path("k"),
            vec![(CONTEXT_HEADER, "AAAA")],
            "",
            StatusCode::BAD_REQUEST,
            "malformed_context",
        ),
        (
            Method::POST,
            key_path("k"),
            vec![],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::PATCH,
            key_path("k"),
            vec![],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/health".into(),
            vec![],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::DELETE,
            "/metrics".into(),
            vec![],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            format!("{}?r=one&pr=3", key_path("k")),
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "bad_parameter",
        ),
        (
            Method::GET,
            "/nowhere".into(),
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no_route",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let reply = t
            .client
            .request(method.clone(), &path, &headers, Bytes::from(body))
            .await
            .expect("request");
        assert_eq!(reply.status, status, "{method} {path}: {:?}", reply.body);
        assert_eq!(error_code(&reply), code, "{method} {path}");
        let message = reply
            .json()
            .and_then(|v| v["message"].as_str().map(str::to_owned));
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{method} {path} has no message"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                reply.headers.contains_key("allow"),
                "405 names the allowed methods"
            );
        }
    }
    // Nothing was stored by any of them.
    assert_eq!(
        t.client.get("k").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}

/// JSON text is UTF-8 (RFC 8259 §8.1): bytes that are not, even inside a
/// string the value's shape does not look into, make the body invalid JSON.
#[tokio::test]
async fn invalid_utf8_inside_json_strings_is_refused_and_never_stored() {
    let t = TestNode::start().await;
    let path = key_path("utf8");
    let put = |body: &[u8]| {
        t.client.request(
            Method::PUT,
            &path,
            &[("content-type", "application/json")],
            Bytes::copy_from_slice(body),
        )
    };
    let bodies: [&[u8]; 4] = [
        b"\"\xff\xfe\"",
        b"{\"a\": \"ok\", \"b\": \"\xc0\xaf\"}",
        b"{\"\xed\xa0\x80\": 1}",
        b"[\"trailing \xe2\x82\"]",
    ];
    for body in bodies {
        let reply = put(body).await.expect("put");
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(error_code(&reply), "invalid_json", "{body:?}");
    }
    assert_eq!(
        t.client.get("utf8").await.expect("get").status,
        StatusCode::NOT_FOUND,
        "nothing was stored"
    );
    // Well-formed UTF-8 of every length still goes in and comes back.
    let good = "[\"a\", \"é\", \"€\", \"𝄞\"]";
    let reply = put(good.as_bytes()).await.expect("put");
    assert!(reply.status.is_success(), "{:?}", reply.body);
    let got = t.client.get("utf8").await.expect("get");
    assert_eq!(got.body, Bytes::from(good));
}

#[tokio::test]
async fn json_content_types_with_parameters_or_none_are_accepted() {
    let t = TestNode::start().await;
    for ct in [
        Some("application/json; charset=utf-8"),
        Some("application/merge-patch+json"),
        None,
    ] {
        let headers: Vec<_> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let reply = t
            .client
            .request(Method::PUT, &key_path("ct"), &headers, Bytes::from("{}"))
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{ct:?}");
    }
}

#[tokio::test]
async fn a_context_from_another_cluster_is_refused() {
    let ours = TestNode::start().await;
    let theirs = TestNode::start_with(|c| c.cluster.name = "elsewhere".into()).await;
    let foreign = theirs.client.put("k", "1", None).await.expect("put");
    let ctx = foreign.context().expect("context");
    let reply = ours.client.put("k", "1", Some(ctx)).await.expect("put");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&reply), "malformed_context");
    assert!(
        reply.json().expect("json")["message"]
            .as_str()
            .unwrap_or("")
            .contains("another cluster")
    );
}

#[tokio::test]
async fn oversize_keys_and_values_are_413() {
    let t = TestNode::start_with(|c| {
        c.limits.max_key_bytes = 16;
        c.limits.max_value_bytes = 1000;
    })
    .await;
    let long_key = "k".repeat(17);
    let reply = t.client.put(&long_key, "1", None).await.expect("put");
    assert_eq!(
        (reply.status, error_code(&reply).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "key_too_large")
    );
    let reply = t.client.get(&long_key).await.expect("get");
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let fits = t.client.put(&"k".repeat(16), "1", None).await.expect("put");
    assert_eq!(fits.status, StatusCode::NO_CONTENT);

    let big = format!("\"{}\"", "x".repeat(1000));
    let reply = t.client.put("v", big, None).await.expect("put");
    assert_eq!(
        (reply.status, error_code(&reply).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large")
    );
    let exact = format!("\"{}\"", "x".repeat(998));
    assert_eq!(
        t.client.put("v", exact, None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn an_oversize_body_is_refused_before_it_is_sent() {
    let t = TestNode::start_with(|c| c.limits.max_value_bytes = 1000).await;
    // Claims 100 MB but sends 10 bytes: the answer comes at once, unread.
    let request = b"PUT /kv/big HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n\"aaaaaaa\"";
    let answer = raw_exchange(t.node.addr, request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("value_too_large"));

    // Chunked, no length: cut off once it passes the limit.
    let mut chunked =
        b"PUT /kv/big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"258\r\n");
        chunked.extend_from_slice(&[b' '; 600]);
        chunked.extend_from_slice(b"\r\n");
    }
    let answer = raw_exchange(t.node.addr, &chunked, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// A peer frame is untrusted bytes too: one claiming 8 GiB is refused from
/// its headers, unread, whether unsigned (401) or signed for that length
/// (413, naming the peer message limit); a truncated one is a 400; the node
/// serves on.
#[tokio::test]
async fn peer_frames_too_large_or_truncated_are_refused_and_the_node_serves_on() {
    let t = TestNode::start().await;
    let huge = b"POST /peer HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-chorus-peer\r\nx-chorus-rpc: replica.fetch/1\r\ncontent-length: 8589934592\r\n\r\n\x00\x01";
    let answer = raw_exchange(t.node.addr, huge, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("peer_unauthenticated"), "{answer}");

    let stamp = chorus::security::peer_auth::Stamp {
        node: "test-big".into(),
        to: "n1".into(),
        rpc: "replica.fetch/1".into(),
        boot: 1,
        seq: 1,
        ts_ms: chorus::clock::Clock::system().now_ms(),
        len: 8 << 30,
        digest: [0; 32],
    };
    let auth =
        chorus::security::peer_auth::Secret::new(common::TEST_SECRET.as_bytes()).sign(&stamp);
    let huge = format!(
        "POST /peer HTTP/1.1\r\nhost: x\r\n{}: {auth}\r\nx-chorus-rpc: replica.fetch/1\r\ncontent-length: 8589934592\r\n\r\n\x00\x01",
        chorus::security::peer_auth::AUTH_HEADER,
    );
    let answer = raw_exchange(t.node.addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("peer_message_too_large"), "{answer}");
    assert!(answer.contains("limits.max_set_bytes"), "{answer}");

    let fetch = chorus::replica::rpc::Fetch(vec!["some-key".into(), "another".into()]);
    let whole = chorus::peer::Frame::of(&fetch).expect("encode").body;
    let cut = &whole[..whole.len() - 3];
    // Signed, so the truncation is what is refused, not the sender.
    let mut truncated = format!(
        "POST /peer HTTP/1.1\r\nhost: x\r\n{}: {}\r\nx-chorus-rpc: replica.fetch/1\r\ncontent-length: {}\r\n\r\n",
        chorus::security::peer_auth::AUTH_HEADER,
        common::test_signer().sign("n1", "replica.fetch/1", cut),
        cut.len()
    )
    .into_bytes();
    truncated.extend_from_slice(cut);
    let answer = raw_exchange(t.node.addr, &truncated, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body_unreadable"), "{answer}");

    let put = t.client.put("after", "1", None).await.expect("put");
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let got = t.client.get("after").await.expect("get");
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_never_finishes_times_out() {
    let t = TestNode::start_with(|c| c.limits.body_timeout_ms = 300).await;
    let request = b"PUT /kv/slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":";
    let answer = raw_exchange(t.node.addr, request, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"));
    assert_eq!(
        t.client.get("slow").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn headers_that_never_finish_get_the_connection_closed() {
    let t = TestNode::start_with(|c| c.limits.header_timeout_ms = 300).await;
    // The 10 s bound only keeps a broken server from hanging the test.
    let (answer, closed) = raw_exchange_closed(
        t.node.addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(closed, "the server kept a half-sent request open");
    assert!(!answer.contains("200 OK"), "{answer}");
    // The node still serves well-behaved clients.
    assert_eq!(
        t.client.get("x").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let t = TestNode::start().await;
    let health = t
        .client
        .request(Method::GET, "/health", &[], Bytes::new())
        .await
        .expect("health");
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), Some(json!({"status": "ok", "node": "n1"})));

    t.client.put("m", "1", None).await.expect("put");
    t.client.get("m").await.expect("get");
    t.client.get("absent").await.expect("get");
    let one = format!("{}?r=one", key_path("m"));
    t.client
        .request(Method::GET, &one, &[], Bytes::new())
        .await
        .expect("get");
    let metrics = t
        .client
        .request(Method::GET, "/metrics", &[], Bytes::new())
        .await
        .expect("metrics");
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body);
    for needle in [
        r#"chorus_requests_total{op="put",status="204",quorum="default"}"#,
        r#"chorus_requests_total{op="get",status="200",quorum="default"}"#,
        r#"chorus_requests_total{op="get",status="200",quorum="one"}"#,
        r#"chorus_requests_total{op="get",status="404",quorum="default"}"#,
        r#"chorus_request_duration_seconds_bucket{op="put",le="0.001"}"#,
        "chorus_read_siblings_bucket",
        "chorus_store_keys",
        r#"chorus_build_info{version=""#,
        r#"chorus_coordinator_duration_seconds_bucket{op="write",le="0.001"}"#,
        r#"chorus_coordinator_duration_seconds_bucket{op="read",le="0.001"}"#,
        r#"chorus_members_liveness{liveness="up"} 1"#,
        "chorus_ring_tokens 16",
        "chorus_hints_pending 0",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
}

/// HEAD answers as GET does, headers and all, without the body (load
/// balancers and caches send it); a route that takes no query parameter
/// refuses one by name, as `/kv` does.
#[tokio::test]
async fn head_is_a_get_without_its_body_and_parameterless_routes_refuse_parameters() {
    let t = TestNode::start().await;
    let ask = |method: Method, path: &str| {
        let client = t.client.clone();
        let path = path.to_string();
        async move {
            client
                .request(method, &path, &[], Bytes::new())
                .await
                .expect("request")
        }
    };
    let get = ask(Method::GET, "/health").await;
    let head = ask(Method::HEAD, "/health").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty(), "{:?}", head.body);
    assert_eq!(
        head.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(get.body.len().to_string().as_str())
    );
    t.client.put("k", "1", None).await.expect("put");
    let get = ask(Method::GET, &key_path("k")).await;
    let head = ask(Method::HEAD, &key_path("k")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.context(), get.context());
    assert!(head.headers.contains_key("x-chorus-quorum"));
    let absent = ask(Method::HEAD, &key_path("absent")).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert!(absent.body.is_empty());
    let refused = ask(Method::POST, &key_path("k")).await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        refused.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD, PUT, DELETE")
    );

    // Over HTTP/2 too (TLS clients negotiate it; hyper leaves a HEAD
    // answer's body to the server there): no body, its length kept.
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    for path in ["/health".to_string(), key_path("k")] {
        let uri = format!("{}{path}", t.node.url());
        let h2_ask = |method: Method| {
            let request = http::Request::builder()
                .method(method)
                .uri(&uri)
                .body(http_body_util::Empty::new())
                .expect("request");
            h2.request(request)
        };
        let get = h2_ask(Method::GET).await.expect("GET over h2");
        let get_body = http_body_util::BodyExt::collect(get.into_body())
            .await
            .expect("GET body")
            .to_bytes();
        let head = h2_ask(Method::HEAD).await.expect("HEAD over h2");
        assert_eq!(head.status(), StatusCode::OK, "{path}");
        let length = head.headers().get("content-length").cloned();
        let body = http_body_util::BodyExt::collect(head.into_body())
            .await
            .expect("a HEAD answer the client accepts (no DATA frames)")
            .to_bytes();
        assert!(body.is_empty(), "{path}: {body:?}");
        assert_eq!(
            length.as_ref().and_then(|v| v.to_str().ok()),
            Some(get_body.len().to_string().as_str()),
            "{path}"
        );
    }
    let put = ask(Method::PUT, "/cluster").await;
    assert_eq!(
        put.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );

    for path in [
        "/cluster?verbose=1",
        "/health?x",
        "/metrics?name=a",
        "/admin/leave?now=1",
    ] {
        // Each with its route's method: another is a 405 first.
        let method = match path.starts_with("/admin/") {
            true => Method::POST,
            false => Method::GET,
        };
        let reply = ask(method, path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_code(&reply), "bad_parameter", "{path}");
        let message = reply.json().expect("json")["message"].to_string();
        let name = path.split(['?', '=']).nth(1).expect("a name");
        assert!(message.contains(&format!("`{name}`")), "{path}: {message}");
    }
    assert_eq!(ask(Method::GET, "/cluster").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_memory_engine_serves_the_same_api() {
    let t = TestNode::start_in_memory().await;
    t.client.put("k", "1", None).await.expect("put");
    t.client.put("k", "2", None).await.expect("put");
    assert_eq!(
        t.client.get("k").await.expect("get").status,
        StatusCode::MULTIPLE_CHOICES
    );
}

#[tokio::test]
async fn blind_writes_past_the_sibling_limit_are_refused_until_resolved() {
    let t = TestNode::start_with(|c| {
        c.limits.warn_siblings = 2;
        c.limits.max_siblings = 3;
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            t.client
                .put("pile", format!("{i}"), None)
                .await
                .expect("put")
                .status,
            StatusCode::NO_CONTENT
        );
    }
    let refused = t.client.put("pile", "3", None).await.expect("put");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&refused), "too_many_siblings");
    let metrics = t
        .client
        .request(Method::GET, "/metrics", &[], Bytes::new())
        .await
        .expect("metrics");
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .any(|l| l.starts_with("chorus_sibling_warnings_total ") && !l.ends_with(" 0")),
        "three siblings over a warning limit of two were not counted"
    );
    let read = t.client.get("pile").await.expect("get");
    assert_eq!(
        read.json().expect("json")["siblings"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "a refused write changed the key"
    );
    let resolved = t
        .client
        .put("pile", "\"one\"", read.context())
        .await
        .expect("put");
    assert_eq!(resolved.status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.client.get("pile").await.expect("get").json(),
        Some(json!("one"))
    );
}

#[tokio::test]
async fn blind_writes_past_the_sibling_bytes_limit_are_refused() {
    let t = TestNode::start_with(|c| {
        c.limits.max_value_bytes = 100;
        c.limits.max_set_bytes = 250;
    })
    .await;
    let value = format!("\"{}\"", "x".repeat(98));
    for _ in 0..2 {
        assert_eq!(
            t.client
                .put("big", value.clone(), None)
                .await
                .expect("put")
                .status,
            StatusCode::NO_CONTENT
        );
    }
    let refused = t.client.put("big", value.clone(), None).await.expect("put");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&refused), "siblings_too_large");
    let ctx = common::read_context(&t.client, "big").await;
    let resolved = t.client.put("big", value, Some(&ctx)).await.expect("put");
    assert_eq!(
        resolved.status,
        StatusCode::NO_CONTENT,
        "a resolving write frees the space"
    );
}

#[tokio::test]
async fn json_null_is_a_value_and_an_empty_body_is_not() {
    let t = TestNode::start_in_memory().await;
    let put = |body: &'static [u8]| {
        t.client.request(
            Method::PUT,
            "/kv/maybe",
            &[("content-type", "application/json")],
            Bytes::from_static(body),
        )
    };
    assert_eq!(
        put(b"null").await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    let read = t.client.get("maybe").await.expect("get");
    assert_eq!(
        (read.status, &read.body[..]),
        (StatusCode::OK, &b"null"[..])
    );
    assert!(read.context().is_some());
    for empty in [&b""[..], b"  \n"] {
        let reply = t
            .client
            .request(
                Method::PUT,
                "/kv/maybe",
                &[("content-type", "application/json")],
                Bytes::from_static(empty),
            )
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&reply), "invalid_json");
        let message = reply.json().expect("json")["message"].to_string();
        assert!(
            message.contains("empty") && message.contains("`null`"),
            "{message}"
        );
    }
    // A key with no value is a 404, never an empty 200.
    let missing = t.client.get("never").await.expect("get");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
