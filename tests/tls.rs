//! TLS over real sockets, with certificates minted at test time: a
//! three-node cluster serving clients and peers over TLS; plain TCP, an
//! expired certificate and a certificate from a foreign CA all refused
//! before a byte of the request is applied; the node's own checks of its
//! files at start; the CLI over https.

mod common;

use std::time::Duration;

use chorus::client::Client;
use chorus::config::{Config, TlsConfig};
use chorus::node::{Node, Start};
use chorus::security::tls::Tls;
use common::pki::{Ca, Leaf, trusting_anything};
use http::StatusCode;
use tokio::net::TcpListener;

/// What the third node's certificate is like.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Third {
    Good,
    Expired,
    /// Signed by a CA the cluster does not trust (an impostor).
    Foreign,
}

struct TlsCluster {
    nodes: Vec<Node>,
    /// The cluster CA's PEM: what clients trust.
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsCluster {
    /// Three nodes, N = 3, every one with `[security.tls]`; the first two
    /// with good certificates from the cluster CA, the third as `third`.
    async fn start(third: Third) -> TlsCluster {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Ca::new(dir.path(), "cluster-ca");
        let foreign = Ca::new(dir.path(), "foreign-ca");
        let mut listeners = Vec::new();
        let mut config = Config::dev(1, 0, dir.path());
        config.nodes.clear();
        for i in 0..3 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            config
                .nodes
                .push(common::cluster::node_config(dir.path(), i, &addr, true));
            listeners.push(listener);
        }
        config.cluster.n = 3;
        common::cluster::quick(&mut config);
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let tls = match (i, third) {
                (2, Third::Expired) => ca.leaf(dir.path(), &name, Leaf::Expired, &ca),
                (2, Third::Foreign) => foreign.leaf(dir.path(), &name, Leaf::Good, &foreign),
                _ => ca.leaf(dir.path(), &name, Leaf::Good, &ca),
            };
            let mut own = config.clone();
            own.security.tls = Some(tls);
            let start = Start {
                listener: Some(listener),
                ..Start::default()
            };
            let node = Node::start_with(&own, &name, start)
                .await
                .expect("node starts");
            nodes.push(node);
        }
        TlsCluster {
            nodes,
            ca: ca.pem.clone(),
            _dir: dir,
        }
    }

    /// Waits (at most 20 s) until every node sees the two others up.
    async fn await_up(&self, up: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for i in 0..self.nodes.len() {
                seen.push(
                    common::metric(&self.client(i), "chorus_members_liveness{liveness=\"up\"}")
                        .await,
                );
            }
            if seen.iter().all(|&n| n >= up as f64) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "members up as seen by each node: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn client(&self, i: usize) -> Client {
        Client::with_ca(&self.nodes[i].url(), &self.ca).expect("client")
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

/// The status of `GET /admin/replica/{key}`: 200 when the node holds its
/// own copy of `key`, 404 when not.
async fn own_copy(client: &Client, key: &str) -> StatusCode {
    client
        .request(
            http::Method::GET,
            &format!("/admin/replica/{key}"),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .expect("replica view")
        .status
}

#[tokio::test]
async fn a_tls_cluster_serves_clients_and_replicates_over_tls() {
    let cluster = TlsCluster::start(Third::Good).await;
    assert!(cluster.nodes[0].url().starts_with("https://"));
    cluster.await_up(3).await;
    let client = cluster.client(0);
    let put = client
        .request(
            http::Method::PUT,
            "/kv/over-tls?w=all",
            &[("content-type", "application/json")],
            bytes::Bytes::from_static(b"\"secret\""),
        )
        .await
        .expect("put over TLS");
    // w = all: the two peers took the write over TLS, signed.
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    for i in 1..3 {
        assert_eq!(
            own_copy(&cluster.client(i), "over-tls").await,
            StatusCode::OK,
            "n{} holds the write",
            i + 1
        );
    }
    // Once n1 has heard that its peers speak streams, replica reads travel
    // on a stream, opened over TLS (HTTP/1.1 upgraded) and keyed.
    let transport = cluster.nodes[0].cluster().transport();
    let n2 = cluster.nodes[1].cluster().me().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while transport.protocol_with(&n2) < chorus::peer::stream::STREAM_PROTOCOL {
        assert!(
            std::time::Instant::now() < deadline,
            "n2's protocol unknown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = chorus::replica::rpc::Read {
        key: "over-tls".into(),
    };
    let held = transport
        .rpc(&n2, read)
        .await
        .expect("a read on the stream");
    assert!(held.is_some(), "n2's copy, read over its stream");
    // A client that does not trust the cluster CA refuses the node.
    let error = Client::new(&cluster.nodes[0].url())
        .get("over-tls")
        .await
        .expect_err("an unknown issuer is refused");
    assert!(
        error.to_string().to_lowercase().contains("unknownissuer"),
        "{error}"
    );
    // The CLI reaches it over https with CHORUS_CA.
    let out = tokio::process::Command::new(common::chorus_bin())
        .args(["get", "over-tls", "--url", &cluster.nodes[1].url()])
        .env(chorus::client::CA_ENV, &cluster.ca)
        .output()
        .await
        .expect("run chorus get");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("secret"),
        "{out:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn plain_tcp_to_a_tls_port_is_closed_unanswered_and_applies_nothing() {
    let cluster = TlsCluster::start(Third::Good).await;
    let addr = cluster.nodes[0].addr;
    let body = "\"plain\"";
    let request = format!(
        "PUT /kv/plain HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (answer, closed) =
        common::raw_exchange_closed(addr, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(closed, "the node closes a connection that is not TLS");
    assert!(
        !answer.contains("HTTP/1.1"),
        "no HTTP answer in the clear: {answer:?}"
    );
    // A plain http:// client fails the same way.
    let plain = Client::new(&format!("http://{addr}"));
    assert!(plain.get("plain").await.is_err());
    let client = cluster.client(0);
    for i in 0..3 {
        assert_eq!(
            own_copy(&cluster.client(i), "plain").await,
            StatusCode::NOT_FOUND,
            "n{} applied nothing",
            i + 1
        );
    }
    assert!(
        common::metric(
            &client,
            "chorus_tls_handshakes_failed_total{reason=\"failed\"}"
        )
        .await
            >= 2.0
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_starts_its_handshake_is_closed_within_the_header_timeout() {
    let cluster = TlsCluster::start(Third::Good).await;
    // The default header timeout is 10 s; nothing is sent.
    let (_, closed) =
        common::raw_exchange_closed(cluster.nodes[0].addr, b"", Duration::from_secs(30)).await;
    assert!(closed, "a silent connection is closed");
    let timeouts = common::metric(
        &cluster.client(0),
        "chorus_tls_handshakes_failed_total{reason=\"timeout\"}",
    )
    .await;
    assert!(timeouts >= 1.0, "{timeouts}");
    cluster.shutdown().await;
}

/// Clients and peers both refuse the third node's certificate: a client
/// never sends it its request, and a write that needs it fails naming it.
async fn a_refused_certificate_gets_nothing(third: Third, why: &str) {
    let cluster = TlsCluster::start(third).await;
    let all = cluster
        .client(0)
        .request(
            http::Method::PUT,
            "/kv/needs-n3?w=all",
            &[("content-type", "application/json")],
            bytes::Bytes::from_static(b"\"all\""),
        )
        .await
        .expect("put");
    assert_eq!(all.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = String::from_utf8_lossy(&all.body).to_lowercase();
    assert!(body.contains("\"node\":\"n3\""), "{body}");
    // Whether this write called n3 or the failure detector already held it
    // down, the refusals show on n3: its peers abandoned their handshakes
    // (a client that trusts anything completes its own).
    let inside = trusting_anything(&cluster.nodes[2].url());
    let failed = "chorus_tls_handshakes_failed_total{reason=\"failed\"}";
    let by_peers = common::metric(&inside, failed).await;
    assert!(by_peers >= 1.0, "n3 saw {by_peers} failed handshakes");
    // A client refuses n3 too, before sending its request.
    let error = cluster
        .client(2)
        .put("to-n3", "\"never\"", None)
        .await
        .expect_err("the client refuses n3's certificate");
    assert!(error.to_string().to_lowercase().contains(why), "{error}");
    assert!(common::metric(&inside, failed).await > by_peers);
    assert_eq!(
        own_copy(&inside, "to-n3").await,
        StatusCode::NOT_FOUND,
        "n3 applied nothing"
    );
    // A quorum of the two good nodes still serves.
    let two = cluster
        .client(0)
        .put("two", "\"ok\"", None)
        .await
        .expect("put");
    assert_eq!(two.status, StatusCode::NO_CONTENT);
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_by_clients_and_peers() {
    a_refused_certificate_gets_nothing(Third::Expired, "expired").await;
}

#[tokio::test]
async fn a_certificate_from_a_foreign_ca_is_refused_by_clients_and_peers() {
    a_refused_certificate_gets_nothing(Third::Foreign, "unknownissuer").await;
}

#[test]
fn the_files_are_checked_at_start_and_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "cluster-ca");
    let foreign = Ca::new(dir.path(), "foreign-ca");
    let good = ca.leaf(dir.path(), "good", Leaf::Good, &ca);
    let load = |tls: &TlsConfig| Tls::load(tls).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(load(&good), Ok(()));
    let missing = TlsConfig {
        cert: dir.path().join("nope.crt"),
        ..good.clone()
    };
    assert!(load(&missing).unwrap_err().contains("security.tls.cert"));
    let other = ca.leaf(dir.path(), "other", Leaf::Good, &ca);
    let mismatched = TlsConfig {
        key: other.key.clone(),
        ..good.clone()
    };
    let error = load(&mismatched).unwrap_err();
    assert!(error.contains("security.tls.key"), "{error}");
    let not_a_ca = TlsConfig {
        ca: good.key.clone(),
        ..good.clone()
    };
    assert!(load(&not_a_ca).unwrap_err().contains("security.tls.ca"));
    // What peers would say of the node's own certificate.
    let own = |tls: &TlsConfig, host: &str| {
        Tls::load(tls)
            .expect("loads")
            .own_certificate_problem(host)
            .unwrap_or_default()
            .to_lowercase()
    };
    assert_eq!(own(&good, "127.0.0.1"), "");
    assert_eq!(own(&good, "localhost"), "");
    assert!(
        own(&good, "10.1.2.3").contains("not valid for"),
        "{}",
        own(&good, "10.1.2.3")
    );
    let expired = ca.leaf(dir.path(), "expired", Leaf::Expired, &ca);
    assert!(own(&expired, "127.0.0.1").contains("expired"));
    let impostor = TlsConfig {
        ca: ca.pem.clone(),
        ..foreign.leaf(dir.path(), "impostor", Leaf::Good, &foreign)
    };
    assert!(own(&impostor, "127.0.0.1").contains("unknownissuer"));
}
