//! Shared test scaffolding: nodes on port 0 over real HTTP, raw sockets for
//! misbehaving clients, and the real `chorus` binary.

#![allow(dead_code)]

pub mod cluster;
pub mod dashboards;
pub mod netns;
pub mod pki;
pub mod processes;
pub mod register;
pub mod set_adds;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chorus::client::Client;
use chorus::config::{Config, Engine};
use chorus::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The peer secret of every in-process test node, so a test can speak the
/// peer protocol to one ([`peer`]).
pub const TEST_SECRET: &str = "in-process-test-secret-0123456789abcdef";

/// A one-node config on an ephemeral loopback port with data under `dir`.
pub fn config(dir: &Path) -> Config {
    let mut config = Config::dev(1, 0, dir);
    config.nodes[0].listen = "127.0.0.1:0".into();
    config.security.peer_secret = Some(TEST_SECRET.into());
    config
}

/// Signs peer requests as node `test-peer` with [`TEST_SECRET`]; one
/// signer for the whole test process, so no two requests share a nonce.
pub fn test_signer() -> &'static chorus::security::peer::Signer {
    static SIGNER: std::sync::OnceLock<chorus::security::peer::Signer> = std::sync::OnceLock::new();
    SIGNER.get_or_init(|| {
        chorus::security::peer::Signer::new(
            TEST_SECRET.as_bytes(),
            "test-peer",
            chorus::clock::Clock::system().generation(),
            chorus::clock::Clock::system(),
        )
    })
}

pub struct TestNode {
    pub node: Node,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub contract: ContractCheck,
}

/// Fails the test, when dropped, if a node it watches answered a status
/// its route does not declare (`chorus::api::ROUTES`, docs/openapi.yaml):
/// every in-process test checks the contract as it goes. A field of every
/// test node and cluster.
#[derive(Default)]
pub struct ContractCheck(parking_lot::Mutex<Vec<(String, Arc<chorus::api::Undeclared>)>>);

impl ContractCheck {
    pub fn of(node: &Node) -> ContractCheck {
        let check = ContractCheck::default();
        check.watch(node);
        check
    }

    pub fn watch(&self, node: &Node) {
        let name = format!("{} at {}", node.id, node.addr);
        self.0.lock().push((name, Arc::clone(node.undeclared())));
    }
}

impl Drop for ContractCheck {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (node, undeclared) in self.0.lock().iter() {
            let list = undeclared.list();
            assert!(
                list.is_empty(),
                "{node} answered statuses its routes do not declare: {list:?}"
            );
        }
    }
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config(dir.path());
        tweak(&mut config);
        let node = Node::start(&config, "n1").await.expect("node starts");
        let client = Client::new(&node.url());
        TestNode {
            contract: ContractCheck::of(&node),
            node,
            client,
            dir,
        }
    }

    pub async fn start_in_memory() -> TestNode {
        Self::start_with(|c| c.storage.engine = Engine::Memory).await
    }
}

/// Sends raw bytes on a fresh connection and returns what the server sends
/// back before it closes the connection or `wait` passes.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], wait: Duration) -> String {
    raw_exchange_closed(addr, request, wait).await.0
}

/// As [`raw_exchange`], also saying whether the server closed the connection
/// within `wait`.
pub async fn raw_exchange_closed(
    addr: std::net::SocketAddr,
    request: &[u8],
    wait: Duration,
) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The JSON `error` code of a reply.
pub fn error_code(reply: &chorus::client::Reply) -> String {
    reply
        .json()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("(no JSON error in {:?})", reply.body))
}

pub fn chorus_bin() -> &'static str {
    env!("CARGO_BIN_EXE_chorus")
}

/// The executable `name` on PATH, if there is one.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs the `chorus` binary with `args` to its end (at most 120 s).
pub async fn chorus(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(chorus_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chorus did not finish within 120 s")
        .expect("run chorus")
}

/// The sum of every sample of a node's `/metrics` whose line starts with
/// `series` (a metric name, with or without labels).
pub async fn metric(client: &Client, series: &str) -> f64 {
    metrics_text(client)
        .await
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The node's `/metrics` page.
async fn metrics_text(client: &Client) -> String {
    let reply = client
        .request(http::Method::GET, "/metrics", &[], bytes::Bytes::new())
        .await
        .expect("metrics");
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The lines of `/metrics` that start with any of `prefixes`, for a
/// failure to show what the nodes did.
pub async fn series(client: &Client, prefixes: &[&str]) -> String {
    metrics_text(client)
        .await
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `GET /kv/{key}?{query}`.
pub async fn get_with(client: &Client, key: &str, query: &str) -> chorus::client::Reply {
    let path = format!("{}?{query}", chorus::client::key_path(key));
    client
        .request(http::Method::GET, &path, &[], bytes::Bytes::new())
        .await
        .expect("get")
}

/// The context a read of `key` returns; the key must exist.
pub async fn read_context(client: &Client, key: &str) -> String {
    let reply = client.get(key).await.expect("get");
    reply
        .context()
        .expect("the read returned a context")
        .to_string()
}

/// `GET /admin/replica/{key}`: the node's own stored set of `key`.
pub async fn replica_view(client: &Client, key: &str) -> chorus::client::Reply {
    let path = format!(
        "/admin/replica/{}",
        chorus::client::key_path(key).trim_start_matches("/kv/")
    );
    client
        .request(http::Method::GET, &path, &[], bytes::Bytes::new())
        .await
        .expect("replica view")
}

/// The id of `client`'s node.
pub async fn node_id(client: &Client) -> String {
    let reply = client
        .request(http::Method::GET, "/cluster", &[], bytes::Bytes::new())
        .await
        .expect("GET /cluster");
    let body = reply.json().expect("a JSON /cluster");
    body["node"].as_str().expect("the node's id").to_string()
}

/// Calls `R` on `client`'s node as a peer would, signed with
/// [`TEST_SECRET`] for that node (whose id `GET /cluster` tells), and
/// decodes the typed reply, or the error its handler sent back.
pub async fn peer_rpc<R: chorus::peer::Rpc>(
    client: &Client,
    request: R,
) -> Result<R::Reply, chorus::peer::WireError> {
    let frame = chorus::peer::Frame::of(&request).expect("encode");
    let id = node_id(client).await;
    let auth = test_signer().sign(&id, &frame.header(), &frame.body);
    let rpc = frame.header();
    let reply = client
        .request(
            http::Method::POST,
            "/peer",
            &[
                (chorus::security::peer_auth::AUTH_HEADER, auth.as_str()),
                (chorus::peer::rpc::RPC_HEADER, rpc.as_str()),
            ],
            frame.body,
        )
        .await
        .expect("peer");
    assert_eq!(reply.status, http::StatusCode::OK, "{:?}", reply.json());
    postcard::from_bytes(&reply.body).expect("a typed reply")
}

/// The service of the peer requests tests send raw: a replica merge.
pub const MERGE: &str = "replica.merge/1";

/// The head of a `POST /peer` of a [`MERGE`] claiming `len` bytes of
/// body, with `auth`.
pub fn peer_head(auth: &str, len: u64) -> String {
    format!(
        "POST /peer HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-chorus-peer\r\n{}: {auth}\r\n{}: {MERGE}\r\ncontent-length: {len}\r\n\r\n",
        chorus::security::peer_auth::AUTH_HEADER,
        chorus::peer::rpc::RPC_HEADER,
    )
}

/// A forged authentication header: well formed, with a MAC under no
/// secret the cluster has.
pub fn forged_auth(len: u64) -> String {
    let stamp = chorus::security::peer_auth::Stamp {
        node: "intruder".into(),
        to: "n1".into(),
        rpc: MERGE.into(),
        boot: 1,
        seq: 1,
        ts_ms: chorus::clock::Clock::system().now_ms(),
        len,
        digest: [7; 32],
    };
    chorus::security::peer_auth::Secret::new(b"not-the-cluster-secret-0123456789abcdef")
        .sign(&stamp)
}
