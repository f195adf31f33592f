//! Anti-entropy brings replicas that drifted apart back to identical sets.
//!
//! The floor scenario, on in-process clusters of 3 and 5 nodes with N = 3,
//! in state and in operation mode, and with hinted handoff disabled (`limits.max_hints = 0`): one node is
//! stopped; 10,000 keys are written at w=1, then 1,000 of them deleted and
//! 1,000 overwritten (each with the context of a read); the node comes
//! back with nothing of it. Once every replica of every range reports the
//! same Merkle root and two rounds of every node change nothing:
//! - the returning node's last round that found differing keys (or ops
//!   that changed its data) is at most its round
//!   ceil(M / max_keys_per_round) plus one, where M is the number of keys
//!   it replicates (every one of which it lacks), plus, in operation mode,
//!   those of them that were deleted or overwritten (their second write
//!   may come as an op of its own);
//! - every replica of every key answers `/admin/replica` with the same body;
//! - the next rounds of every node find nothing: the repair counters stay
//!   where they are;
//! - every deleted key reads 404 at r=all, every other key its last value.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::antientropy::Stats;
use chorus::antientropy::merkle::LEAVES;
use chorus::antientropy::rpc::{LeafEntries, TreeChildren, TreeRoots};
use chorus::client::{Client, Reply, key_path};
use chorus::config::{AntiEntropyMode, Config};
use common::cluster::TestCluster;
use common::peer_rpc;
use futures_util::future::join_all;
use http::{Method, StatusCode};

const KEYS: usize = 10_000;
const DELETED: usize = 1_000;
const OVERWRITTEN: usize = 1_000;
const MAX_KEYS_PER_ROUND: usize = 1_000;
/// Concurrent client requests.
const WORKERS: usize = 16;

fn drifting(config: &mut Config, mode: AntiEntropyMode) {
    config.antientropy.mode = mode;
    config.limits.max_hints = 0;
    config.antientropy.interval_ms = 100;
    config.antientropy.max_keys_per_round = MAX_KEYS_PER_ROUND;
    // Purge turns tombstones into graves replica by replica: off here, so
    // that the comparison of replicas is not racing it (tests/purge.rs).
    config.antientropy.purge_interval_ms = 0;
}

fn key(i: usize) -> String {
    format!("drift-{i}")
}

/// The value key `i` ends with (deleted keys: none).
fn last_value(i: usize) -> Option<String> {
    match i {
        i if i < DELETED => None,
        i if i < DELETED + OVERWRITTEN => Some(format!("\"second {i}\"")),
        i => Some(format!("\"first {i}\"")),
    }
}

async fn send(
    client: &Client,
    method: Method,
    key: &str,
    query: &str,
    ctx: Option<&str>,
    body: Option<String>,
) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(ctx.map(|c| ("x-chorus-context", c)));
    let path = format!("{}?{query}", key_path(key));
    let body = body.map(Bytes::from).unwrap_or_default();
    client
        .request(method, &path, &headers, body)
        .await
        .expect("request")
}

/// Runs `job(i)` for every `i` in `range` on `WORKERS` tasks.
async fn for_each<F, Fut>(range: std::ops::Range<usize>, job: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let (start, end) = (range.start, range.end);
    let tasks = (0..WORKERS).map(|w| {
        let job = Arc::clone(&job);
        tokio::spawn(async move {
            for i in (start + w..end).step_by(WORKERS) {
                job(i).await;
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("worker");
    }
}

/// Writes, deletes and overwrites through `clients` at w=1.
async fn drift(clients: Vec<Client>) {
    let clients = Arc::new(clients);
    let c = Arc::clone(&clients);
    for_each(0..KEYS, move |i| {
        let client = c[i % c.len()].clone();
        async move {
            let value = format!("\"first {i}\"");
            let reply = send(&client, Method::PUT, &key(i), "w=1", None, Some(value)).await;
            assert_eq!(
                reply.status,
                StatusCode::NO_CONTENT,
                "put {i}: {:?}",
                reply.body
            );
        }
    })
    .await;
    let c = Arc::clone(&clients);
    for_each(0..DELETED + OVERWRITTEN, move |i| {
        let client = c[(i + 1) % c.len()].clone();
        async move {
            let read = send(&client, Method::GET, &key(i), "r=1", None, None).await;
            assert_eq!(read.status, StatusCode::OK, "read {i}");
            let ctx = read.context().expect("context").to_string();
            let (method, body) = match last_value(i) {
                None => (Method::DELETE, None),
                Some(v) => (Method::PUT, Some(v)),
            };
            let reply = send(&client, method, &key(i), "w=1", Some(&ctx), body).await;
            assert_eq!(
                reply.status,
                StatusCode::NO_CONTENT,
                "rewrite {i}: {:?}",
                reply.body
            );
        }
    })
    .await;
}

fn index_of(id: &str) -> usize {
    id.trim_start_matches('n')
        .parse::<usize>()
        .expect("node id")
        - 1
}

/// Waits until every node has run `rounds` more rounds than in `since`.
async fn await_rounds(cluster: &TestCluster, since: &[Stats], rounds: u64) -> Vec<Stats> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now: Vec<Stats> = (0..since.len())
            .map(|i| cluster.node(i).antientropy().stats())
            .collect();
        if now
            .iter()
            .zip(since)
            .all(|(n, s)| n.rounds >= s.rounds + rounds)
        {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "anti-entropy rounds stopped: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether every replica of every range holds a complete tree with the same
/// root as the others (asked over the peer protocol, as a peer would).
async fn trees_agree(cluster: &TestCluster, nodes: usize) -> bool {
    let ring = cluster.node(0).cluster().routes().ring();
    let ranges = ring.ranges(3);
    let mut roots: Vec<Vec<Option<[u8; 32]>>> = Vec::new();
    for node in 0..nodes {
        let asked = ranges.iter().map(|r| r.positions.clone()).collect();
        match peer_rpc(&cluster.client(node), TreeRoots(asked)).await {
            Ok(r) => roots.push(r),
            _ => return false,
        }
    }
    ranges.iter().enumerate().all(|(i, range)| {
        let held: Vec<Option<[u8; 32]>> = range
            .replicas
            .iter()
            .map(|id| roots[index_of(id)][i])
            .collect();
        held.iter().all(|r| r.is_some() && *r == held[0])
    })
}

async fn drift_and_converge(nodes: usize, mode: AntiEntropyMode) {
    let mut cluster = TestCluster::start_with(nodes, 0, 3, |c| drifting(c, mode)).await;
    let down = nodes - 1;
    cluster.stop(down).await;
    drift((0..down).map(|i| cluster.client(i)).collect()).await;
    let lagging = format!("n{}", down + 1);
    let replicas: Vec<Vec<usize>> = (0..KEYS)
        .map(|i| {
            let list = cluster.node(0).cluster().routes().preference_list(&key(i));
            list.iter().map(|id| index_of(id)).collect()
        })
        .collect();
    let lacked = replicas.iter().filter(|r| r.contains(&down)).count();
    assert!(
        lacked > KEYS / 3,
        "the stopped node replicates {lacked} keys"
    );

    cluster.restart(down).await;
    // Converged: every replica's tree of every range has the same root, and
    // two rounds of every node change nothing.
    let mut stats: Vec<Stats> = (0..nodes).map(|_| Stats::default()).collect();
    // Bounded: a cluster that never settles fails here instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let before = stats.clone();
        stats = await_rounds(&cluster, &before, 2).await;
        let quiet = stats.iter().zip(&before).all(|(n, b)| {
            n.repaired == b.repaired && n.differing == b.differing && n.in_sync >= b.in_sync + 2
        });
        let agree = trees_agree(&cluster, nodes).await;
        if quiet && stats[down].rounds > 0 && agree {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged after 240 s (quiet {quiet}, trees agree {agree}): {stats:?}"
        );
    }
    // State moves a lacking key in one exchange; operation transfer may
    // also bring a deleted or overwritten key's two writes as two ops.
    let rewritten = replicas[..DELETED + OVERWRITTEN]
        .iter()
        .filter(|r| r.contains(&down))
        .count();
    let moves = match mode {
        AntiEntropyMode::Operation => lacked + rewritten,
        _ => lacked,
    };
    // A round exchanges with one peer and moves at most the cap; the
    // rounds with one peer move full batches but for its last, so the
    // rounds that found anything are at most moves / cap + the peers.
    // (Rounds with a peer that held nothing for it count for nothing.)
    let peers = nodes as u64 - 1;
    let bound = moves.div_ceil(MAX_KEYS_PER_ROUND) as u64 + peers;
    let found = stats[down].differing_rounds;
    assert!(
        found <= bound,
        "{lagging} found keys differing in {found} rounds; the bound is {bound} ({moves} moves, {MAX_KEYS_PER_ROUND} per round, {peers} peers)"
    );

    // Identical replicas, key by key.
    let clients: Arc<Vec<Client>> = Arc::new((0..nodes).map(|i| cluster.client(i)).collect());
    let replicas = Arc::new(replicas);
    let c = Arc::clone(&clients);
    let r = Arc::clone(&replicas);
    for_each(0..KEYS, move |i| {
        let (clients, replicas) = (Arc::clone(&c), Arc::clone(&r));
        async move {
            let mut bodies = HashMap::new();
            for &node in replicas[i].iter() {
                let reply = common::replica_view(&clients[node], &key(i)).await;
                assert_eq!(reply.status, StatusCode::OK, "key {i} on n{}", node + 1);
                bodies.insert(node, reply.body);
            }
            let first = &bodies[&replicas[i][0]];
            for (node, body) in &bodies {
                assert_eq!(
                    body,
                    first,
                    "key {i}: n{} differs from n{}",
                    node + 1,
                    replicas[i][0] + 1
                );
            }
        }
    })
    .await;

    // Nothing deleted came back; every value is the last written.
    let c = Arc::clone(&clients);
    for_each(0..KEYS, move |i| {
        let client = c[i % c.len()].clone();
        async move {
            let read = send(&client, Method::GET, &key(i), "r=all", None, None).await;
            match last_value(i) {
                None => assert_eq!(
                    read.status,
                    StatusCode::NOT_FOUND,
                    "deleted key {i} is back: {}",
                    String::from_utf8_lossy(&read.body)
                ),
                Some(v) => {
                    assert_eq!(
                        read.status,
                        StatusCode::OK,
                        "key {i}: {}",
                        String::from_utf8_lossy(&read.body)
                    );
                    assert_eq!(read.body, Bytes::from(v), "key {i}");
                }
            }
        }
    })
    .await;

    // The repair metrics stay at zero over the next idle rounds.
    let idle = await_rounds(&cluster, &stats, 2).await;
    for (after, before) in idle.iter().zip(&stats) {
        assert_eq!(
            (after.differing, after.repaired),
            (before.differing, before.repaired)
        );
    }
    let repaired = common::metric(&clients[0], "chorus_antientropy_keys_repaired_total").await;
    assert!(
        repaired >= lacked as f64,
        "{repaired} keys repaired, {lacked} lacked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_converge_after_a_replica_missed_everything() {
    drift_and_converge(3, AntiEntropyMode::State).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_converge_by_operation_transfer() {
    drift_and_converge(3, AntiEntropyMode::Operation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_converge_by_operation_transfer() {
    drift_and_converge(5, AntiEntropyMode::Operation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_converge_after_a_replica_missed_everything() {
    drift_and_converge(5, AntiEntropyMode::State).await;
}

#[tokio::test]
async fn tree_requests_from_peers_are_checked_and_bounded() {
    let node = common::TestNode::start().await;
    let client = &node.client;
    for i in 0..50 {
        let reply = client.put(&format!("t-{i}"), "1", None).await.expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    // One node, N = 1: a single range, the whole ring.
    let whole = 0..=u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(30);
    let root = loop {
        let roots = peer_rpc(client, TreeRoots(vec![whole.clone(), 5..=9])).await;
        match roots {
            Ok(r) if r[0].is_some() => {
                assert_eq!(r[1], None, "no tree of a range the node does not keep");
                break r[0].expect("root");
            }
            other => assert!(Instant::now() < deadline, "no tree built: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(root, [0; 32]);
    // The root's children XOR to the root (digests are hash prefixes); the leaves hold every key once.
    let Ok(children) = peer_rpc(
        client,
        TreeChildren {
            range: whole.clone(),
            level: 0,
            nodes: vec![0],
        },
    )
    .await
    else {
        panic!("children of the root");
    };
    let folded = children[0].iter().fold(0, |a, c| a ^ c);
    assert_eq!(folded, chorus::antientropy::merkle::digest(&root));
    let all: Vec<u32> = (0..LEAVES as u32).collect();
    let Ok(lists) = peer_rpc(
        client,
        LeafEntries {
            range: whole.clone(),
            leaves: all,
        },
    )
    .await
    else {
        panic!("leaf lists");
    };
    assert_eq!(lists.iter().map(|(_, l)| l.len()).sum::<usize>(), 50);

    let hostile_children = [(3, vec![0]), (1, vec![0; 17]), (2, vec![256])];
    for (level, nodes) in hostile_children {
        let what = format!("children at level {level} of {} nodes", nodes.len());
        let range = whole.clone();
        let reply = peer_rpc(
            client,
            TreeChildren {
                range,
                level,
                nodes,
            },
        )
        .await;
        assert!(
            matches!(&reply, Err(e) if e.code == "protocol_error"),
            "{what}: {reply:?}"
        );
    }
    for leaves in [vec![LEAVES as u32], vec![0; LEAVES + 1]] {
        let range = whole.clone();
        let reply = peer_rpc(client, LeafEntries { range, leaves }).await;
        assert!(
            matches!(&reply, Err(e) if e.code == "protocol_error"),
            "{reply:?}"
        );
    }
    let reply = peer_rpc(client, TreeRoots(vec![0..=1; (1 << 16) + 1])).await;
    assert!(
        matches!(&reply, Err(e) if e.code == "protocol_error"),
        "{reply:?}"
    );
    // A range the node keeps no tree of is refused as unavailable.
    let reply = peer_rpc(
        client,
        LeafEntries {
            range: 5..=9,
            leaves: vec![0],
        },
    )
    .await;
    assert!(
        matches!(&reply, Err(e) if e.code == "unavailable"),
        "{reply:?}"
    );

    // Rebuilt on demand, from the store: the same root comes back.
    let rebuild = "/admin/antientropy/rebuild";
    let reply = client
        .request(Method::GET, rebuild, &[], Bytes::new())
        .await
        .expect("get");
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = client
        .request(Method::POST, rebuild, &[], Bytes::new())
        .await
        .expect("post");
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.json().expect("json")["rebuilding"], 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match peer_rpc(client, TreeRoots(vec![whole.clone()])).await {
            Ok(r) if r[0].is_some() => {
                assert_eq!(r[0], Some(root), "the rebuilt tree differs");
                break;
            }
            other => assert!(Instant::now() < deadline, "not rebuilt: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_reached_one_replica_travel_as_ops_and_leave_the_logs() {
    let cluster =
        TestCluster::start_with(3, 0, 3, |c| drifting(c, AntiEntropyMode::Operation)).await;
    // New logs owe their fellows a state exchange first; let them pay it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..3).any(|i| cluster.node(i).antientropy().owes_state()) {
        assert!(
            Instant::now() < deadline,
            "the first state exchanges never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before: Vec<Stats> = (0..3)
        .map(|i| cluster.node(i).antientropy().stats())
        .collect();
    // A coordinator that reached only n1: n1 mints and stores, nobody else hears.
    let n1 = cluster.client(0);
    const WRITES: usize = 300;
    for i in 0..WRITES {
        let request = chorus::replica::rpc::Coordinate {
            key: format!("lonely-{i}"),
            context: Default::default(),
            content: chorus::version::Content::Value(Bytes::from(format!("{i}"))),
            request_id: None,
        };
        let reply = peer_rpc(&n1, request).await;
        assert!(
            matches!(reply, Ok(chorus::replica::rpc::Coordinated { .. })),
            "{reply:?}"
        );
    }
    // Every replica gets every write, through the ops.
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..WRITES {
        for node in 1..3 {
            loop {
                let reply =
                    common::replica_view(&cluster.client(node), &format!("lonely-{i}")).await;
                if reply.status == StatusCode::OK {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "lonely-{i} never reached n{}",
                    node + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for (node, before) in before.iter().enumerate().skip(1) {
        // A round adds its ops to the stats when it ends, after it has
        // written them: the last writes can be readable while the round
        // that brought them is still exchanging other ranges. Failed here
        // about one run in twelve when read at once (294 of 300, with no
        // fallback).
        let mut stats = cluster.node(node).antientropy().stats();
        while stats.ops_applied - before.ops_applied < WRITES as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stats = cluster.node(node).antientropy().stats();
        }
        assert!(
            stats.ops_applied - before.ops_applied >= WRITES as u64,
            "n{} applied {} ops; before {before:?}, after {stats:?}",
            node + 1,
            stats.ops_applied - before.ops_applied
        );
        assert_eq!(
            stats.fallbacks,
            before.fallbacks,
            "no fallback to state was needed; {}",
            common::series(
                &cluster.client(0),
                &[
                    "chorus_antientropy_fallbacks_total",
                    "chorus_antientropy_ops_truncated_total"
                ]
            )
            .await
        );
    }
    // Once every replica has every op, the ops leave every log.
    loop {
        let held: usize = (0..3)
            .filter_map(|i| cluster.node(i).antientropy().log_sizes())
            .map(|(held, _)| held)
            .sum();
        if held == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{held} ops still held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
