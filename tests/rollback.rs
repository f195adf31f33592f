//! Riak's kv679 by rollback, against real processes (issue 19, hole 1).
//!
//! An operator stops n1 cleanly and copies its data directory aside, starts
//! it again and the cluster keeps writing (blind and with contexts, through
//! n1 and through the others, to the same keys), stops n1 again, puts the
//! copy back (its identity file included) and starts it: n1's disk has gone
//! back in time. The moment n1 accepts connections, before any repair can
//! reach it, clients write blind through it. Before chorus drew a new
//! incarnation for every life, n1 then minted dots it had already minted
//! in the life the copy forgot: its new writes were dropped by the replicas
//! that held the old ones as "already seen", or deleted siblings they never
//! saw (8 to 12 of 102 acknowledged writes lost on every run).
//!
//! Every acknowledged write that no later write superseded must be read
//! back at r=3 from every node once anti-entropy has run.

mod common;

use std::path::Path;
use std::time::Duration;

use common::processes::{Processes, serve};
use common::register::Register;

const KEYS: [&str; 3] = ["cart", "profile", "counter"];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Stops `child` with SIGTERM (a clean shutdown) and reaps it.
async fn stop(child: &mut tokio::process::Child) {
    let pid = child.id().expect("a running child has a pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the node did not stop on SIGTERM within 30 s")
        .expect("reap");
}

/// One round of writes: for every key, a read and a write with its
/// context through `via`, then a blind write through each node.
async fn round(register: &Register, cluster: &Processes, via: usize) {
    for key in KEYS {
        register.read(&cluster.clients[via], key, "2").await;
        register.write(&cluster.clients[via], key, false, "2").await;
        for client in &cluster.clients {
            register.write(client, key, true, "2").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_copy_of_its_disk_loses_no_acknowledged_write() {
    let mut cluster = Processes::start(3).await;
    let register = Register::new();
    let n1_dir = cluster.dir.path().join("n1");
    let copy = cluster.dir.path().join("n1-copy");

    for via in 0..3 {
        round(&register, &cluster, via).await;
    }
    stop(&mut cluster.children[0]).await;
    copy_dir(&n1_dir, &copy);
    cluster.children[0] = serve(&cluster.config, "n1").await;
    // The life the copy will forget: writes through n1 and the others.
    for via in [0, 1, 0, 2] {
        round(&register, &cluster, via).await;
    }
    stop(&mut cluster.children[0]).await;
    std::fs::remove_dir_all(&n1_dir).expect("remove n1's data");
    copy_dir(&copy, &n1_dir);
    cluster.children[0] = serve(&cluster.config, "n1").await;
    // At once, blind through the node that went back in time.
    for key in KEYS {
        for _ in 0..2 {
            register.write(&cluster.clients[0], key, true, "2").await;
        }
    }
    round(&register, &cluster, 0).await;
    let acked = register.acked();
    assert!(acked >= 50, "only {acked} writes were acknowledged");

    // Anti-entropy brings n1 up to date; then every node reads the same.
    let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let finals = loop {
        let attempt = tokio::spawn({
            let clients = cluster.clients.clone();
            let keys = keys.clone();
            let register = std::sync::Arc::clone(&register);
            async move { register.finals(&clients, &keys).await }
        })
        .await;
        match attempt {
            Ok(finals) => break finals,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("the nodes never agreed on the keys: {e}"),
        }
    };
    let (violations, checked) = register.check(finals);
    assert!(checked >= 50, "checked only {checked} acknowledged writes");
    assert!(
        violations.is_empty(),
        "{} violations among {checked} acknowledged writes: {violations:#?}",
        violations.len()
    );
    cluster.kill_all().await;
}
