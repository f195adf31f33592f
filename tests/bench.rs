//! `chorus bench`: every YCSB workload against a live node, round-robin
//! over several URLs, the open loop's schedule and its correction for
//! coordinated omission, the plots, and the Redis and etcd targets against
//! the real servers.
//!
//! Redis and etcd come from Debian (`redis-server`, `etcd-server`). Without
//! them those tests say so loudly and pass, except where
//! `CHORUS_REQUIRE_BENCH_PEERS` is set (CI), where a missing binary fails.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestNode, chorus};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Runs `chorus bench` with `args` and small defaults; returns its summary.
async fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--value-size", "64"];
    if !args.contains(&"--concurrency") {
        all.extend(["--concurrency", "4"]);
    }
    all.extend(args);
    let out = chorus(&all).await;
    assert!(out.status.success(), "{all:?}: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let runs = summary["runs"].as_array().expect("runs");
    // The table: a header, a rule, and one line per run.
    let rows = stderr.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(rows, runs.len() + 1, "{stderr}");
    summary
}

fn run_of<'a>(summary: &'a Value, workload: &str) -> &'a Value {
    summary["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["workload"] == workload))
        .unwrap_or_else(|| panic!("no run of {workload}: {summary}"))
}

fn operations(run: &Value) -> Vec<String> {
    let mut ops: Vec<String> = run["operations"]
        .as_object()
        .expect("operations")
        .keys()
        .cloned()
        .collect();
    ops.sort();
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_a_node_with_its_own_mix_of_operations() {
    let t = TestNode::start().await;
    let url = t.node.url();
    // The node runs in this test's process: its CPU is this process's.
    let me = std::process::id().to_string();
    let summary = bench(&[
        "--url",
        &url,
        "--server-pid",
        &me,
        "--workload",
        "a,b,c,d,e,f,put",
        "--duration",
        "1s",
        "--records",
        "50",
    ])
    .await;
    assert_eq!(summary["load"]["records"], 50, "{summary}");
    assert_eq!(summary["load"]["errors"], 0, "{summary}");
    for (workload, distribution, ops) in [
        ("a", "zipfian", vec!["read", "update"]),
        ("b", "zipfian", vec!["read", "update"]),
        ("c", "zipfian", vec!["read"]),
        ("d", "latest", vec!["insert", "read"]),
        ("e", "zipfian", vec!["insert", "scan"]),
        ("f", "zipfian", vec!["read", "rmw"]),
        ("put", "uniform", vec!["update"]),
    ] {
        let run = run_of(&summary, workload);
        assert_eq!(run["errors"], 0, "{run}");
        assert_eq!(run["distribution"], distribution, "{run}");
        assert!(run["requests"].as_u64().unwrap_or(0) > 10, "{run}");
        let counted: u64 = run["operations"]
            .as_object()
            .expect("operations")
            .values()
            .filter_map(|o| o["count"].as_u64())
            .sum();
        assert_eq!(Some(counted), run["requests"].as_u64(), "{run}");
        // B's 5% of updates can miss in a short run; every other mix shows.
        if workload != "b" {
            assert_eq!(operations(run), ops, "{workload}: {run}");
        }
        for field in ["p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(run["latency"][field].as_u64().is_some(), "{run}");
        }
        // The server's CPU over the run, per request: serving took some.
        let cpu = &run["server_cpu"];
        assert_eq!(cpu["pids"][0].as_u64(), Some(u64::from(std::process::id())));
        let per_request = cpu["us_per_request"].as_f64().unwrap_or(0.0);
        assert!(per_request > 0.0 && per_request.is_finite(), "{run}");
        assert_eq!(cpu["us_per_request_each"][0].as_f64(), Some(per_request));
    }
    // The load wrote every record; D inserted past them. A hot key may
    // hold siblings (concurrent workers' updates, below): every one of them
    // is the benchmark's value.
    let value = serde_json::json!("x".repeat(62));
    for key in ["bench-0", "bench-50"] {
        let reply = t.client.get(key).await.expect("get");
        let values = chorus::check::record::read_values(reply.status.as_u16(), &reply.body)
            .unwrap_or_else(|| panic!("{key}: {}", reply.status));
        assert!(!values.is_empty(), "{key} is missing");
        assert!(
            values
                .iter()
                .all(|v| *v == value.as_str().unwrap_or_default()),
            "{key}: {values:?}"
        );
    }
    // Writes carry the context last seen for their key, so the many
    // updates of a hot key leave at most one sibling per worker.
    for i in 0..50 {
        let reply = t.client.get(&format!("bench-{i}")).await.expect("get");
        let siblings = reply.json().expect("json")["siblings"]
            .as_array()
            .map_or(1, Vec::len);
        assert!(siblings <= 4, "bench-{i} has {siblings} siblings");
    }
    // Run again on the loaded node: the load reads before it writes, so it
    // adds no siblings either.
    bench(&[
        "--url",
        &url,
        "--workload",
        "c",
        "--duration",
        "1s",
        "--records",
        "50",
    ])
    .await;
    let again = t.client.get("bench-0").await.expect("get");
    assert_eq!(again.status, http::StatusCode::OK, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_are_used_round_robin_one_per_worker() {
    let t = TestNode::start().await;
    let good = t.node.url();
    // Nothing listens on the second URL: the workers given it fail, the
    // others succeed, so both were used.
    let dead = format!("http://127.0.0.1:{}", common::processes::free_ports(1)[0]);
    let summary = bench(&[
        "--url",
        &format!("{good},{dead}"),
        "--workload",
        "c",
        "--no-load",
        "--duration",
        "1s",
        "--records",
        "20",
    ])
    .await;
    let run = run_of(&summary, "c");
    assert!(run["requests"].as_u64().unwrap_or(0) > 0, "{run}");
    assert!(run["errors"].as_u64().unwrap_or(0) > 0, "{run}");
    assert_eq!(summary["urls"].as_array().map(Vec::len), Some(2));
}

/// A run on records an earlier process loaded first reads them to learn
/// their contexts, so its writes replace values instead of adding
/// siblings: before, each record's first write of every `--no-load` run
/// was blind and left a sibling, and the records grew them run after run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_load_learns_the_contexts_and_adds_no_siblings() {
    const RECORDS: u64 = 40;
    let t = TestNode::start().await;
    let url = t.node.url();
    let records = RECORDS.to_string();
    let common = ["--url", &url, "--records", &records, "--duration", "1s"];
    bench(&[&common[..], &["--workload", "c"]].concat()).await;
    // Few writes, most of them to records written once in the run: each
    // of those would keep a sibling if it were blind.
    let summary = bench(
        &[
            &common[..],
            &[
                "--no-load",
                "--workload",
                "put",
                "--rate",
                "20",
                "--concurrency",
                "1",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(summary["learned"]["records"], RECORDS, "{summary}");
    assert_eq!(summary["learned"]["errors"], 0, "{summary}");
    let written = run_of(&summary, "put")["requests"].as_u64().unwrap_or(0);
    assert!(written >= 10, "{written} writes: too few to mean anything");
    let mut with_siblings = Vec::new();
    for i in 0..RECORDS {
        let reply = t.client.get(&format!("bench-{i}")).await.expect("get");
        match reply.status.as_u16() {
            200 => {}
            300 => with_siblings.push(i),
            other => panic!("bench-{i}: {other}"),
        }
    }
    assert!(
        with_siblings.is_empty(),
        "records with siblings after {written} writes: {with_siblings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_what_is_due_and_times_it_from_when_it_was_due() {
    // 200 operations a second for 2 s: 400 are due, however fast or slow
    // the target answers.
    let summary = bench(&[
        "--target",
        "null",
        "--workload",
        "c",
        "--rate",
        "200",
        "--duration",
        "2s",
        "--records",
        "20",
    ])
    .await;
    let run = run_of(&summary, "c");
    let sent = run["requests"].as_u64().unwrap_or(0) + run["errors"].as_u64().unwrap_or(0);
    assert!((396..=404).contains(&sent), "{sent} sent: {run}");
    assert_eq!(run["rate_per_sec"], 200);

    // A server that takes 40 ms per request, one worker due every 20 ms for
    // 1 s: a closed loop would report 40 ms, but the due operations queue
    // up behind the slow ones and their latency grows with the queue (the
    // last of the 50 is due at 0.98 s and answered at about 2 s).
    let (addr, server) = slow_server(Duration::from_millis(40)).await;
    let summary = bench(&[
        "--url",
        &format!("http://{addr}"),
        "--concurrency",
        "1",
        "--workload",
        "c",
        "--no-load",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--records",
        "20",
    ])
    .await;
    server.abort();
    let run = run_of(&summary, "c");
    let p99 = run["latency"]["p99_us"].as_u64().unwrap_or(0);
    assert!(
        p99 > 400_000,
        "p99 {p99} us: the queued operations' wait is not counted: {run}"
    );
    assert!(run["requests"].as_u64().unwrap_or(0) > 0, "{run}");
}

/// An HTTP/1.1 server on loopback that answers every request with `{}`
/// after `delay`, one request at a time per connection.
async fn slow_server(delay: Duration) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // Requests without bodies (reads): one per blank line.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_and_plots_over_time_are_written_per_workload() {
    let dir = tempfile::tempdir().expect("dir");
    let json = dir.path().join("run.json");
    bench(&[
        "--target",
        "null",
        "--workload",
        "a,put",
        "--duration",
        "3s",
        "--records",
        "50",
        "--out",
        json.to_str().expect("path"),
    ])
    .await;
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).expect("JSON");
    for workload in ["a", "put"] {
        let run = run_of(&summary, workload);
        // The null server measures its own threads, not the client's.
        let null_cpu = run["server_cpu"]["us_per_request"].as_f64().unwrap_or(0.0);
        assert!(null_cpu > 0.0 && null_cpu.is_finite(), "{run}");
        assert_eq!(run["server_cpu"]["pids"].as_array().map(Vec::len), Some(0));
        let timeline = run["timeline"].as_array().expect("timeline");
        assert!(timeline.len() >= 2, "{run}");
        let per_second: u64 = timeline.iter().filter_map(|s| s["requests"].as_u64()).sum();
        assert_eq!(
            Some(per_second),
            run["requests"].as_u64(),
            "every request in a second"
        );
        assert!(
            timeline
                .iter()
                .all(|s| s["p99_us"].as_u64() >= s["p50_us"].as_u64())
        );
        for plot in ["throughput", "latency"] {
            let name = format!("run-{workload}-{plot}.png");
            let bytes = std::fs::read(dir.path().join(&name)).expect(&name);
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{name} is not a PNG"
            );
            assert!(bytes.len() > 5_000, "{name} is nearly empty");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_count_each_op_and_keep_learning_contexts() {
    const RECORDS: u64 = 50;
    let t = TestNode::start().await;
    let url = t.node.url();
    let records = RECORDS.to_string();
    let common = ["--url", &url, "--records", &records, "--duration", "1s"];
    let args = ["--workload", "c,put", "--batch", "10", "--concurrency", "1"];
    let summary = bench(&[&common[..], &args[..]].concat()).await;
    for workload in ["c", "put"] {
        let run = run_of(&summary, workload);
        assert_eq!(run["errors"], 0, "{run}");
        let requests = run["requests"].as_u64().unwrap_or(0);
        // Whole batches of 10 ops, each op counted.
        assert!(
            requests >= 100 && requests.is_multiple_of(10),
            "{workload}: {requests}"
        );
    }
    let op = if operations(run_of(&summary, "c")) == ["read"] {
        "read"
    } else {
        "?"
    };
    assert_eq!(op, "read");
    // The writes carried the contexts the batch reads and writes returned:
    // no record holds siblings.
    for i in 0..RECORDS {
        let reply = t.client.get(&format!("bench-{i}")).await.expect("get");
        assert_eq!(reply.status.as_u16(), 200, "bench-{i}");
    }
    for (args, says) in [
        (&["--target", "null", "--batch", "2"][..], "only chorus"),
        (
            &["--url", url.as_str(), "--workload", "f", "--batch", "2"][..],
            "workload F",
        ),
        (&["--batch", "1001"][..], "1001"),
    ] {
        let out = chorus(&[&["bench"][..], args].concat()).await;
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bench_input_is_a_clear_error() {
    let out = chorus(&["bench", "--target", "redis", "--url", "redis://127.0.0.1:1"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach Redis"),
        "{out:?}"
    );
    // A server PID that names no process: refused before any load.
    let out = chorus(&[
        "bench",
        "--url",
        "http://127.0.0.1:1",
        "--server-pid",
        "4294967295",
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server-pid"),
        "{out:?}"
    );
    let out = chorus(&["bench", "--workload", "g"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'g'"));
    // Scans are chorus's alone, one request per scan.
    for args in [&["--target", "null"][..], &["--batch", "2"][..]] {
        let out = chorus(&[&["bench", "--workload", "e"][..], args].concat()).await;
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("workload E scans"), "{args:?}: {stderr}");
    }
}

/// `name` on PATH, or None with a loud note (a failure where CI requires it).
fn peer_binary(name: &str, package: &str) -> Option<String> {
    let found = common::on_path(name);
    if found.is_none() {
        assert!(
            std::env::var_os("CHORUS_REQUIRE_BENCH_PEERS").is_none(),
            "CHORUS_REQUIRE_BENCH_PEERS is set but `{name}` is not on PATH"
        );
        eprintln!("\n*** SKIPPED: no `{name}` on PATH; install Debian's {package} ***\n");
    }
    found.map(|p| p.display().to_string())
}

/// A started peer server, stopped by its PID when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port} after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_answers_the_workloads_and_holds_what_was_loaded() {
    let Some(redis) = peer_binary("redis-server", "redis-server") else {
        return;
    };
    let port = common::processes::free_ports(1)[0];
    let _server = Peer(
        Command::new(redis)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server"),
    );
    wait_for_port(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let summary = bench(&[
        "--target",
        "redis",
        "--url",
        &url,
        "--workload",
        "a,d,f",
        "--duration",
        "1s",
        "--records",
        "100",
    ])
    .await;
    for workload in ["a", "d", "f"] {
        let run = run_of(&summary, workload);
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["requests"].as_u64().unwrap_or(0) > 10, "{run}");
    }
    // The values are really there, under the bench's keys.
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let value: Vec<u8> = redis::cmd("GET")
        .arg("bench-99")
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(value, format!("\"{}\"", "x".repeat(62)).into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_answers_the_workloads_through_its_json_gateway() {
    let Some(etcd) = peer_binary("etcd", "etcd-server") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let ports = common::processes::free_ports(2);
    let (client_url, peer_url) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    );
    let _server = Peer(
        Command::new(etcd)
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e1={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd"),
    );
    wait_for_port(ports[0]).await;
    let summary = bench(&[
        "--target",
        "etcd",
        "--url",
        &client_url,
        "--workload",
        "a,d",
        "--duration",
        "1s",
        "--records",
        "50",
    ])
    .await;
    for workload in ["a", "d"] {
        let run = run_of(&summary, workload);
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["requests"].as_u64().unwrap_or(0) > 10, "{run}");
    }
    // A key the load wrote is found; one never written is not.
    let client = chorus::client::Client::new(&client_url);
    let found = chorus::bench::etcd::get(&client, "bench-49")
        .await
        .expect("range");
    assert!(chorus::bench::etcd::found(&found), "{found:?}");
    let absent = chorus::bench::etcd::get(&client, "never")
        .await
        .expect("range");
    assert!(!chorus::bench::etcd::found(&absent), "{absent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_counted_measured_and_each_answered_by_its_write() {
    let t = TestNode::start().await;
    let url = t.node.url();
    // The node runs in this test's process: its memory and CPU are this
    // process's.
    let pid = std::process::id().to_string();
    let args = [
        "bench",
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--watchers",
        "300",
        "--notify",
        "30",
        "--duration",
        "300ms",
    ];
    let out = chorus(&args).await;
    assert!(out.status.success(), "{out:?}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["watchers"], 300);
    assert_eq!(summary["connections"], 2, "150 streams a connection");
    assert_eq!(summary["notified"], 30, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(summary["rss_waiting_bytes"].as_u64() > Some(0));
    assert!(summary["notify_latency"]["p99_us"].as_u64() > Some(0));
    // Every watch was dropped at the end: the node holds none.
    let metrics = common::series(&t.client, &["chorus_watchers"]).await;
    assert!(metrics.contains("chorus_watchers 0"), "{metrics}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("| watchers |"), "{stderr}");
}
