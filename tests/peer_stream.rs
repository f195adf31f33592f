//! Peer streams (`peer::stream`): client writes and reads between nodes
//! travel on one stream per peer, and a stream that is opened without
//! credentials, or carries a frame that is changed, too large or for a
//! service that may not travel on it, is refused without anything applied.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus::peer::stream::codec::{self, ACCEPTER, Message, OPENER, Seal};
use chorus::peer::stream::{NONCE_HEADER, SERVICE, UPGRADE};
use chorus::security::peer_auth::AUTH_HEADER;
use common::cluster::TestCluster;
use common::{TestNode, metric, node_id, series, test_signer};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WRITES: usize = 60;

/// Sixty writes at `w=all` through one node, one after the other, reach
/// both its peers on one stream each. Over HTTP/2 each of the 120 merges
/// would be a `POST /peer` of its own (one at a time, nothing to batch);
/// here every one comes on a stream, and only two streams are opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_between_nodes_travel_on_one_stream_per_peer() {
    let cluster = TestCluster::start(3, 0, 3).await;
    let n1 = cluster.client(0);
    // Until the heartbeats teach n1 its peers' protocol, it talks the
    // oldest, over HTTP/2.
    let transport = cluster.node(0).cluster().transport();
    let peers: Vec<String> = (1..3)
        .map(|i| cluster.node(i).cluster().me().to_string())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while peers
        .iter()
        .any(|p| transport.protocol_with(p) < chorus::peer::stream::STREAM_PROTOCOL)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "n1 never heard its peers' protocol"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // In-process nodes share one metrics registry: these are all nodes'
    // (the other tests of this file send no merges, and open their
    // streams by hand).
    let opened = || metric(&n1, "chorus_peer_streams_opened_total{side=\"opener\"}");
    let before = (merges(&n1).await, opened().await);
    for i in 0..WRITES {
        let path = format!("{}?w=all", chorus::client::key_path(&format!("k{i}")));
        let reply = n1
            .request(
                Method::PUT,
                &path,
                &[("content-type", "application/json")],
                Bytes::from_static(b"1"),
            )
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.json());
    }
    let after = merges(&n1).await;
    let shown = || series(&n1, &["chorus_peer_calls_total", "chorus_peer_streams"]);
    assert_eq!(
        (
            after.posted - before.0.posted,
            after.batched - before.0.batched
        ),
        (0.0, 0.0),
        "merges posted or batched over HTTP/2; {}",
        shown().await
    );
    assert!(
        after.streamed - before.0.streamed >= 2.0 * WRITES as f64,
        "{} merges on streams for {WRITES} writes at w=all to two peers; {}",
        after.streamed - before.0.streamed,
        shown().await
    );
    let opened = opened().await - before.1;
    assert!(
        (2.0..=4.0).contains(&opened),
        "{opened} streams opened for n1's two peers; {}",
        shown().await
    );
    // Every write is on every replica.
    for i in 1..3 {
        let reply = cluster.client(i).get("k0").await.expect("get");
        assert_eq!(reply.status, StatusCode::OK);
    }
}

/// The merges all nodes took in, by how they came.
struct Merges {
    posted: f64,
    batched: f64,
    streamed: f64,
}

async fn merges(client: &chorus::client::Client) -> Merges {
    let via =
        |via: &str| format!("chorus_peer_calls_total{{service=\"replica.merge\",via=\"{via}\"}}");
    Merges {
        posted: metric(client, &via("post")).await,
        batched: metric(client, &via("batch")).await,
        streamed: metric(client, &via("stream")).await,
    }
}

/// A stream opened by hand: the raw connection, the session key, the
/// seals of both directions, and whatever bytes came with the 101.
struct RawStream {
    tcp: TcpStream,
    out: Seal,
    into: Seal,
    buf: BytesMut,
}

/// Sends the opening request with `auth` and returns the status line and
/// headers of the answer, and the connection.
async fn open(node: &TestNode, auth: Option<&str>) -> (String, TcpStream, BytesMut) {
    let mut tcp = TcpStream::connect(node.node.addr).await.expect("connect");
    let mut head = format!(
        "POST /peer HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: {UPGRADE}\r\n{}: {SERVICE}\r\ncontent-length: 0\r\n",
        chorus::peer::rpc::RPC_HEADER
    );
    if let Some(auth) = auth {
        head.push_str(&format!("{AUTH_HEADER}: {auth}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.expect("send");
    let mut buf = BytesMut::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read_buf(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before answering: {buf:?}");
    };
    let answer = String::from_utf8_lossy(&buf.split_to(end)).into_owned();
    (answer, tcp, buf)
}

impl RawStream {
    async fn open(node: &TestNode) -> RawStream {
        let id = node_id(&node.client).await;
        let auth = test_signer().sign(&id, SERVICE, b"");
        let (answer, tcp, buf) = open(node, Some(&auth)).await;
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        let nonce = answer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{NONCE_HEADER}: ")))
            .expect("the receiver's nonce");
        let nonce: Vec<u8> = (0..nonce.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&nonce[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(nonce.len(), 16, "{answer}");
        let key = Some(test_signer().session_key(&auth, &nonce));
        RawStream {
            tcp,
            out: Seal::new(key, OPENER),
            into: Seal::new(key, ACCEPTER),
            buf,
        }
    }

    async fn send(&mut self, message: &Message) {
        let mut out = BytesMut::new();
        codec::encode(message, &mut self.out, &mut out);
        self.tcp.write_all(&out).await.expect("send");
    }

    /// The next frame, or `None` once the node closed the stream.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = codec::decode(&mut self.buf, 1 << 20, &mut self.into).expect("a frame")
            {
                return Some(m);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read_buf(&mut self.buf))
                .await
                .expect("the node answers or closes")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_without_credentials_is_refused() {
    let node = TestNode::start_in_memory().await;
    let (answer, _, _) = open(&node, None).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let forged = common::forged_auth(0);
    let (answer, _, _) = open(&node, Some(&forged)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // A valid opening replayed is refused: its nonce was spent.
    let id = node_id(&node.client).await;
    let auth = test_signer().sign(&id, SERVICE, b"");
    let (first, _tcp, _) = open(&node, Some(&auth)).await;
    assert!(first.starts_with("HTTP/1.1 101"), "{first}");
    let (again, _, _) = open(&node, Some(&auth)).await;
    assert!(again.starts_with("HTTP/1.1 401"), "{again}");
    // Two streams opened alike get different nonces, so different keys.
    let nonce = |answer: &str| {
        answer.lines().find_map(|l| {
            l.strip_prefix(&format!("{NONCE_HEADER}: "))
                .map(str::to_owned)
        })
    };
    let other = test_signer().sign(&id, SERVICE, b"");
    let (second, _tcp2, _) = open(&node, Some(&other)).await;
    assert!(second.starts_with("HTTP/1.1 101"), "{second}");
    assert_ne!(nonce(&first), nonce(&second), "{first}\n{second}");
    assert!(nonce(&first).is_some(), "{first}");
    assert!(
        metric(&node.client, "chorus_peer_streams_opened_total").await >= 1.0,
        "the valid opening is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_calls_and_pings_and_closes_on_a_changed_frame() {
    let node = TestNode::start_in_memory().await;
    let mut stream = RawStream::open(&node).await;
    stream.send(&Message::Ping { id: 7 }).await;
    assert_eq!(stream.next().await, Some(Message::Pong { id: 7 }));
    // A service that may not travel on a stream is refused alone; the
    // stream goes on.
    let beats =
        chorus::peer::Frame::of(&chorus::membership::rpc::Beats(Vec::new())).expect("frame");
    stream
        .send(&Message::Call {
            id: 8,
            service: beats.service.into(),
            version: beats.version,
            body: beats.body,
        })
        .await;
    match stream.next().await {
        Some(Message::Reply {
            id: 8,
            reply: Err(e),
        }) => {
            assert!(e.message.contains("may not travel"), "{e:?}")
        }
        other => panic!("a refusal of call 8, not {other:?}"),
    }
    stream.send(&Message::Ping { id: 9 }).await;
    assert_eq!(stream.next().await, Some(Message::Pong { id: 9 }));

    // A frame whose bytes were changed on the way: the stream closes.
    let refused = "chorus_peer_streams_ended_total{side=\"accepter\",reason=\"refused\"}";
    let before = metric(&node.client, refused).await;
    let mut out = BytesMut::new();
    codec::encode(&Message::Ping { id: 10 }, &mut stream.out, &mut out);
    let last = out.len() - 1;
    out[last] ^= 1;
    stream.tcp.write_all(&out).await.expect("send");
    assert_eq!(stream.next().await, None, "the stream closes");
    counted(&node, refused, before + 1.0).await;

    // A frame longer than the peer message limit closes the stream from
    // its length, before its bytes are buffered.
    let mut stream = RawStream::open(&node).await;
    stream
        .tcp
        .write_all(&(u32::MAX - 1).to_be_bytes())
        .await
        .expect("send");
    assert_eq!(stream.next().await, None, "the stream closes");
    counted(&node, refused, before + 2.0).await;
}

/// Waits until `series` reads `want` (the count follows the close).
async fn counted(node: &TestNode, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = metric(&node.client, series).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node pinned to the protocol before streams refuses to open one, as
/// a node of the older build would: its peers keep HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pinned_to_an_older_protocol_opens_no_stream() {
    let node = TestNode::start_with(|c| {
        c.storage.engine = chorus::config::Engine::Memory;
        c.cluster.protocol = Some(chorus::peer::stream::STREAM_PROTOCOL - 1);
    })
    .await;
    let id = node_id(&node.client).await;
    let auth = test_signer().sign(&id, SERVICE, b"");
    let (answer, _, _) = open(&node, Some(&auth)).await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("x-chorus-protocol: 2"), "{answer}");
}
