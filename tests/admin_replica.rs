//! `GET /admin/replica/{key}`: each node's own stored set, canonical, so
//! replicas holding the same data answer byte for byte the same, and a
//! replica that missed a write visibly differs (it is not a quorum read).

mod common;

use bytes::Bytes;
use chorus::client::{Client, Reply, key_path};
use common::cluster::TestCluster;
use http::{Method, StatusCode};

async fn replica(client: &Client, key: &str) -> Reply {
    common::replica_view(client, key).await
}

fn node_header(reply: &Reply) -> &str {
    reply
        .headers
        .get(chorus::api::NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_with_the_same_data_answer_identically_and_a_lagging_one_differs() {
    // No anti-entropy: the lagging replica must stay behind to be seen.
    let mut cluster = TestCluster::start_with(3, 0, 3, |c| {
        c.antientropy.mode = chorus::config::AntiEntropyMode::Off;
    })
    .await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let write = |client: &Client, key: &str, value: &'static str, query: &str| {
        let path = format!("{}?{query}", key_path(key));
        let client = client.clone();
        async move {
            let headers = [("content-type", "application/json")];
            client
                .request(
                    Method::PUT,
                    &path,
                    &headers,
                    Bytes::from_static(value.as_bytes()),
                )
                .await
                .expect("put")
        }
    };
    // A value with spaces and key order the client chose, and a deleted key.
    let reply = write(
        &clients[0],
        "doc/1",
        r#"{"b": 1, "a": [true, null]}"#,
        "w=3",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    assert_eq!(
        write(&clients[1], "gone", "1", "w=3").await.status,
        StatusCode::NO_CONTENT
    );
    let ctx = common::read_context(&clients[1], "gone").await;
    let path = format!("{}?w=3", key_path("gone"));
    let deleted = clients[1]
        .request(
            Method::DELETE,
            &path,
            &[(chorus::api::CONTEXT_HEADER, ctx.as_str())],
            Bytes::new(),
        )
        .await
        .expect("delete");
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    for key in ["doc/1", "gone"] {
        let replies = [
            replica(&clients[0], key).await,
            replica(&clients[1], key).await,
            replica(&clients[2], key).await,
        ];
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r.status, StatusCode::OK, "{key} on n{}", i + 1);
            assert_eq!(node_header(r), format!("n{}", i + 1));
            assert_eq!(r.body, replies[0].body, "{key}: n{} differs from n1", i + 1);
        }
        let body = replies[0].json().expect("json");
        assert_eq!(body["key"], key);
        assert_eq!(body["siblings"].as_array().map(Vec::len), Some(1), "{body}");
        assert!(
            body["context"].as_array().is_some_and(|c| !c.is_empty()),
            "{body}"
        );
        assert!(
            body["siblings"][0]["dot"]["counter"].as_u64().is_some(),
            "{body}"
        );
    }
    let doc = replica(&clients[2], "doc/1").await.json().expect("json");
    assert_eq!(
        doc["siblings"][0]["value"],
        serde_json::json!({"a": [true, null], "b": 1})
    );
    let gone = replica(&clients[2], "gone").await.json().expect("json");
    assert_eq!(gone["siblings"][0]["deleted"], true, "{gone}");

    // A write n3 misses: n3 still holds the old set, n1 and n2 the new one.
    cluster.stop(2).await;
    let ctx = common::read_context(&clients[0], "doc/1").await;
    let path = format!("{}?w=2", key_path("doc/1"));
    let headers = [
        ("content-type", "application/json"),
        (chorus::api::CONTEXT_HEADER, ctx.as_str()),
    ];
    let reply = clients[0]
        .request(Method::PUT, &path, &headers, Bytes::from_static(b"2"))
        .await
        .expect("put");
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let fresh = replica(&cluster.client(0), "doc/1").await;
    assert_eq!(replica(&clients[1], "doc/1").await.body, fresh.body);
    cluster.restart(2).await;
    let lagging = replica(&cluster.client(2), "doc/1").await;
    assert_ne!(
        lagging.body, fresh.body,
        "n3 missed the write: its own set must differ"
    );

    // Nothing stored: 404; a wrong method: 405; an over-long key: 400-class.
    let missing = replica(&clients[0], "never-written").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(common::error_code(&missing), "not_found");
    let post = clients[0]
        .request(Method::POST, "/admin/replica/doc", &[], Bytes::new())
        .await
        .expect("post");
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let long = replica(&clients[0], &"k".repeat(5000)).await;
    assert!(long.status.is_client_error(), "{}", long.status);
    assert!(!common::error_code(&long).is_empty());
}
