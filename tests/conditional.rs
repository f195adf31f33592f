//! Conditional writes over real HTTP on an in-process three-node cluster:
//! `If-None-Match: *` creates only, `If-Match` updates only what the
//! client read, a refused write is a 412 that changes nothing, and bad
//! conditions are 400s that name the header.

mod common;

use bytes::Bytes;
use chorus::client::{Client, Reply, key_path};
use common::cluster::TestCluster;
use common::{error_code, read_context};
use http::{Method, StatusCode};

async fn send(
    client: &Client,
    method: Method,
    key: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    client
        .request(
            method,
            &key_path(key),
            &all,
            Bytes::from_static(body.as_bytes()),
        )
        .await
        .expect("request")
}

/// The key's value as a GET at r=all sees it: the body of a 200, or the
/// status otherwise.
async fn value(client: &Client, key: &str) -> String {
    let reply = common::get_with(client, key, "r=all").await;
    match reply.status {
        StatusCode::OK => String::from_utf8_lossy(&reply.body).into_owned(),
        other => other.as_str().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_none_match_creates_once_and_again_after_a_delete() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    let create = [("if-none-match", "*")];

    let first = send(&a, Method::PUT, "order", &create, "1").await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    // Through another node, the key now has a value: refused, unchanged.
    let second = send(&b, Method::PUT, "order", &create, "2").await;
    assert_eq!(second.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(&second), "precondition_failed");
    assert!(String::from_utf8_lossy(&second.body).contains("If-None-Match"));
    assert_eq!(value(&a, "order").await, "1");

    // Deleted, it may be created again, and the new value stands alone:
    // the write superseded the tombstone it found.
    let context = read_context(&a, "order").await;
    assert_eq!(
        a.delete("order", Some(&context))
            .await
            .expect("delete")
            .status,
        StatusCode::NO_CONTENT
    );
    let again = send(&b, Method::PUT, "order", &create, "3").await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(value(&a, "order").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_match_writes_only_over_what_the_client_read() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b, c) = (cluster.client(0), cluster.client(1), cluster.client(2));
    assert_eq!(
        a.put("cart", "1", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    let read = read_context(&a, "cart").await;

    // The first update with the context passes and replaces the value.
    let first = send(&b, Method::PUT, "cart", &[("if-match", &read)], "2").await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert_eq!(value(&a, "cart").await, "2");
    // The same context again: somebody (the first update) wrote since.
    let quoted = format!("\"{read}\"");
    let stale = send(&c, Method::PUT, "cart", &[("if-match", &quoted)], "3").await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(&stale), "precondition_failed");
    assert_eq!(
        value(&a, "cart").await,
        "2",
        "a refused write is not applied"
    );

    // A stale delete is refused too; a fresh one deletes.
    let stale_delete = send(&a, Method::DELETE, "cart", &[("if-match", &read)], "").await;
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(value(&a, "cart").await, "2");
    let fresh = read_context(&b, "cart").await;
    let delete = send(&a, Method::DELETE, "cart", &[("if-match", &fresh)], "").await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert_eq!(value(&a, "cart").await, "404");

    // If-Match needs a live value, with a context or `*`.
    let gone = send(&b, Method::PUT, "cart", &[("if-match", &fresh)], "4").await;
    assert_eq!(gone.status, StatusCode::PRECONDITION_FAILED);
    let star = send(&b, Method::PUT, "cart", &[("if-match", "*")], "4").await;
    assert_eq!(star.status, StatusCode::PRECONDITION_FAILED);
    let never = send(&b, Method::PUT, "never", &[("if-match", "*")], "4").await;
    assert_eq!(never.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(value(&a, "never").await, "404");
    assert_eq!(
        a.put("cart", "5", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    let star = send(&c, Method::PUT, "cart", &[("if-match", "*")], "6").await;
    assert_eq!(star.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_conditional_write_returns_its_first_outcome() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    let headers = [("if-none-match", "*"), ("idempotency-key", "create-7")];
    assert_eq!(
        send(&a, Method::PUT, "job", &headers, "1").await.status,
        StatusCode::NO_CONTENT
    );
    // The retry would fail its own condition now; it is the same write.
    assert_eq!(
        send(&b, Method::PUT, "job", &headers, "1").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(value(&a, "job").await, "1", "one sibling, not two");
    // Another request id is another write, and the key has a value.
    let other = [("if-none-match", "*"), ("idempotency-key", "create-8")];
    assert_eq!(
        send(&b, Method::PUT, "job", &other, "2").await.status,
        StatusCode::PRECONDITION_FAILED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditions_hold_with_a_replica_down_and_fail_when_r_cannot_be_read() {
    let mut cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    assert_eq!(
        send(&a, Method::PUT, "k", &[("if-none-match", "*")], "1")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    cluster.stop(2).await;
    let a = cluster.client(0);
    let refused = send(&a, Method::PUT, "k", &[("if-none-match", "*")], "2").await;
    assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED);
    let read = read_context(&a, "k").await;
    let passed = send(&a, Method::PUT, "k", &[("if-match", &read)], "3").await;
    assert_eq!(passed.status, StatusCode::NO_CONTENT);
    // r=3 cannot be read with a replica down: no check, no write.
    let path = format!("{}?r=3", key_path("k"));
    let unread = a
        .request(
            Method::PUT,
            &path,
            &[("content-type", "application/json"), ("if-match", "*")],
            Bytes::from_static(b"4"),
        )
        .await
        .expect("put");
    assert_eq!(unread.status, StatusCode::SERVICE_UNAVAILABLE);
    let reply = a.get("k").await.expect("get");
    assert_eq!(reply.body, Bytes::from_static(b"3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_conditions_are_400s_that_name_the_header() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let a = cluster.client(0);
    assert_eq!(
        a.put("x", "1", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    let context = read_context(&a, "x").await;
    let other_key = {
        a.put("y", "1", None).await.expect("put");
        read_context(&a, "y").await
    };
    type Case<'a> = (Method, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            vec![("if-none-match", "\"abc\"")],
            "If-None-Match",
        ),
        (
            Method::DELETE,
            vec![("if-none-match", "*")],
            "If-None-Match",
        ),
        (
            Method::PUT,
            vec![("if-none-match", "*"), ("if-match", "*")],
            "not both",
        ),
        (Method::PUT, vec![("if-match", "not-a-context")], "If-Match"),
        (Method::PUT, vec![("if-match", &other_key)], "another key"),
        (
            Method::PUT,
            vec![("if-match", &context), ("x-chorus-context", &other_key)],
            "another key",
        ),
        (
            Method::PUT,
            vec![("if-match", "*"), ("if-match", "*")],
            "send it once",
        ),
    ];
    for (method, headers, names) in cases {
        let reply = send(&a, method.clone(), "x", &headers, "2").await;
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{method} {headers:?}: {body}"
        );
        assert!(body.contains(names), "{method} {headers:?}: {body}");
    }
    assert_eq!(value(&a, "x").await, "1", "no refused write was applied");
}
