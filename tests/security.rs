//! Security against a live node over real HTTP on loopback: peer requests
//! with a wrong, missing or replayed authentication are refused before
//! anything is applied; client tokens guard every route by scope; and the
//! connection, request and body limits hold under slow and oversize
//! floods while a normal client keeps working; a context the cluster did
//! not seal is refused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chorus::api::ROUTES;
use chorus::config::Config;
use chorus::security::peer::Signer;
use chorus::security::peer_auth::AUTH_HEADER;
use chorus::security::tokens::Scope;
use chorus::version::{Actor, Content, Context, Dot, SiblingSet};
use common::{MERGE, TestNode, error_code, forged_auth, metric, peer_head, raw_exchange_closed};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A merge of `value` into `key`, as another node would send it.
fn merge(key: &str, value: &str) -> Vec<u8> {
    let mut set = SiblingSet::new();
    let dot = Dot::new(Actor::new(String::from("intruder"), 1), 1);
    set.write(
        &Context::default(),
        dot,
        Content::Value(Bytes::from(value.to_string())),
    );
    let merge = chorus::replica::rpc::v1::Merge {
        key: key.into(),
        set,
    };
    chorus::peer::Frame::of(&merge)
        .expect("encode")
        .body
        .to_vec()
}

async fn post_peer(t: &TestNode, auth: Option<&str>, body: Vec<u8>) -> chorus::client::Reply {
    let mut headers: Vec<(&str, &str)> = auth.map(|a| (AUTH_HEADER, a)).into_iter().collect();
    headers.push((chorus::peer::rpc::RPC_HEADER, MERGE));
    t.client
        .request(Method::POST, "/peer", &headers, Bytes::from(body))
        .await
        .expect("peer request")
}

#[tokio::test]
async fn peer_requests_without_the_cluster_secret_are_refused_and_apply_nothing() {
    let t = TestNode::start().await;
    let wrong = Signer::new(
        b"a-different-secret-of-at-least-32-bytes",
        "n9",
        1,
        chorus::clock::Clock::system(),
    );
    let body = merge("guarded", "\"forged\"");

    let missing = post_peer(&t, None, body.clone()).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&missing), "peer_unauthenticated");
    let forged = post_peer(&t, Some(&wrong.sign("n1", MERGE, &body)), body.clone()).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(
        String::from_utf8_lossy(&forged.body).contains("MAC"),
        "{:?}",
        forged.body
    );
    // A right MAC over other bytes: the body was changed on the way (its
    // length too: refused before it is read).
    let other = merge("guarded", "\"other\"");
    let moved = post_peer(
        &t,
        Some(&common::test_signer().sign("n1", MERGE, &other)),
        body.clone(),
    )
    .await;
    assert_eq!(moved.status, StatusCode::UNAUTHORIZED);

    assert_eq!(
        t.client.get("guarded").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        metric(
            &t.client,
            "chorus_peer_auth_refused_total{reason=\"missing\"}"
        )
        .await,
        1.0
    );
    // The same length, other bytes: refused once read, unapplied.
    let mut same_length = body.clone();
    let last = same_length.len() - 2;
    same_length[last] ^= 1;
    let changed = post_peer(
        &t,
        Some(&common::test_signer().sign("n1", MERGE, &body)),
        same_length,
    )
    .await;
    assert_eq!(changed.status, StatusCode::UNAUTHORIZED);
    // Metrics are the process's: other tests here forge MACs too, but only
    // this one changes bodies.
    let counted = |reason: &str| format!("chorus_peer_auth_refused_total{{reason=\"{reason}\"}}");
    assert!(metric(&t.client, &counted("bad_mac")).await >= 1.0);
    assert_eq!(metric(&t.client, &counted("bad_body")).await, 2.0);

    // The same request signed with the cluster's secret is applied: the
    // refusals above were for the authentication alone.
    let signed = post_peer(
        &t,
        Some(&common::test_signer().sign("n1", MERGE, &body)),
        body,
    )
    .await;
    assert_eq!(signed.status, StatusCode::OK);
    let read = t.client.get("guarded").await.expect("get");
    assert_eq!(
        (read.status, read.body.as_ref()),
        (StatusCode::OK, b"\"forged\"".as_ref())
    );
}

#[tokio::test]
async fn a_replayed_peer_request_is_refused() {
    let t = TestNode::start().await;
    let body = merge("replayed", "\"once\"");
    let auth = common::test_signer().sign("n1", MERGE, &body);
    assert_eq!(
        post_peer(&t, Some(&auth), body.clone()).await.status,
        StatusCode::OK
    );
    let again = post_peer(&t, Some(&auth), body).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(
        String::from_utf8_lossy(&again.body).contains("replay"),
        "{:?}",
        again.body
    );
    assert_eq!(
        metric(
            &t.client,
            "chorus_peer_auth_refused_total{reason=\"replayed\"}"
        )
        .await,
        1.0
    );
}

/// The replay windows live in memory: a request captured before a node
/// restarts, replayed to its next life (same id, same disk), is refused
/// because it was signed before that life started (less the grace for
/// requests in flight at the start), and nothing it carries is applied.
#[tokio::test]
async fn a_request_replayed_to_a_restarted_node_is_refused() {
    let t = TestNode::start().await;
    let body = merge("before-restart", "\"once\"");
    let auth = common::test_signer().sign("n1", MERGE, &body);
    assert_eq!(
        post_peer(&t, Some(&auth), body.clone()).await.status,
        StatusCode::OK
    );
    let TestNode { node, dir, .. } = t;
    node.shutdown().await;
    let grace = chorus::security::peer::START_GRACE_MS;
    tokio::time::sleep(Duration::from_millis(grace + 500)).await;
    let mut config = common::config(dir.path());
    config.nodes[0].listen = "127.0.0.1:0".into();
    let node = chorus::node::Node::start(&config, "n1")
        .await
        .expect("restarts");
    let t = TestNode {
        client: chorus::client::Client::new(&node.url()),
        contract: common::ContractCheck::of(&node),
        node,
        dir,
    };
    let again = post_peer(&t, Some(&auth), body).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{:?}", again.body);
    assert!(
        String::from_utf8_lossy(&again.body).contains("before this node started"),
        "{:?}",
        again.body
    );
    assert_eq!(
        metric(
            &t.client,
            "chorus_peer_auth_refused_total{reason=\"before_start\"}"
        )
        .await,
        1.0
    );
    // A request signed now is accepted: the node is not refusing everyone.
    let body = merge("after-restart", "\"fresh\"");
    let auth = common::test_signer().sign("n1", MERGE, &body);
    assert_eq!(
        post_peer(&t, Some(&auth), body).await.status,
        StatusCode::OK
    );
}

/// A request captured on its way to n2 and replayed to n1 (whose replay
/// window never saw it) is refused, and so is a merge signed for any
/// receiver: only a join, sent to an address, may be.
#[tokio::test]
async fn a_peer_request_signed_for_another_node_is_refused_and_applies_nothing() {
    let t = TestNode::start().await;
    let body = merge("elsewhere", "\"captured\"");
    let for_n2 = common::test_signer().sign("n2", MERGE, &body);
    let replayed = post_peer(&t, Some(&for_n2), body.clone()).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&replayed), "peer_unauthenticated");
    assert!(
        String::from_utf8_lossy(&replayed.body).contains("another node"),
        "{:?}",
        replayed.body
    );
    let for_any =
        common::test_signer().sign(chorus::security::peer_auth::ANY_RECEIVER, MERGE, &body);
    let anywhere = post_peer(&t, Some(&for_any), body.clone()).await;
    assert_eq!(anywhere.status, StatusCode::UNAUTHORIZED);
    assert!(
        String::from_utf8_lossy(&anywhere.body).contains("only a join"),
        "{:?}",
        anywhere.body
    );
    assert_eq!(
        t.client.get("elsewhere").await.expect("get").status,
        StatusCode::NOT_FOUND,
        "nothing of either was applied"
    );
    assert!(
        metric(
            &t.client,
            "chorus_peer_auth_refused_total{reason=\"misdirected\"}"
        )
        .await
            >= 1.0
    );
    // Signed for n1, the same merge is applied.
    let for_n1 = common::test_signer().sign("n1", MERGE, &body);
    assert_eq!(
        post_peer(&t, Some(&for_n1), body).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.client.get("elsewhere").await.expect("get").status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_node_beyond_loopback_refuses_to_start_without_a_real_secret_or_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let base = || {
        let mut c = Config::dev(1, 0, dir.path());
        // Not loopback: the check comes before the bind.
        c.nodes[0].listen = "10.255.255.1:7001".into();
        c
    };
    // (what the error must say, the secret; None: keep the dev secret).
    let cases: [(&str, Option<Option<&str>>); 4] = [
        ("no peer secret", Some(None)),
        ("bytes; it needs at least 32", Some(Some("short"))),
        ("the example's", Some(Some(chorus::config::EXAMPLE_SECRET))),
        ("without TLS", None),
    ];
    for (expected, secret) in cases {
        let mut config = base();
        if let Some(secret) = secret {
            config.security.peer_secret = secret.map(String::from);
        }
        let error = chorus::node::Node::start(&config, "n1")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(expected), "{expected}: {error}");
    }
    // On loopback the same configs start (with a warning).
    let mut config = base();
    config.nodes[0].listen = "127.0.0.1:0".into();
    config.security.peer_secret = None;
    let node = chorus::node::Node::start(&config, "n1")
        .await
        .expect("loopback starts");
    node.shutdown().await;
}

const APP: &str = "app-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef";
const MON: &str = "monitor-token-0123456789ab";

fn with_tokens(c: &mut Config) {
    let token = |name: &str, text: &str, scopes: &[Scope]| chorus::config::TokenConfig {
        name: name.into(),
        token: Some(text.into()),
        token_file: None,
        scopes: scopes.to_vec(),
    };
    c.security.tokens = vec![
        token("app", APP, &[Scope::Read, Scope::Write]),
        token("ops", OPS, &[Scope::Admin]),
        token("mon", MON, &[Scope::Monitor]),
    ];
}

/// Every (method, path) the node serves, with sample path parameters.
fn every_route() -> Vec<(Method, String)> {
    ROUTES
        .iter()
        .flat_map(|route| {
            let path = route.path.replace("{key}", "k").replace("{node}", "n1");
            route.operations.iter().map(move |op| {
                (
                    Method::from_bytes(op.method.as_bytes()).expect("method"),
                    path.clone(),
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn with_tokens_every_route_needs_one_with_its_scope() {
    let t = TestNode::start_with(|c| {
        with_tokens(c);
        c.security.open_routes = Vec::new();
    })
    .await;
    let ask = |method: Method, path: String, token: Option<&'static str>| {
        let client = t.client.clone();
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![("content-type", "application/json")];
            if let Some(auth) = &auth {
                headers.push(("authorization", auth.as_str()));
            }
            client
                .request(method, &path, &headers, Bytes::from_static(b"1"))
                .await
                .expect("request")
        }
    };
    let mut checked = 0;
    for (method, path) in every_route() {
        if path == "/peer" || path == "/admin/leave" {
            continue; // peers authenticate otherwise; leave would end the node
        }
        // A HEAD answer has the status and headers of a GET, no body.
        let code = |reply: &chorus::client::Reply, code: &'static str| match method {
            Method::HEAD => code.to_string(),
            _ => error_code(reply),
        };
        let none = ask(method.clone(), path.clone(), None).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(
            code(&none, "unauthenticated"),
            "unauthenticated",
            "{method} {path}"
        );
        assert!(
            none.headers.contains_key("www-authenticate"),
            "{method} {path}"
        );
        let unknown = ask(
            method.clone(),
            path.clone(),
            Some("not-a-token-of-this-cluster"),
        )
        .await;
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "{method} {path}");

        let needs = if path == "/health" || path == "/metrics" {
            MON
        } else if path == "/cluster" || path.starts_with("/admin/") {
            OPS
        } else {
            APP
        };
        for other in [APP, OPS, MON].into_iter().filter(|t| *t != needs) {
            let wrong = ask(method.clone(), path.clone(), Some(other)).await;
            assert_eq!(
                wrong.status,
                StatusCode::FORBIDDEN,
                "{method} {path} with {other}"
            );
            assert_eq!(code(&wrong, "forbidden"), "forbidden");
        }
        let right = ask(method.clone(), path.clone(), Some(needs)).await;
        assert!(
            right.status != StatusCode::UNAUTHORIZED && right.status != StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            right.status
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} routes checked");
    // /admin/leave too: refused without a token (and so not started).
    let leave = ask(Method::POST, "/admin/leave".into(), Some(APP)).await;
    assert_eq!(leave.status, StatusCode::FORBIDDEN);
    // The writes above were made: the key reads back (as siblings, since
    // each PUT was blind).
    let read = ask(Method::GET, "/kv/k".into(), Some(APP)).await;
    assert_eq!(read.status, StatusCode::MULTIPLE_CHOICES);
}

#[tokio::test]
async fn health_and_metrics_are_open_by_default_when_tokens_guard_the_rest() {
    let t = TestNode::start_with(with_tokens).await;
    for path in ["/health", "/metrics"] {
        let reply = t
            .client
            .request(Method::GET, path, &[], Bytes::new())
            .await
            .expect("get");
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    assert_eq!(
        t.client.get("k").await.expect("get").status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        metric(
            &t.client,
            "chorus_client_auth_refused_total{reason=\"unauthenticated\"}"
        )
        .await,
        1.0
    );
}

/// Sends the head of a PUT whose body never comes: the request holds its
/// place until the body timeout.
async fn stalled_put(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"PUT /kv/stalled HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n")
        .await
        .expect("send");
    stream
}

#[tokio::test]
async fn requests_beyond_max_inflight_get_503_with_retry_after() {
    let t = TestNode::start_with(|c| {
        c.limits.max_inflight = 2;
        c.limits.body_timeout_ms = 3_000;
    })
    .await;
    let _held: Vec<TcpStream> =
        futures_util::future::join_all((0..2).map(|_| stalled_put(t.node.addr))).await;
    // The stalled requests reach the handler and take their permits.
    let mut refused = None;
    for _ in 0..100 {
        let reply = t.client.get("k").await.expect("get");
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a third request in flight was refused");
    assert_eq!(error_code(&refused), "overloaded");
    assert_eq!(
        refused.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(b"1".as_ref())
    );
    // Peer requests are never refused for load.
    let body = merge("peer-under-load", "1");
    let peer = post_peer(
        &t,
        Some(&common::test_signer().sign("n1", MERGE, &body)),
        body,
    )
    .await;
    assert_eq!(peer.status, StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_and_are_closed() {
    let t = TestNode::start_with(|c| c.limits.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(t.node.addr).await.expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let (answer, closed) = raw_exchange_closed(
        t.node.addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("overloaded"), "{answer}");
    assert!(closed, "the connection over the limit was left open");
    drop(held);
}

/// Reads until the server closes the connection (or `wait` passes).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_connections_are_closed_while_a_normal_client_works() {
    let t = TestNode::start_with(|c| c.limits.header_timeout_ms = 1_000).await;
    let addr = t.node.addr;
    // 900 send a request head a byte at a time, slower than the timeout
    // allows; 100 send nothing at all.
    let slow: Vec<_> = (0..1000)
        .map(|i| {
            tokio::spawn(async move {
                // In waves of 100, so the listen backlog (1,024) is never
                // full: an overflowing backlog drops handshakes the client
                // already thinks complete, which tests the kernel, not us.
                tokio::time::sleep(Duration::from_millis(20 * (i / 100) as u64)).await;
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                if i < 900 {
                    for byte in b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: "
                        .iter()
                        .take(3)
                    {
                        if stream.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                // Given the header timeout and then some, the server has hung up.
                closed_within(&mut stream, Duration::from_secs(10)).await
            })
        })
        .collect();
    // Meanwhile a normal client writes and reads.
    for i in 0..20 {
        let key = format!("normal-{i}");
        let put = t.client.put(&key, "1", None).await.expect("put");
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        assert_eq!(
            t.client.get(&key).await.expect("get").status,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut open = 0;
    for handle in slow {
        if !handle.await.expect("slow client") {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 1000 slow connections were still open after 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_oversize_bodies_leaves_memory_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let (config, url) =
        common::processes::one_node_config(dir.path(), "max_value_bytes = 65536", "");
    let mut child = common::processes::serve(&config, "n1").await;
    let pid = child.id().expect("pid");
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().expect("addr");
    let before = common::processes::rss(pid);

    // 400 clients each stream 4 MiB chunked (64 times the value limit):
    // 1.6 GB offered in all.
    let floods: Vec<_> = (0..400)
        .map(|i| {
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    return;
                };
                let head = format!(
                    "PUT /kv/flood-{i} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = [b' '; 65536];
                for _ in 0..64 {
                    let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
                    piece.extend_from_slice(&chunk);
                    piece.extend_from_slice(b"\r\n");
                    if stream.write_all(&piece).await.is_err() {
                        return; // refused and closed: as it should be
                    }
                }
            })
        })
        .collect();
    let mut peak = before;
    let sampler = async {
        loop {
            peak = peak.max(common::processes::rss(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = futures_util::future::join_all(floods) => {}
        _ = sampler => {}
    }
    peak = peak.max(common::processes::rss(pid));
    // The node still serves.
    let client = chorus::client::Client::new(&url);
    assert_eq!(
        client
            .put("after-flood", "1", None)
            .await
            .expect("put")
            .status,
        StatusCode::NO_CONTENT
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    // At most max_value_bytes per request in flight, 400 of them, is 26 MB;
    // buffering the offered bodies would be 1.6 GB.
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 200 * 1024 * 1024,
        "RSS grew by {} MiB under the flood (from {} MiB)",
        grown >> 20,
        before >> 20
    );
}

/// A context claiming writes of another node far ahead would make that
/// node's later writes look already seen, and they would be dropped: the
/// node refuses any context it did not seal, and writes nothing.
#[tokio::test]
async fn a_forged_or_changed_context_is_refused_and_nothing_is_written() {
    use base64::Engine;
    use chorus::version::context::Seal;
    let node = TestNode::start().await;
    let first = node.client.put("k", "\"v1\"", None).await.expect("put");
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    let genuine = first
        .context()
        .expect("a write returns its context")
        .to_string();
    let name = common::config(node.dir.path()).cluster.name;
    let ahead = Context::default().after_write(Dot::new(Actor::new("n1-other", 1), 1_000_000));
    let guessed = Seal::new(&name, Some(b"a guess at the secret, 32 bytes long"));
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut flipped = engine.decode(&genuine).expect("base64url");
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for forged in [ahead.encode(&guessed, "k"), engine.encode(&flipped)] {
        let reply = node
            .client
            .put("k", "\"v2\"", Some(&forged))
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&reply), "malformed_context");
        assert!(String::from_utf8_lossy(&reply.body).contains("seal"));
    }
    let read = node.client.get("k").await.expect("get");
    assert_eq!(&read.body[..], b"\"v1\"", "no forged write was applied");
    // The genuine context still works.
    let second = node
        .client
        .put("k", "\"v3\"", Some(&genuine))
        .await
        .expect("put");
    assert_eq!(second.status, StatusCode::NO_CONTENT);
}

/// Hole 4 of issue 19: a context is bound to the key it came from. One
/// node's counter is shared by all its keys, so the vector read from key
/// `x` (n1 up to 4, say) claims dots of key `y` (n1:1 and n1:2) the client
/// never saw there; applied to `y` it deleted both of `y`'s siblings.
/// Now it is a 400 `context_key_mismatch` and `y` keeps both.
#[tokio::test]
async fn a_context_of_another_key_is_refused_and_deletes_nothing() {
    let node = TestNode::start().await;
    let c = &node.client;
    for value in ["\"y1\"", "\"y2\""] {
        let reply = c.put("y", value, None).await.expect("put y");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    for value in ["\"x1\"", "\"x2\""] {
        let reply = c.put("x", value, None).await.expect("put x");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let x = c.get("x").await.expect("get x");
    let x_context = x.context().expect("x has a context").to_string();
    for (method, body) in [(Method::PUT, "\"from x\""), (Method::DELETE, "")] {
        let reply = c
            .request(
                method.clone(),
                "/kv/y",
                &[
                    ("content-type", "application/json"),
                    (chorus::api::CONTEXT_HEADER, x_context.as_str()),
                ],
                Bytes::from(body),
            )
            .await
            .expect("write y");
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method}");
        assert_eq!(error_code(&reply), "context_key_mismatch", "{method}");
        assert!(
            String::from_utf8_lossy(&reply.body).contains("another key"),
            "the error says why: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    // A session read of y with x's context is refused the same way.
    let read = c
        .request(
            Method::GET,
            "/kv/y",
            &[(chorus::api::CONTEXT_HEADER, x_context.as_str())],
            Bytes::new(),
        )
        .await
        .expect("get y");
    assert_eq!(read.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&read), "context_key_mismatch");
    let y = c.get("y").await.expect("get y");
    assert_eq!(y.status, StatusCode::MULTIPLE_CHOICES, "both siblings stay");
    let body = String::from_utf8_lossy(&y.body);
    assert!(body.contains("y1") && body.contains("y2"), "{body}");
    // x's context still works on x.
    let reply = c.put("x", "\"x3\"", Some(&x_context)).await.expect("put x");
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(&c.get("x").await.expect("get x").body[..], b"\"x3\"");
}

/// Hole 5 of issue 19: `?returnbody=true` answers with the key's siblings,
/// other writers' values among them, so it needs the `read` scope as well
/// as `write`; a write-only token is refused before anything is written.
#[tokio::test]
async fn returnbody_needs_the_read_scope_too() {
    const WRITER: &str = "writer-token-0123456789abc";
    let t = TestNode::start_with(|c| {
        with_tokens(c);
        c.security.tokens.push(chorus::config::TokenConfig {
            name: "writer".into(),
            token: Some(WRITER.into()),
            token_file: None,
            scopes: vec![Scope::Write],
        });
    })
    .await;
    let put = |token: &'static str, query: &'static str, value: &'static str| {
        let client = t.client.clone();
        async move {
            let auth = format!("Bearer {token}");
            let headers = [
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ];
            client
                .request(
                    Method::PUT,
                    &format!("/kv/shared{query}"),
                    &headers,
                    Bytes::from(value),
                )
                .await
                .expect("put")
        }
    };
    // Another application's value.
    assert_eq!(
        put(APP, "", "\"secret\"").await.status,
        StatusCode::NO_CONTENT
    );
    for query in ["?returnbody=true", "?returnbody=", "?returnbody=yes"] {
        let refused = put(WRITER, query, "\"mine\"").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{query}");
        assert_eq!(error_code(&refused), "forbidden");
        let body = String::from_utf8_lossy(&refused.body);
        assert!(body.contains("`read`"), "names the scope: {body}");
        assert!(!body.contains("secret"), "{body}");
    }
    // Without returnbody, or with returnbody=false, writing is allowed.
    assert_eq!(
        put(WRITER, "", "\"mine\"").await.status,
        StatusCode::NO_CONTENT
    );
    let off = put(WRITER, "?returnbody=false", "\"mine2\"").await;
    assert_eq!(off.status, StatusCode::NO_CONTENT);
    // With both scopes the body comes back.
    let both = put(APP, "?returnbody=true", "\"again\"").await;
    // 300: the blind writes above left siblings beside it.
    assert_eq!(both.status, StatusCode::MULTIPLE_CHOICES);
    assert!(String::from_utf8_lossy(&both.body).contains("again"));
}

/// The credentials of a peer request are checked from its headers: a
/// stranger claiming 60 MiB who sends 1 MiB and stalls is refused at once,
/// not after the body timeout with its body read.
#[tokio::test]
async fn an_unauthenticated_peer_body_is_refused_before_it_is_read() {
    let t = TestNode::start_with(|c| c.limits.body_timeout_ms = 20_000).await;
    let len = 60 << 20;
    let mut stream = TcpStream::connect(t.node.addr).await.expect("connect");
    stream
        .write_all(peer_head(&forged_auth(len), len).as_bytes())
        .await
        .expect("send the head");
    // The server may answer and close while this is still being sent.
    let _ = stream.write_all(&vec![0u8; 1 << 20]).await;
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut answer))
        .await
        .expect("an answer within a second, not after the body timeout")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("peer_unauthenticated"), "{answer}");
    assert!(answer.contains("MAC"), "{answer}");
}

/// Peer requests have their own limit: beyond `max_peer_inflight` a peer
/// request is a 503 `overloaded` naming the key, while clients are served.
#[tokio::test]
async fn peer_requests_beyond_max_peer_inflight_get_a_typed_overloaded() {
    let t = TestNode::start_with(|c| {
        c.limits.max_peer_inflight = 1;
        c.limits.body_timeout_ms = 5_000;
    })
    .await;
    // A signed request whose body stalls holds the one place.
    let body = merge("held", "1");
    let auth = common::test_signer().sign("n1", MERGE, &body);
    let mut held = TcpStream::connect(t.node.addr).await.expect("connect");
    held.write_all(peer_head(&auth, body.len() as u64).as_bytes())
        .await
        .expect("send");
    held.write_all(&body[..body.len() / 2]).await.expect("send");
    let mut refused = None;
    for _ in 0..100 {
        let body = merge("second", "1");
        let auth = common::test_signer().sign("n1", MERGE, &body);
        let reply = post_peer(&t, Some(&auth), body).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a second peer request in flight was refused");
    assert_eq!(error_code(&refused), "overloaded");
    assert!(
        String::from_utf8_lossy(&refused.body).contains("limits.max_peer_inflight"),
        "{:?}",
        refused.body
    );
    // Clients are not held up by peers.
    let put = t.client.put("client", "1", None).await.expect("put");
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    // The held request, once whole, is applied.
    held.write_all(&body[body.len() / 2..]).await.expect("send");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), held.read(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );
}

#[tokio::test]
async fn each_op_of_a_batch_needs_its_own_scope() {
    const READER: &str = "reader-token-0123456789abc";
    const WRITER: &str = "writer-token-0123456789abc";
    let t = TestNode::start_with(|c| {
        with_tokens(c);
        for (name, token, scope) in [
            ("reader", READER, Scope::Read),
            ("writer", WRITER, Scope::Write),
        ] {
            c.security.tokens.push(chorus::config::TokenConfig {
                name: name.into(),
                token: Some(token.into()),
                token_file: None,
                scopes: vec![scope],
            });
        }
    })
    .await;
    let batch = |token: &'static str| {
        let client = t.client.clone();
        async move {
            let auth = format!("Bearer {token}");
            let headers = [
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ];
            let body = r#"{"ops":[{"op":"put","key":"b","value":1},{"op":"get","key":"b"}]}"#;
            client
                .request(
                    Method::POST,
                    "/batch",
                    &headers,
                    Bytes::from_static(body.as_bytes()),
                )
                .await
                .expect("batch")
        }
    };
    let statuses = |reply: &chorus::client::Reply| -> Vec<(u64, String)> {
        let json = reply.json().expect("json");
        json["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                (
                    r["status"].as_u64().unwrap_or(0),
                    r["error"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    // A writer's get fails alone; its put is made.
    let written = batch(WRITER).await;
    assert_eq!(written.status, StatusCode::OK);
    assert_eq!(statuses(&written)[0], (204, String::new()));
    assert_eq!(statuses(&written)[1], (403, "forbidden".to_string()));
    // A reader's put fails alone; its get sees the writer's value.
    let read = batch(READER).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(statuses(&read)[0], (403, "forbidden".to_string()));
    assert_eq!(statuses(&read)[1], (200, String::new()));
    // A token that can do neither is refused whole (no token at all is a
    // 401: with_tokens_every_route_needs_one_with_its_scope).
    let monitor = batch(MON).await;
    assert_eq!(monitor.status, StatusCode::FORBIDDEN);
}
