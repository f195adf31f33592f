//! In-process clusters on loopback: every node a real `Node` with a real
//! disk, listeners bound on port 0 before any node starts so that the
//! config names every real address.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus::client::Client;
use chorus::config::{Config, NodeConfig};
use chorus::node::{Node, Start};
use http::StatusCode;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What one node's config differs in from the cluster's (its index, the
/// config it starts with).
pub type PerNode = Box<dyn Fn(usize, &mut Config) + Send + Sync>;

pub struct TestCluster {
    pub config: Config,
    pub nodes: Vec<Option<Node>>,
    listeners: Vec<Option<TcpListener>>,
    pub dir: tempfile::TempDir,
    /// Applied to a node's copy of the config at every start.
    per_node: Option<PerNode>,
    contract: super::ContractCheck,
}

/// Fast maintenance, so that tests do not wait on the defaults.
pub fn quick(config: &mut Config) {
    config.security.peer_secret = Some(super::TEST_SECRET.into());
    config.ring.stabilize_ms = 200;
    config.ring.gossip_ms = 200;
    config.ring.handoff_interval_ms = 300;
    config.ring.handoff_batch = 64;
}

impl TestCluster {
    /// `initial` nodes forming the ring and `spare` more that can join
    /// later, with `n` replicas and majority quorums.
    pub async fn start(initial: usize, spare: usize, n: usize) -> TestCluster {
        TestCluster::start_with(initial, spare, n, |_| {}).await
    }

    /// As [`TestCluster::start`], with `tweak` applied to the config.
    pub async fn start_with(
        initial: usize,
        spare: usize,
        n: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCluster {
        TestCluster::start_each(initial, spare, n, tweak, None).await
    }

    /// As [`TestCluster::start_with`], and `per_node` applied to each
    /// node's own config whenever it starts (a node of another protocol).
    pub async fn start_each(
        initial: usize,
        spare: usize,
        n: usize,
        tweak: impl FnOnce(&mut Config),
        per_node: Option<PerNode>,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..initial + spare {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            listeners.push(Some(listener));
            nodes.push(node_config(dir.path(), i, &addr.to_string(), i < initial));
        }
        let mut config = Config::dev(1, 0, dir.path());
        config.cluster.name = "test-ring".into();
        config.cluster.n = n;
        config.cluster.r = n / 2 + 1;
        config.cluster.w = n / 2 + 1;
        config.nodes = nodes;
        quick(&mut config);
        tweak(&mut config);
        let mut cluster = TestCluster {
            config,
            nodes: (0..initial + spare).map(|_| None).collect(),
            listeners,
            dir,
            per_node,
            contract: super::ContractCheck::default(),
        };
        for i in 0..initial {
            cluster.boot(i, None).await;
        }
        cluster
    }

    async fn boot(&mut self, i: usize, join: Option<String>) {
        let id = self.config.nodes[i].id.clone();
        let start = Start {
            join,
            listener: self.listeners[i].take(),
            ..Start::default()
        };
        let mut config = self.config.clone();
        if let Some(per_node) = &self.per_node {
            per_node(i, &mut config);
        }
        let node = Node::start_with(&config, &id, start)
            .await
            .expect("node starts");
        self.contract.watch(&node);
        self.nodes[i] = Some(node);
    }

    /// Node `i` joins the running ring through node `seed`.
    pub async fn join(&mut self, i: usize, seed: usize) {
        let addr = self.node(seed).addr.to_string();
        self.boot(i, Some(addr)).await;
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.node(i).url())
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Starts node `i` again on its address, with the data it had.
    pub async fn restart(&mut self, i: usize) {
        let addr = self.config.nodes[i].listen.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .expect("rebind the node's address");
        self.listeners[i] = Some(listener);
        self.boot(i, None).await;
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// Waits until every running node sees the same members document.
    pub async fn await_members_agree(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let digests: Vec<_> = self
                .running()
                .iter()
                .map(|&i| self.node(i).cluster().roster().members().digest())
                .collect();
            if digests.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(Instant::now() < deadline, "members did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has heard every member's peer
    /// protocol (`GET /cluster`): writes that need the whole cluster at a
    /// protocol (CRDT updates, request digests) then see it.
    pub async fn await_protocols_heard(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut heard = true;
            for i in self.running() {
                let reply = self
                    .client(i)
                    .request(http::Method::GET, "/cluster", &[], bytes::Bytes::new())
                    .await
                    .expect("GET /cluster");
                let body: serde_json::Value = reply.json().expect("json");
                let members = body["members"].as_array().cloned().unwrap_or_default();
                heard &= members
                    .iter()
                    .filter(|m| m["status"] != "removed")
                    .all(|m| m["protocol"].is_u64());
            }
            if heard {
                return;
            }
            assert!(Instant::now() < deadline, "peer protocols not heard");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keys (of `expected`) not yet held, with their value, by every node
    /// of their preference list, as the first running node places them.
    pub fn misplaced(&self, expected: &HashMap<String, String>) -> Vec<String> {
        let placer = self.node(self.running()[0]).cluster();
        let by_id: HashMap<String, &Node> = self
            .running()
            .iter()
            .map(|&i| (self.node(i).id.clone(), self.node(i)))
            .collect();
        let mut missing = Vec::new();
        for (key, value) in expected {
            for id in placer.routes().preference_list(key) {
                let held = by_id
                    .get(&id)
                    .and_then(|n| n.store().get(key).ok().flatten());
                let has_value = held.is_some_and(|set| {
                    set.siblings().iter().any(|s| match &s.content {
                        chorus::version::Content::Value(v) => v.as_ref() == value.as_bytes(),
                        _ => false,
                    })
                });
                if !has_value {
                    missing.push(format!("{key} on {id}"));
                }
            }
        }
        missing
    }

    /// Waits until every key of `expected` sits on its whole preference list.
    pub async fn await_placed(&self, expected: &HashMap<String, String>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let missing = self.misplaced(expected);
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} keys are not on their preference lists, e.g. {:?}",
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads every key through every running node: each must return 200
    /// with exactly its value.
    pub async fn assert_readable_everywhere(&self, expected: &HashMap<String, String>) {
        for &i in &self.running() {
            let client = self.client(i);
            for (key, value) in expected {
                let reply = client.get(key).await.expect("get");
                assert_eq!(
                    (
                        reply.status,
                        String::from_utf8_lossy(&reply.body).into_owned()
                    ),
                    (StatusCode::OK, value.clone()),
                    "{key} read through node {i}"
                );
            }
        }
    }
}

pub fn node_config(dir: &Path, i: usize, addr: &str, initial: bool) -> NodeConfig {
    NodeConfig {
        id: format!("n{}", i + 1),
        listen: addr.to_string(),
        data_dir: dir.join(format!("n{}", i + 1)),
        zone: None,
        weight: 1,
        initial,
        worker_threads: None,
    }
}

/// Writes `count` keys named `{prefix}-{i}` through the given nodes in turn;
/// returns every acknowledged key and its value.
pub async fn write_keys(clients: &[Client], prefix: &str, count: usize) -> HashMap<String, String> {
    let mut acked = HashMap::new();
    for i in 0..count {
        let key = format!("{prefix}-{i}");
        let value = format!("\"{key}\"");
        let reply = clients[i % clients.len()]
            .put(&key, value.clone(), None)
            .await
            .expect("put");
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{key}: {:?}",
            reply.body
        );
        acked.insert(key, value);
    }
    acked
}

/// A writer that keeps writing fresh keys through `clients` until stopped,
/// remembering every acknowledged one. Failed writes are allowed (a node
/// may be leaving) but not remembered: only acknowledged writes must survive.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(HashMap<String, String>, usize)>,
}

impl Load {
    pub fn start(clients: Vec<Client>, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let prefix = prefix.to_string();
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn(async move {
            let mut failed = 0;
            // Bounded: stops by itself after 20,000 writes or 60 s.
            let give_up = Instant::now() + Duration::from_secs(60);
            for i in 0..20_000 {
                if flag.load(Ordering::SeqCst) || Instant::now() >= give_up {
                    break;
                }
                let key = format!("{prefix}-{i}");
                let value = format!("\"{key}\"");
                match clients[i % clients.len()]
                    .put(&key, value.clone(), None)
                    .await
                {
                    Ok(reply) if reply.status == StatusCode::NO_CONTENT => {
                        acked.lock().insert(key, value);
                    }
                    _ => failed += 1,
                }
            }
            let acked = std::mem::take(&mut *acked.lock());
            (acked, failed)
        });
        Load { stop, task }
    }

    /// Stops the writer; returns the acknowledged writes and the failures.
    pub async fn finish(self) -> (HashMap<String, String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("load task")
    }
}
