//! The nemesis against real processes: five `chorus serve` processes, each
//! in its own network namespace joined to a bridge by a veth pair
//! (tests/common/netns.rs), under two workloads at once:
//!
//! - the register workload of the simulation (src/sim/cluster/workload.rs):
//!   four clients reading and writing at random quorums, recorded and
//!   checked by every checker (no acknowledged write lost, convergence,
//!   sessions, siblings);
//! - the set workload of the replication tests: read-modify-write adds to
//!   one set at r=2, w=2, every acknowledged add in the final union.
//!
//! A seeded nemesis cuts links (blackhole routes between two namespaces),
//! SIGKILLs processes and restarts them on their data, and SIGSTOPs and
//! SIGCONTs them, one kind per scenario and all of them mixed, plus a join
//! and a leave while faults go on. After the heal every promise must hold,
//! and every replica must agree within 60 s.
//!
//! `CHORUS_NEMESIS_SECS` sets how long faults run per scenario (default
//! 12; a soak: `CHORUS_NEMESIS_SECS=600 cargo test --test nemesis`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus::check::record::Recorder;
use chorus::client::{Client, key_path};
use chorus::config::Config;
use chorus::membership::Roster;
use chorus::sim::cluster::{final_state, verdicts, workload};
use common::netns::{Hosts, signal};
use common::set_adds::{self, SetAdds};
use http::Method;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::process::Child;

const NODES: usize = 5;
const WORKERS: u32 = 4;
const SHARED_KEYS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Partition,
    Kill,
    Pause,
    Mix,
}

/// What one node is going through.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Up,
    Killed,
    Paused,
}

struct Cluster5 {
    hosts: Hosts,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    children: Vec<Option<Child>>,
    state: Vec<State>,
    clients: Vec<Client>,
}

impl Cluster5 {
    async fn start(initial: usize) -> Cluster5 {
        let hosts = Hosts::create(NODES);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = hosts.write_config(dir.path(), initial);
        let mut children = Vec::new();
        for i in 0..NODES {
            children.push(if i < initial {
                Some(hosts.serve(&config, i, None).await)
            } else {
                None
            });
        }
        let clients = (0..NODES)
            .map(|i| Client::new(&format!("http://{}", hosts.addr(i))))
            .collect();
        Cluster5 {
            hosts,
            dir,
            config,
            children,
            state: vec![State::Up; NODES],
            clients,
        }
    }

    async fn kill(&mut self, i: usize) {
        if let Some(child) = self.children[i].as_mut() {
            if self.state[i] == State::Paused {
                signal(child, "CONT");
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.state[i] = State::Killed;
    }

    async fn restart(&mut self, i: usize) {
        self.children[i] = Some(self.hosts.serve(&self.config, i, None).await);
        self.state[i] = State::Up;
    }

    fn pause(&mut self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child, "STOP");
            self.state[i] = State::Paused;
        }
    }

    fn resume(&mut self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child, "CONT");
        }
        self.state[i] = State::Up;
    }

    /// Every link repaired, every node running.
    async fn heal(&mut self, running: &[usize]) {
        self.hosts.heal();
        for &i in running {
            match self.state[i] {
                State::Paused => self.resume(i),
                State::Killed => self.restart(i).await,
                State::Up => {}
            }
        }
    }

    async fn stop_all(&mut self) {
        for i in 0..NODES {
            if let Some(child) = self.children[i].as_mut() {
                signal(child, "CONT");
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }

    /// One fault among `targets`, undone at the next step.
    async fn strike(&mut self, kind: Kind, rng: &mut SmallRng, targets: &[usize]) -> String {
        let kind = match kind {
            Kind::Mix => [Kind::Partition, Kind::Kill, Kind::Pause][rng.random_range(0..3)],
            k => k,
        };
        let node = targets[rng.random_range(0..targets.len())];
        match kind {
            Kind::Partition => {
                let mut order = targets.to_vec();
                // A minority of one or two against the rest.
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                let (small, large) = order.split_at(rng.random_range(1..=2));
                for &a in small {
                    for &b in large {
                        self.hosts.cut(a, b);
                    }
                }
                format!("cut {small:?} from {large:?}")
            }
            Kind::Kill => {
                self.kill(node).await;
                format!("SIGKILL n{}", node + 1)
            }
            Kind::Pause => {
                self.pause(node);
                format!("SIGSTOP n{}", node + 1)
            }
            Kind::Mix => unreachable!("Mix picks one of the others"),
        }
    }
}

async fn members_ring(config: &std::path::Path, dir: &std::path::Path) -> chorus::ring::Ring {
    let config = Config::load(config).expect("config");
    let saved = dir.join("n1").join("members.json");
    Roster::load(&config, Some(&saved)).expect("members").ring()
}

/// Runs `kind` for the configured time; with `churn`, n5 starts outside the
/// ring and joins, and n4 leaves, while the faults go on.
async fn scenario(kind: Kind, churn: bool, seed: u64) {
    // One scenario at a time: five processes each are enough for two cores.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = SERIAL.lock().await;
    let secs: u64 = std::env::var("CHORUS_NEMESIS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut rng = SmallRng::seed_from_u64(seed);
    let initial = if churn { 4 } else { NODES };
    let mut cluster = Cluster5::start(initial).await;
    if kind == Kind::Partition && !cluster.hosts.isolated() {
        eprintln!("*** NOTE: no namespaces: the partition scenario runs without partitions");
    }

    let recorder = Arc::new(Recorder::new());
    let workers: Vec<_> = (0..WORKERS)
        .map(|c| {
            let worker = workload::Worker {
                id: c,
                seed: seed ^ u64::from(c),
                shared_keys: SHARED_KEYS,
                session: c % 2 == 0,
                // Kills keep the disk (fsync per write): every ack is a promise.
                single_acks_after: Duration::ZERO,
                until: Duration::from_secs(secs + 2),
                recorder: Arc::clone(&recorder),
            };
            tokio::spawn(worker.run(cluster.clients.clone()))
        })
        .collect();
    let setters = (0..4).map(|c| cluster.clients[c % 3].clone()).collect();
    let adds = SetAdds::start(setters, "set", 150, "2", "2");

    // The nemesis: one fault at a time, each undone before the next; in the
    // churn scenario it spares n4 and n5 (they join and leave).
    let targets: Vec<usize> = if churn {
        vec![0, 1, 2]
    } else {
        (0..NODES).collect()
    };
    let running: Vec<usize> = (0..initial).collect();
    let mut log = Vec::new();
    let faults_end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut step = 0;
    while tokio::time::Instant::now() < faults_end {
        log.push(cluster.strike(kind, &mut rng, &targets).await);
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..2000))).await;
        cluster.heal(&running).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        step += 1;
        if churn && step == 2 {
            cluster.children[4] = Some(cluster.hosts.serve(&cluster.config, 4, Some(0)).await);
            log.push("n5 joins".into());
        }
        if churn && step == 4 {
            let reply = cluster.clients[3]
                .request(Method::POST, "/admin/leave", &[], Bytes::new())
                .await
                .expect("leave");
            assert_eq!(reply.status, 202, "n4 leaves");
            log.push("n4 leaves".into());
        }
    }
    let all: Vec<usize> = if churn { vec![0, 1, 2, 4] } else { running };
    cluster.heal(&all).await;
    for w in workers {
        w.await.expect("worker");
    }
    let acked = adds.finish().await;

    // n4 has left (it exits by itself) before the ring is read.
    if churn && let Some(child) = cluster.children[3].as_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    }
    let config = Config::load(&cluster.config).expect("config");
    let keys = workload::keys(SHARED_KEYS, WORKERS);
    let mut found = None;
    for _ in 0..60 {
        let ring = members_ring(&cluster.config, cluster.dir.path()).await;
        let state = final_state(&config, &ring, &cluster.clients, &keys).await;
        let converged = state.converged() && state.errors.is_empty();
        found = Some(state);
        if converged {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let found = found.expect("a final state");
    let (history, verdicts) = verdicts(&recorder, found);
    let violations: Vec<_> = verdicts.iter().flat_map(|v| &v.violations).collect();
    let unexamined: Vec<_> = verdicts
        .iter()
        .filter(|v| v.examined == 0)
        .map(|v| v.checker)
        .collect();
    assert!(
        unexamined.is_empty(),
        "{kind:?}: checkers that examined nothing: {unexamined:?}"
    );
    let set = cluster.clients[0]
        .request(
            Method::GET,
            &format!("{}?r=all", key_path("set")),
            &[],
            Bytes::new(),
        )
        .await
        .expect("read the set");
    cluster.stop_all().await;

    let writes = history
        .ops
        .iter()
        .filter(|op| matches!(op, chorus::check::Op::Write { acked: true, .. }))
        .count();
    eprintln!(
        "{kind:?}{}: {} faults, {writes} acknowledged register writes, {} acknowledged adds",
        if churn {
            " with a join and a leave"
        } else {
            ""
        },
        log.len(),
        acked.len()
    );
    assert!(
        violations.is_empty(),
        "{kind:?}: {violations:#?}\nfaults: {log:?}"
    );
    assert!(
        writes >= 20,
        "{kind:?}: only {writes} writes were acknowledged"
    );
    let found: BTreeSet<u64> = set_adds::union(&set);
    set_adds::assert_none_lost(&acked, &found, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions() {
    scenario(Kind::Partition, false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills() {
    scenario(Kind::Kill, false, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses() {
    scenario(Kind::Pause, false, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed() {
    scenario(Kind::Mix, false, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_under_faults() {
    scenario(Kind::Mix, true, 5).await;
}
