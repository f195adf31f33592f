//! The real `chorus` process, killed with SIGKILL in the middle of a stream
//! of writes: after a restart every acknowledged write is readable.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chorus::client::Client;
use http::StatusCode;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WRITERS: usize = 16;
const MAX_WRITES_PER_WRITER: usize = 2_000;

fn write_config(dir: &Path, sync: &str) -> std::path::PathBuf {
    let path = dir.join("cluster.toml");
    let text = format!(
        r#"
[cluster]
name = "durability"
n = 1
r = 1
w = 1

[storage]
sync = "{sync}"

[[nodes]]
id = "n1"
listen = "127.0.0.1:0"
data_dir = "{}"
"#,
        dir.join("n1").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts `chorus serve` and waits for the line that names its address.
async fn serve(config: &Path) -> (Child, Client) {
    let mut child = Command::new(common::chorus_bin())
        .args(["serve", "--node", "n1", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chorus");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("chorus printed nothing within 30 s")
        .expect("read stdout")
        .expect("chorus exited before serving");
    let url = line.rsplit(' ').next().expect("a URL").to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected first line: {line}"
    );
    (child, Client::new(&url))
}

/// Writes from many clients until `kill_after` acknowledgements, SIGKILLs
/// the server while the writes are still in flight, and returns every
/// (key, value) the server acknowledged.
async fn write_then_kill(
    child: &mut Child,
    client: &Client,
    round: usize,
    kill_after: usize,
) -> Vec<(String, u64)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, acked) = (client.clone(), Arc::clone(&acked));
            tokio::spawn(async move {
                for i in 0..MAX_WRITES_PER_WRITER as u64 {
                    let key = format!("r{round}-w{w}-{i}");
                    match client.put(&key, format!("{i}"), None).await {
                        Ok(r) if r.status == StatusCode::NO_CONTENT => acked.lock().push((key, i)),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Poll until enough writes are acknowledged (or every writer is done).
    for _ in 0..3_000 {
        if acked.lock().len() >= kill_after || writers.iter().all(|w| w.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("SIGKILL chorus");
    child.wait().await.expect("reap chorus");
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().clone();
    assert!(acked.len() >= kill_after.min(WRITERS * MAX_WRITES_PER_WRITER));
    acked
}

async fn acknowledged_writes_survive_sigkill(sync: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), sync);
    let mut all_acked = Vec::new();
    for (round, kill_after) in [(0, 300), (1, 1_000)] {
        let (mut child, client) = serve(&config).await;
        all_acked.extend(write_then_kill(&mut child, &client, round, kill_after).await);
    }
    let (mut child, client) = serve(&config).await;
    let mut missing = Vec::new();
    for (key, value) in &all_acked {
        let got = client.get(key).await.expect("get");
        if got.status != StatusCode::OK || got.json() != Some(serde_json::json!(value)) {
            missing.push((key.clone(), got.status));
        }
    }
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    assert!(
        missing.is_empty(),
        "sync={sync}: {} of {} acknowledged writes lost after SIGKILL, e.g. {:?}",
        missing.len(),
        all_acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_with_sync_always() {
    acknowledged_writes_survive_sigkill("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_with_sync_interval() {
    acknowledged_writes_survive_sigkill("interval").await;
}
