//! Crash-loop durability: 100 rounds of SIGKILL in the middle of writes at
//! `w=all&dw=all` against three real `chorus serve` processes (N=3), the
//! killed node restarted on its data each round with no repair by hand.
//! Every acknowledged write must then be in every replica's own copy
//! (`GET /admin/replica/{key}` on each node): `dw=all` promised that each
//! of the three had made it durable before the acknowledgement.
//!
//! `CHORUS_CRASH_ROUNDS` changes the number of rounds (default 100).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus::client::key_path;
use common::processes::{Processes, serve};
use http::Method;
use parking_lot::Mutex;

const WRITERS: usize = 4;
/// Writes a round waits for before the kill (or gives up after a second).
const ACKS_BEFORE_KILL: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_at_dw_all_survive_100_sigkills() {
    let rounds: usize = std::env::var("CHORUS_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let mut cluster = Processes::start(3).await;
    let (path, clients) = (cluster.config.clone(), cluster.clients.clone());
    let children = &mut cluster.children;

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut attempted = 0usize;
    for round in 0..rounds {
        let victim = round % 3;
        let before = acked.lock().len();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                // Writers go through every node, the victim included.
                let client = clients[(w + round) % 3].clone();
                let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut tried = 0;
                    // Bounded: at most 200 writes per writer and round.
                    for i in 0..200 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        tried += 1;
                        let key = format!("r{round}-w{w}-{i}");
                        let value = format!("\"{round}.{w}.{i}\"");
                        let path = format!("{}?w=all&dw=all", key_path(&key));
                        let headers = [("content-type", "application/json")];
                        let reply = client
                            .request(Method::PUT, &path, &headers, Bytes::from(value.clone()))
                            .await;
                        if reply.is_ok_and(|r| r.status.as_u16() == 204) {
                            acked.lock().push((key, value));
                        }
                    }
                    tried
                })
            })
            .collect();
        for _ in 0..200 {
            if acked.lock().len() >= before + ACKS_BEFORE_KILL {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // SIGKILL while the writers are still writing.
        children[victim].start_kill().expect("SIGKILL");
        children[victim].wait().await.expect("reap");
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            attempted += w.await.expect("writer");
        }
        children[victim] = serve(&path, &format!("n{}", victim + 1)).await;
    }

    let acked = acked.lock().clone();
    assert!(
        acked.len() >= rounds * ACKS_BEFORE_KILL / 2,
        "only {} of {attempted} writes were acknowledged in {rounds} rounds",
        acked.len()
    );
    let mut missing = Vec::new();
    for (key, value) in &acked {
        let raw = &key_path(key)["/kv/".len()..];
        for (n, client) in clients.iter().enumerate() {
            let reply = client
                .request(
                    Method::GET,
                    &format!("/admin/replica/{raw}"),
                    &[],
                    Bytes::new(),
                )
                .await
                .expect("replica view");
            let body = String::from_utf8_lossy(&reply.body);
            if reply.status != 200 || !body.contains(value.as_str()) {
                missing.push(format!("{key} on n{}: {} {body}", n + 1, reply.status));
            }
        }
    }
    cluster.kill_all().await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are missing from a replica after {rounds} SIGKILLs, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{rounds} rounds: {} of {attempted} writes acknowledged, all on every replica",
        acked.len()
    );
}
