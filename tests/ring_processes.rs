//! Five real `chorus serve` processes on loopback. One is SIGKILLed: keys
//! it does not hold stay readable and writable through every live node
//! (routing goes around it), and keys it held stay readable from the other
//! replicas. Then `chorus remove` takes it out, its ranges pass to the next
//! nodes, `chorus status` shows the ring, and `chorus leave` takes a second
//! node out gracefully: every acknowledged write stays readable throughout.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use chorus::client::Client;
use chorus::config::Config;
use chorus::ring::{Members, position};
use common::processes::{cli, free_ports, serve, write_config};
use http::{Method, StatusCode};

const NODES: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_does_not_stop_lookups_for_keys_it_does_not_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(NODES);
    let path = write_config(dir.path(), &ports);
    let config = Config::load(&path).expect("config");
    let mut children = Vec::new();
    for i in 0..NODES {
        children.push(serve(&path, &format!("n{}", i + 1)).await);
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();

    // The placement every node computes from the config.
    let initial = config.nodes.iter().map(|n| {
        (
            n.id.as_str(),
            n.listen.as_str(),
            n.zone.as_deref(),
            n.weight,
        )
    });
    let ring = Members::initial(initial, config.ring.tokens).ring();
    let holds_n5 = |key: &str| {
        ring.preference_list(position(key.as_bytes()), 3)
            .contains(&"n5")
    };

    let mut acked = HashMap::new();
    for i in 0..200 {
        let key = format!("k{i}");
        let reply = clients[i % NODES]
            .put(&key, format!("{i}"), None)
            .await
            .expect("put");
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{key}");
        acked.insert(key, i.to_string());
    }

    children[4].start_kill().expect("SIGKILL n5");
    children[4].wait().await.expect("reap n5");

    // Every live node serves every key n5 does not hold, at once, both
    // reads and writes, whether it replicates the key or forwards it.
    let (without, with): (Vec<_>, Vec<_>) = acked.keys().cloned().partition(|k| !holds_n5(k));
    assert!(
        without.len() > 40 && with.len() > 40,
        "{} / {}",
        without.len(),
        with.len()
    );
    for (c, client) in clients.iter().enumerate().take(4) {
        for key in &without {
            let reply = client.get(key).await.expect("get");
            assert_eq!(reply.status, StatusCode::OK, "{key} through n{}", c + 1);
            assert_eq!(String::from_utf8_lossy(&reply.body), acked[key]);
        }
    }
    let mut fresh = 0;
    for i in 0..400 {
        let key = format!("fresh{i}");
        if holds_n5(&key) {
            continue;
        }
        let reply = clients[i % 4].put(&key, "1", None).await.expect("put");
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{key}: {:?}",
            reply.body
        );
        acked.insert(key, "1".into());
        fresh += 1;
    }
    assert!(fresh > 100);
    // Keys n5 held still have two live replicas: R = 2 reads succeed.
    for key in &with {
        let reply = clients[0].get(key).await.expect("get");
        assert_eq!(reply.status, StatusCode::OK, "{key}");
    }

    // The operator removes the dead node; its ranges pass to the next nodes.
    let (ok, out) = cli(&["remove", "n5", "--url", &urls[0]]).await;
    assert!(ok, "chorus remove failed: {out}");
    let (ok, status) = cli(&["status", "--url", &urls[1]]).await;
    assert!(ok);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = clients[2]
            .request(Method::GET, "/cluster", &[], Bytes::new())
            .await
            .expect("cluster");
        let body = reply.json().expect("json");
        let n5 = body["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["id"] == "n5").cloned())
            .expect("n5 listed");
        if n5["status"] == "removed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "n3 never heard of the removal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status.contains("n5") && status.contains("NODE"), "{status}");
    assert!(
        status.contains("HINTS") && status.contains("AE LAG"),
        "{status}"
    );
    // A live member answers with its own figures; the dead n5 shows `-`.
    let row = |id: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .map(|l| l.split_whitespace().rev().take(2).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(
        row("n1").iter().all(|v| v.parse::<u64>().is_ok()),
        "{status}"
    );
    assert_eq!(row("n5"), ["-", "-"], "{status}");
    // The keys n5 held are handed to their new third replicas...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut pushed = 0.0;
        for client in &clients[..4] {
            pushed += common::metric(client, "chorus_handoff_keys_total{kind=\"pushed\"}").await;
        }
        if pushed >= with.len() as f64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {pushed} keys handed off"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and every acknowledged write is readable through every live node.
    for (c, client) in clients.iter().enumerate().take(4) {
        for (key, value) in &acked {
            let reply = client.get(key).await.expect("get");
            assert_eq!(reply.status, StatusCode::OK, "{key} through n{}", c + 1);
            assert_eq!(&String::from_utf8_lossy(&reply.body), value);
        }
    }

    // n4 leaves gracefully: `chorus leave` follows it until it is gone, and
    // the process exits by itself.
    let (ok, out) = cli(&["leave", "--url", &urls[3]]).await;
    assert!(ok && out.contains("left the ring"), "chorus leave: {out}");
    let exited = tokio::time::timeout(Duration::from_secs(20), children[3].wait())
        .await
        .expect("n4 did not exit after leaving")
        .expect("wait n4");
    let log = std::fs::read_to_string(dir.path().join("n4.log")).unwrap_or_default();
    assert!(exited.success(), "n4 exited with {exited}:\n{log}");
    for (c, client) in clients.iter().enumerate().take(3) {
        for (key, value) in &acked {
            let reply = client.get(key).await.expect("get");
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{key} through n{} after the leave",
                c + 1
            );
            assert_eq!(&String::from_utf8_lossy(&reply.body), value);
        }
    }
    for child in &mut children[..3] {
        child.start_kill().expect("kill");
        let _ = child.wait().await;
    }
}
