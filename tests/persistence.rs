//! A node that stops and starts again on the same data directory keeps
//! every key, every sibling and its identity.

mod common;

use chorus::node::Node;
use common::TestNode;
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn data_and_siblings_survive_a_restart() {
    let t = TestNode::start().await;
    for i in 0..200 {
        let reply = t
            .client
            .put(&format!("key-{i}"), format!("{{\"n\":{i}}}"), None)
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    t.client.put("twins", "1", None).await.expect("put");
    t.client.put("twins", "2", None).await.expect("put");
    t.client.put("gone", "1", None).await.expect("put");
    let ctx = common::read_context(&t.client, "gone").await;
    t.client.delete("gone", Some(&ctx)).await.expect("delete");
    let before = t.client.get("twins").await.expect("get");

    let TestNode { node, dir, .. } = t;
    node.shutdown().await;
    let config = common::config(dir.path());
    let node = Node::start(&config, "n1").await.expect("restart");
    let client = chorus::client::Client::new(&node.url());

    for i in 0..200 {
        let got = client.get(&format!("key-{i}")).await.expect("get");
        assert_eq!(got.json(), Some(json!({"n": i})), "key-{i} lost in restart");
    }
    let twins = client.get("twins").await.expect("get");
    assert_eq!(twins.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(twins.json(), before.json());
    assert_eq!(
        twins.context(),
        before.context(),
        "the context changed across a restart"
    );
    let gone = client.get("gone").await.expect("get");
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.context().is_some(), "the tombstone was lost");

    // New writes after the restart never reuse a dot: a write with the old
    // context still leaves both old siblings in place next to the new one.
    let stale = before.context().expect("ctx").to_string();
    client.put("twins", "3", Some(&stale)).await.expect("put");
    let blind = client.put("twins", "4", None).await.expect("put");
    assert_eq!(blind.status, StatusCode::NO_CONTENT);
    let after = client.get("twins").await.expect("get");
    let siblings = after.json().expect("json")["siblings"]
        .as_array()
        .map(Vec::len);
    assert_eq!(
        siblings,
        Some(2),
        "3 superseded 1 and 2; 4 is concurrent with 3"
    );
    node.shutdown().await;
}
