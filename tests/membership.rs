//! Membership changes of real `chorus serve` processes under load (issue
//! 19): a graceful leave, and a dead node removed by the operator that
//! later rejoins under its id, once with its old disk and once with an
//! empty one. Writers keep writing (blind and with contexts, at w=2,
//! through every live node) throughout; afterwards every acknowledged
//! write that no later write superseded must be read back at r=3 through
//! every remaining node (the lost-writes, deletes and siblings checkers of
//! the simulation, `tests/common/register.rs`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chorus::client::Client;
use common::processes::{Processes, serve_with};
use common::register::Register;
use http::Method;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

const KEYS: usize = 8;

fn keys() -> Vec<String> {
    (0..KEYS).map(|k| format!("k{k}")).collect()
}

/// Writers through the nodes `live` names until stopped (at most 2,000
/// writes each, at most 3 minutes).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(register: &Arc<Register>, clients: &[Client], live: &Arc<Mutex<Vec<bool>>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..3)
            .map(|w| {
                let (register, clients) = (Arc::clone(register), clients.to_vec());
                let (live, stop) = (Arc::clone(live), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut rng = rand::rngs::SmallRng::seed_from_u64(w);
                    let started = tokio::time::Instant::now();
                    for _ in 0..2_000 {
                        if stop.load(Ordering::Relaxed)
                            || started.elapsed() > Duration::from_secs(180)
                        {
                            break;
                        }
                        let up: Vec<usize> =
                            (0..clients.len()).filter(|&i| live.lock()[i]).collect();
                        let client = &clients[up[rng.random_range(0..up.len())]];
                        let key = format!("k{}", rng.random_range(0..KEYS));
                        let blind = rng.random_bool(0.3);
                        if !blind {
                            register.read(client, &key, "2").await;
                        }
                        register.write(client, &key, blind, "2").await;
                        tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a writer panicked");
        }
    }
}

/// Reads every key at r=3 through every live node and checks every
/// acknowledged write; the number checked.
async fn check_all(
    register: &Register,
    cluster: &Processes,
    live: &[bool],
    context: &str,
) -> usize {
    let clients: Vec<Client> = cluster
        .clients
        .iter()
        .zip(live)
        .filter(|(_, up)| **up)
        .map(|(c, _)| c.clone())
        .collect();
    // Replicas that missed writes are repaired by the r=3 reads themselves
    // and by anti-entropy; give the ring a moment to settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let finals = register.finals(&clients, &keys()).await;
    let (violations, checked) = register.check(finals);
    assert!(
        violations.is_empty(),
        "{context}: {} violations among {checked} acknowledged writes: {violations:#?}",
        violations.len()
    );
    checked
}

/// Waits until `node`'s members document (through `client`) says `status`.
async fn wait_for_status(client: &Client, node: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = client
            .request(Method::GET, "/cluster", &[], Bytes::new())
            .await
            .expect("cluster");
        let json = reply.json().expect("cluster json");
        let found = json["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == node)
            .and_then(|m| m["status"].as_str().map(str::to_string));
        if found.as_deref() == Some(status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node} is {found:?}, not {status}, after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_under_load_and_no_acknowledged_write_is_lost() {
    let mut cluster = Processes::start(4).await;
    let register = Register::new();
    let live = Arc::new(Mutex::new(vec![true; 4]));
    let load = Load::start(&register, &cluster.clients, &live);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // n4 leaves; the writers stop sending through it at once.
    live.lock()[3] = false;
    let reply = cluster.clients[3]
        .request(Method::POST, "/admin/leave", &[], Bytes::new())
        .await
        .expect("leave");
    assert_eq!(reply.status, http::StatusCode::ACCEPTED);
    let exited = tokio::time::timeout(Duration::from_secs(120), cluster.children[3].wait()).await;
    assert!(exited.is_ok(), "n4 did not finish leaving within 120 s");
    wait_for_status(&cluster.clients[0], "n4", "removed").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish().await;
    let live_now = live.lock().clone();
    let checked = check_all(&register, &cluster, &live_now, "after the leave").await;
    assert!(checked >= 100, "checked only {checked} acknowledged writes");
    cluster.kill_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_rejoins_with_its_old_disk_and_with_an_empty_one() {
    let mut cluster = Processes::start(4).await;
    let register = Register::new();
    let live = Arc::new(Mutex::new(vec![true; 4]));
    let n1_addr = cluster.clients[0]
        .base()
        .trim_start_matches("http://")
        .to_string();
    let n4_dir = cluster.dir.path().join("n4");
    let mut checked = 0;
    for (round, keep_disk) in [true, false].into_iter().enumerate() {
        let load = Load::start(&register, &cluster.clients, &live);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // n4 dies; the operator removes it.
        live.lock()[3] = false;
        cluster.children[3].start_kill().expect("SIGKILL n4");
        cluster.children[3].wait().await.expect("reap n4");
        let reply = cluster.clients[0]
            .request(Method::POST, "/admin/remove/n4", &[], Bytes::new())
            .await
            .expect("remove");
        assert!(reply.status.is_success(), "{}", reply.status);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // It comes back under its id, joining through n1.
        if !keep_disk {
            std::fs::remove_dir_all(&n4_dir).expect("wipe n4's disk");
        }
        cluster.children[3] = serve_with(&cluster.config, "n4", &["--join", &n1_addr]).await;
        wait_for_status(&cluster.clients[0], "n4", "active").await;
        live.lock()[3] = true;
        tokio::time::sleep(Duration::from_secs(3)).await;
        load.finish().await;
        let live_now = live.lock().clone();
        checked = check_all(
            &register,
            &cluster,
            &live_now,
            &format!("round {round}, rejoined with its old disk: {keep_disk}"),
        )
        .await;
    }
    assert!(checked >= 100, "checked only {checked} acknowledged writes");
    cluster.kill_all().await;
}
