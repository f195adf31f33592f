//! The `chorus` command line: client verbs against a live node, `serve`
//! refusing a bad config, `dev` starting and stopping (`bench` has tests/bench.rs).

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{TestNode, chorus, chorus_bin};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn context_line(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("context: "))
        .expect("a context line")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_change_it_waits_for() {
    let t = TestNode::start().await;
    let url = t.node.url();
    let watching = {
        let url = url.clone();
        tokio::spawn(async move {
            chorus(&[
                "watch",
                "cfg",
                "--count",
                "2",
                "--timeout-ms",
                "300",
                "--url",
                &url,
            ])
            .await
        })
    };
    // The watch times out and watches again until the first write.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!watching.is_finished());
    t.client.put("cfg", r#""v1""#, None).await.expect("put");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = t.client.get("cfg").await.expect("get");
    let context = seen.context().expect("context").to_string();
    t.client
        .put("cfg", r#""v2""#, Some(&context))
        .await
        .expect("put");
    let out = watching.await.expect("watch");
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let (one, two) = (text.find("\"v1\""), text.find("\"v2\""));
    assert!(one.is_some() && two.is_some() && one < two, "{text}");
    assert_eq!(text.matches("context: ").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_follows_the_feed_and_prints_where_to_resume() {
    let t = TestNode::start().await;
    let url = t.node.url();
    let args = |since: &str| {
        let url = url.clone();
        let since = since.to_string();
        tokio::spawn(async move {
            let args = ["changes", "--prefix", "jobs/", "--count", "2"];
            let more = ["--timeout-ms", "300", "--since", &since, "--url", &url];
            chorus(&[&args[..], &more[..]].concat()).await
        })
    };
    let following = args("now");
    // It asks again at each timeout until changes come.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!following.is_finished());
    for key in ["other/1", "jobs/1", "jobs/2"] {
        t.client.put(key, "1", None).await.expect("put");
    }
    let out = following.await.expect("changes");
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let keys: Vec<_> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["key"].clone())
        .collect();
    assert_eq!(keys, ["jobs/1", "jobs/2"], "{text}");
    // The cursor it printed resumes after what it printed.
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let cursor = err
        .lines()
        .find_map(|l| l.strip_prefix("resume with --since "))
        .expect("where to resume")
        .to_string();
    t.client.put("jobs/3", "1", None).await.expect("put");
    let resumed = args(&cursor);
    t.client.put("jobs/4", "1", None).await.expect("put");
    let out = resumed.await.expect("changes");
    let text = stdout(&out);
    assert!(text.contains("jobs/3") && text.contains("jobs/4"), "{text}");
    assert!(!text.contains("jobs/1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_sadd_srem_and_crdt_print_the_states() {
    let t = TestNode::start().await;
    let url = t.node.url();
    let up = chorus(&["incr", "hits", "5", "--url", &url]).await;
    assert!(up.status.success(), "{up:?}");
    assert!(stdout(&up).contains(r#""value": 5"#), "{}", stdout(&up));
    let down = chorus(&["incr", "hits", "-7", "--url", &url]).await;
    assert!(
        stdout(&down).contains(r#""value": -2"#),
        "{}",
        stdout(&down)
    );
    for _ in 0..2 {
        let once = chorus(&[
            "incr",
            "hits",
            "10",
            "--idempotency-key",
            "k1",
            "--url",
            &url,
        ])
        .await;
        assert!(once.status.success());
    }
    let read = stdout(&chorus(&["crdt", "hits", "--url", &url]).await);
    assert!(read.contains(r#""value": 8"#), "retried once: {read}");

    let add = chorus(&["sadd", "tags", "a", "b", "c", "--url", &url]).await;
    assert!(add.status.success());
    assert!(stdout(&add).starts_with("ok"));
    let rem = chorus(&["srem", "tags", "b", "--url", &url]).await;
    assert!(rem.status.success());
    let read = stdout(&chorus(&["crdt", "tags", "--url", &url]).await);
    assert!(
        read.contains("\"a\"") && read.contains("\"c\"") && !read.contains("\"b\""),
        "{read}"
    );
    context_line(&read);

    let wrong = chorus(&["sadd", "hits", "x", "--url", &url]).await;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("type_mismatch"));
    let missing = chorus(&["crdt", "nothing", "--url", &url]).await;
    assert_eq!(missing.status.code(), Some(1));

    // --field updates a map's field.
    let field = |verb: &'static str, args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec![verb, "page"];
            all.extend(args);
            all.extend(["--url", url.as_str()]);
            chorus(&all).await
        }
    };
    assert!(
        field("incr", &["3", "--field", "visits"])
            .await
            .status
            .success()
    );
    assert!(
        field("sadd", &["ann", "bob", "--field", "by"])
            .await
            .status
            .success()
    );
    assert!(
        field("srem", &["ann", "--field", "by"])
            .await
            .status
            .success()
    );
    let read = stdout(&chorus(&["crdt", "page", "--url", &url]).await);
    let state: serde_json::Value = serde_json::from_str(
        read.lines()
            .take_while(|l| !l.starts_with("context"))
            .collect::<String>()
            .trim(),
    )
    .unwrap_or_else(|e| panic!("{e}: {read}"));
    assert_eq!(
        state,
        serde_json::json!({"type": "map", "value": {
            "by": {"type": "set", "value": ["bob"]},
            "visits": {"type": "counter", "value": 3},
        }})
    );
    let wrong = field("sadd", &["x", "--field", "visits"]).await;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("field `visits`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_print_values_siblings_and_contexts() {
    let t = TestNode::start().await;
    let url = t.node.url();
    let put = chorus(&["put", "fruit", r#"{"name":"apple"}"#, "--url", &url]).await;
    assert!(put.status.success(), "{put:?}");
    assert!(stdout(&put).starts_with("ok"));

    let get = chorus(&["get", "fruit", "--url", &url]).await;
    assert!(get.status.success());
    let text = stdout(&get);
    assert!(text.contains(r#""name": "apple""#), "{text}");
    let ctx = context_line(&text);

    chorus(&[
        "put",
        "fruit",
        r#""pear""#,
        "--context",
        &ctx,
        "--url",
        &url,
    ])
    .await;
    chorus(&[
        "put",
        "fruit",
        r#""plum""#,
        "--context",
        &ctx,
        "--url",
        &url,
    ])
    .await;
    let siblings = stdout(&chorus(&["get", "fruit", "--url", &url]).await);
    assert!(siblings.starts_with("2 siblings"), "{siblings}");
    assert!(siblings.contains("\"pear\"") && siblings.contains("\"plum\""));

    let merged = context_line(&siblings);
    let resolve = chorus(&[
        "put",
        "fruit",
        r#""fig""#,
        "--context",
        &merged,
        "--url",
        &url,
    ])
    .await;
    assert!(resolve.status.success());
    assert_eq!(
        stdout(&chorus(&["get", "fruit", "--url", &url]).await)
            .lines()
            .next(),
        Some("\"fig\"")
    );

    let ctx = context_line(&stdout(&chorus(&["get", "fruit", "--url", &url]).await));
    let delete = chorus(&["delete", "fruit", "--context", &ctx, "--url", &url]).await;
    assert!(delete.status.success());
    let gone = chorus(&["get", "fruit", "--url", &url]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(stdout(&gone).starts_with("not found (deleted)"));

    let bad = chorus(&["put", "fruit", "{oops", "--url", &url]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_expiring_writes_from_the_cli() {
    let t = TestNode::start().await;
    let url = t.node.url();
    let create = ["put", "lock", "\"ann\"", "--if-none-match", "--url", &url];
    assert_eq!(chorus(&create).await.status.code(), Some(0));
    let again = chorus(&["put", "lock", "\"bob\"", "--if-none-match", "--url", &url]).await;
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("precondition_failed"));

    let ctx = context_line(&stdout(&chorus(&["get", "lock", "--url", &url]).await));
    let update = ["put", "lock", "\"cy\"", "--if-match", &ctx, "--url", &url];
    assert_eq!(chorus(&update).await.status.code(), Some(0));
    // The same context again: the update above wrote since.
    let stale = chorus(&["delete", "lock", "--if-match", &ctx, "--url", &url]).await;
    assert_eq!(stale.status.code(), Some(3), "{stale:?}");
    let get = stdout(&chorus(&["get", "lock", "--url", &url]).await);
    assert!(get.starts_with("\"cy\""), "{get}");
    // A TTL: the instant is printed with the write and the read.
    let put = chorus(&["put", "lease", "1", "--ttl-ms", "60000", "--url", &url]).await;
    assert!(stdout(&put).contains("expires: 20"), "{put:?}");
    let read = stdout(&chorus(&["get", "lease", "--url", &url]).await);
    assert!(read.contains("expires: 20"), "{read}");
}

/// Runs `chorus serve` on a config with `text` and returns its exit code and stderr.
async fn serve_with(text: &str, node: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_str().expect("utf8 path");
    let out = chorus(&["serve", "--config", path, "--node", node]).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serve_refuses_a_bad_config_and_names_the_key() {
    let shipped = include_str!("../config/cluster.toml");
    let (code, err) = serve_with(&shipped.replace("w = 2", "w = 5"), "n1").await;
    assert_eq!(code, Some(2));
    assert!(err.contains("cluster.w"), "{err}");

    let (code, err) = serve_with(&format!("{shipped}\nsurprise = true\n"), "n1").await;
    assert_eq!(code, Some(2));
    assert!(err.contains("surprise"), "{err}");

    let (code, err) = serve_with(shipped, "n9").await;
    assert_eq!(code, Some(2));
    assert!(err.contains("no node `n9`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    // Three consecutive free ports below the ephemeral range, where the
    // connections of tests running alongside cannot take them.
    let port = (0..1000u16)
        .map(|i| 20_000 + (std::process::id() as u16 % 4000) + i * 3)
        .find(|&base| {
            (base..base + 3).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .expect("three consecutive free ports");
    let mut child = Command::new(chorus_bin())
        .args(["dev", "--base-port", &port.to_string(), "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dev");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = format!("http://127.0.0.1:{port}");
    let mut printed = String::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(
        printed.contains(&url),
        "dev did not print its URL:\n{printed}"
    );
    assert!(
        printed.contains("curl"),
        "dev did not print what to try:\n{printed}"
    );

    let client = chorus::client::Client::new(&url);
    let put = client.put("hello", "\"dev\"", None).await.expect("put");
    assert_eq!(put.status, 204, "{:?}", put.body);
    assert!(dir.path().join("n1").exists(), "data is not under --data");
    // Three nodes, and any of them serves the key.
    let third = format!("http://127.0.0.1:{}", port + 2);
    assert!(
        printed.contains(&third),
        "dev did not start three nodes:\n{printed}"
    );
    let reply = chorus::client::Client::new(&third)
        .get("hello")
        .await
        .expect("get");
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (200, &b"\"dev\""[..])
    );

    let pid = child.id().expect("pid").to_string();
    let term = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("kill");
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("dev did not stop on SIGTERM")
        .expect("wait");
    assert!(status.success(), "dev exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_ring_prints_one_json_object_and_meets_its_targets() {
    let out = chorus(&[
        "sim", "ring", "--nodes", "150", "--keys", "150000", "--json",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    let number = |k: &str| {
        report[k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k} in {report}"))
    };
    assert_eq!(report["converged"], true, "{report}");
    assert_eq!(number("correct_after_convergence"), 1.0);
    // ½·log2(nodes × tokens) + 1 is the target; nodes routing with all
    // their tokens' fingers do better.
    assert!(
        number("mean_hops") <= 0.5 * (150.0f64 * 16.0).log2() + 1.0,
        "{report}"
    );
    assert!(number("p99_hops") >= number("mean_hops"));
    assert!(number("rounds_to_converge") >= 1.0);
    let churn = number("correct_during_churn");
    assert!((0.5..=1.0).contains(&churn), "{report}");
    assert!(number("load_max_over_mean") <= 1.3, "{report}");
    // The table form names the same figures.
    let out = chorus(&["sim", "ring", "--nodes", "20", "--keys", "1000"]).await;
    assert!(stdout(&out).contains("lookup hops"), "{}", stdout(&out));
}

/// Left out, `worker_threads` is the node's share of the machine's cores
/// among the nodes the cluster file puts on its host: three on loopback
/// take a third each (at least one), so they do not oversubscribe it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_host_share_its_cores_by_default() {
    let dir = tempfile::tempdir().expect("dir");
    let ports = common::processes::free_ports(3);
    let path = common::processes::write_config(dir.path(), &ports);
    let mut child = common::processes::serve(&path, "n1").await;
    let client = chorus::client::Client::new(&format!("http://127.0.0.1:{}", ports[0]));
    let workers = common::metric(&client, "chorus_runtime_workers").await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(workers, (cores / 3).max(1) as f64, "{cores} cores");
}

/// `[[nodes]] worker_threads` sizes `chorus serve`'s runtime, as the node
/// reports it in `chorus_runtime_workers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_as_many_runtime_threads_as_its_node_asks() {
    for threads in [1usize, 3] {
        let dir = tempfile::tempdir().expect("dir");
        let (path, url) = common::processes::one_node_config(
            dir.path(),
            "",
            &format!("worker_threads = {threads}"),
        );
        let mut child = common::processes::serve(&path, "n1").await;
        let client = chorus::client::Client::new(&url);
        let workers = common::metric(&client, "chorus_runtime_workers").await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        assert_eq!(workers, threads as f64);
    }
}

/// `chorus scan` prints a line per key in order, a `next:` line when more
/// remain, goes on from `--cursor`, follows every page with `--all`, and
/// prints a bad limit's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_prints_keys_in_order_page_by_page() {
    let t = TestNode::start().await;
    let url = t.node.url();
    for i in (0..12).rev() {
        let key = format!("fruit/{i:02}");
        let put = chorus(&["put", &key, &i.to_string(), "--url", &url]).await;
        assert!(put.status.success(), "{put:?}");
    }
    chorus(&["put", "veg/leek", "1", "--url", &url]).await;
    let page =
        stdout(&chorus(&["scan", "--prefix", "fruit/", "--limit", "5", "--url", &url]).await);
    let lines: Vec<&str> = page.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "fruit/00\t0",
            "fruit/01\t1",
            "fruit/02\t2",
            "fruit/03\t3",
            "fruit/04\t4"
        ]
    );
    let next = lines[5].strip_prefix("next: ").expect("a next line");
    let args = [
        "scan", "--prefix", "fruit/", "--limit", "5", "--cursor", next, "--url", &url,
    ];
    let more = stdout(&chorus(&args).await);
    assert!(more.starts_with("fruit/05\t5\n"), "{more}");
    let all = chorus(&[
        "scan",
        "--prefix",
        "fruit/",
        "--limit",
        "5",
        "--all",
        "--keys-only",
        "--url",
        &url,
    ])
    .await;
    assert!(all.status.success());
    let keys: Vec<String> = (0..12).map(|i| format!("fruit/{i:02}")).collect();
    assert_eq!(stdout(&all).lines().collect::<Vec<_>>(), keys);
    let bad = chorus(&["scan", "--limit", "0", "--url", &url]).await;
    assert!(!bad.status.success());
    let said = format!("{}{}", stdout(&bad), String::from_utf8_lossy(&bad.stderr));
    assert!(said.contains("limit"), "{said}");
}

/// A `--url` that is not a node's address, or a node that is not there,
/// gets a message that says what to write or what failed, and exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_unreachable_url_says_what_is_wrong() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bare = format!("127.0.0.1:{port}");
    let url = format!("http://{bare}");
    let with_path = format!("{url}/kv");
    let cases = [
        (bare.as_str(), "has no scheme; write http://"),
        (with_path.as_str(), "has a path"),
        ("http://", "http://host:port"),
        (url.as_str(), "cannot reach"),
    ];
    for (given, says) in cases {
        let out = chorus(&["get", "k", "--url", given]).await;
        assert_eq!(out.status.code(), Some(2), "{given}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{given}: {stderr}");
        assert!(!stderr.contains("replica"), "{given}: {stderr}");
    }
    let help = chorus(&["--help"]).await;
    assert!(
        stdout(&help).contains("Exit codes: 0 done; 1 the key"),
        "{help:?}"
    );
}

/// `chorus sim cluster` prints its summary and nothing else unless asked:
/// the nodes' logs come with --verbose (or RUST_LOG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_prints_its_summary_only() {
    let run = Command::new(chorus_bin())
        .args(["sim", "cluster", "--seed", "3"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the seed finished within 120 s")
        .expect("run chorus");
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("seed 3"), "{}", stdout(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "logs without --verbose:\n{stderr}"
    );
}
