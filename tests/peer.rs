//! The peer protocol between live nodes over real HTTP on loopback: a
//! typed call gets its typed reply, and a service or version the receiver
//! does not speak is refused with a reply the sender understands, while
//! the node keeps serving.

mod common;

use chorus::membership::liveness::Beat;
use chorus::membership::rpc::Beats;
use chorus::peer::{Rpc, Service};
use common::cluster::TestCluster;
use common::peer_rpc;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

/// A service no node has.
#[derive(Serialize, Deserialize)]
struct Nothing;

impl Rpc for Nothing {
    const SERVICE: Service = Service::new("test.nothing", 1);
    type Reply = ();
}

/// Heartbeats at a version no node speaks.
#[derive(Serialize, Deserialize)]
struct FutureBeats(Vec<Beat>);

impl Rpc for FutureBeats {
    const SERVICE: Service = Service::new("membership.beats", 99);
    type Reply = Vec<Beat>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_or_version_gets_a_typed_refusal() {
    let cluster = TestCluster::start(2, 0, 2).await;
    let n1 = cluster.node(0);
    let n2 = cluster.node(1).cluster().me().to_string();
    let transport = n1.cluster().transport();

    // A known service answers with its own reply type.
    let Beats(table) = transport
        .rpc(&n2, Beats(Vec::new()))
        .await
        .expect("a heartbeat table");
    assert!(
        table.iter().any(|b| b.node == n2),
        "n2's table names n2: {table:?}"
    );

    let e = transport
        .rpc(&n2, Nothing)
        .await
        .expect_err("no such service");
    assert_eq!(e.code(), "unknown_service", "{e}");
    // The receiver answered 501; a client whose request met this would
    // get a 503: what a peer refuses is no fault of the client's request.
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("test.nothing"), "{e}");

    let e = transport
        .rpc(&n2, FutureBeats(Vec::new()))
        .await
        .expect_err("no such version");
    assert_eq!(e.code(), "unsupported_version", "{e}");
    assert!(e.to_string().contains("speaks version 1"), "{e}");

    // Only a join may be sent to an address (signed for any receiver).
    let addr = cluster.node(1).addr.to_string();
    let e = transport
        .rpc_addr(&addr, Beats(Vec::new()))
        .await
        .expect_err("heartbeats signed for anyone");
    assert!(e.to_string().contains("only a join"), "{e}");

    // A header that names no service is a 400 that says why.
    let client = cluster.client(1);
    let reply = client
        .request(
            Method::POST,
            "/peer",
            &[(chorus::peer::rpc::RPC_HEADER, "no version")],
            bytes::Bytes::new(),
        )
        .await
        .expect("post");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json().expect("a JSON error");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-chorus-rpc")),
        "{body}"
    );

    // The node keeps serving, peers and clients alike.
    let Beats(_) = peer_rpc(&client, Beats(Vec::new()))
        .await
        .expect("heartbeats still answered");
    let put = client.put("k", "1", None).await.expect("put");
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let get = client.get("k").await.expect("get");
    assert_eq!(get.status, StatusCode::OK);
}
