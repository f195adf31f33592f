//! A flood of strangers' peer requests against a real node process, alone
//! in its own test binary: it loads the machine for a minute, and memory is
//! measured on the node's process.

mod common;

use std::time::Duration;

use common::{forged_auth, peer_head};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A flood of strangers' 60 MiB peer bodies, 16 at a time for a minute
/// (how a node went from 36 MiB to 1.2 GB of RSS when bodies were read
/// before their MAC was checked): memory stays within 64 MiB of where it
/// started, and a client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_peer_bodies_leaves_memory_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let security = format!("\n[security]\npeer_secret = \"{}\"\n", common::TEST_SECRET);
    let (config, url) = common::processes::one_node_config(dir.path(), "", &security);
    let mut child = common::processes::serve(&config, "n1").await;
    let pid = child.id().expect("pid");
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().expect("addr");
    let client = chorus::client::Client::new(&url);
    assert_eq!(
        client.put("before", "1", None).await.expect("put").status,
        StatusCode::NO_CONTENT
    );
    let before = common::processes::rss(pid);
    let flood_for = Duration::from_secs(60);
    let start = std::time::Instant::now();
    let floods: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let (mut refused, mut offered) = (0u64, 0u64);
                let len: u64 = 60 << 20;
                let chunk = vec![0u8; 1 << 20];
                while start.elapsed() < flood_for {
                    let Ok(mut stream) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    if stream
                        .write_all(peer_head(&forged_auth(len), len).as_bytes())
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    let mut sent = 0;
                    while sent < len && start.elapsed() < flood_for {
                        if stream.write_all(&chunk).await.is_err() {
                            break; // refused and closed
                        }
                        sent += chunk.len() as u64;
                    }
                    offered += sent;
                    let mut answer = [0u8; 64];
                    let read =
                        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut answer))
                            .await;
                    if let Ok(Ok(n)) = read
                        && answer[..n].starts_with(b"HTTP/1.1 401")
                    {
                        refused += 1;
                    }
                }
                (refused, offered)
            })
        })
        .collect();
    let mut peak = before;
    let (mut served, mut failed) = (0u32, Vec::new());
    let mut i = 0;
    while start.elapsed() < flood_for {
        peak = peak.max(common::processes::rss(pid));
        let key = format!("during-{i}");
        i += 1;
        match client.put(&key, "1", None).await {
            Ok(r) if r.status == StatusCode::NO_CONTENT => {}
            other => failed.push(format!("PUT {key}: {other:?}")),
        }
        match client.get(&key).await {
            Ok(r) if r.status == StatusCode::OK => served += 1,
            other => failed.push(format!("GET {key}: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut refused, mut offered) = (0, 0);
    for flood in floods {
        let (r, o) = flood.await.expect("flood task");
        refused += r;
        offered += o;
    }
    peak = peak.max(common::processes::rss(pid));
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert!(
        failed.is_empty(),
        "clients failed under the flood: {failed:?}"
    );
    assert!(
        served >= 100,
        "only {served} client round trips in a minute"
    );
    assert!(
        refused >= 1_000,
        "only {refused} flood requests were refused: the flood was too thin to mean anything"
    );
    let grown = peak.saturating_sub(before);
    println!(
        "flood: {refused} requests refused, {} MiB written into sockets, RSS {} -> peak {} MiB, {served} client round trips",
        offered >> 20,
        before >> 20,
        peak >> 20
    );
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB under the flood (from {} MiB)",
        grown >> 20,
        before >> 20
    );
}
