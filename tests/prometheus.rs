//! A real Prometheus scrapes a real three-node cluster, and every dashboard
//! and alert expression runs through its HTTP API: each must parse, and
//! each dashboard panel must return data.
//!
//! The test needs Debian's `prometheus` binary. Without it the test says so
//! loudly and passes, except where `CHORUS_REQUIRE_PROMETHEUS` is set (CI),
//! where a missing binary fails it.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::client::{Client, key_path};
use chorus::config::AntiEntropyMode;
use common::cluster::TestCluster;
use common::dashboards::{alert_exprs, panels};
use http::{Method, StatusCode};
use tokio::process::Command;

/// Runs one instant query; `Ok(series returned)` or the error Prometheus gave.
async fn query(prometheus: &Client, expr: &str) -> Result<usize, String> {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$job", "chorus");
    let encoded: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let reply = prometheus
        .request(
            Method::GET,
            &format!("/api/v1/query?query={encoded}"),
            &[],
            Bytes::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{expr}: {}", body["error"]));
    }
    Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
}

async fn put(client: &Client, key: &str, query: &str, body: &str) -> StatusCode {
    let headers = [("content-type", "application/json")];
    let path = format!("{}?{query}", key_path(key));
    let reply = client
        .request(Method::PUT, &path, &headers, Bytes::from(body.to_string()))
        .await
        .expect("put");
    reply.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_and_alert_expression_runs_against_a_real_prometheus() {
    let Some(binary) = common::on_path("prometheus") else {
        assert!(
            std::env::var_os("CHORUS_REQUIRE_PROMETHEUS").is_none(),
            "CHORUS_REQUIRE_PROMETHEUS is set but no prometheus binary is on PATH"
        );
        eprintln!(
            "\n*** SKIPPED: no `prometheus` on PATH; install Debian's prometheus package to run the dashboards against a real Prometheus ***\n"
        );
        return;
    };
    // N = 2 of 3 nodes, so that requests are forwarded and hints have
    // fallbacks; operation mode, so that the op-log panels have data.
    let mut cluster = TestCluster::start_with(3, 0, 2, |c| {
        c.antientropy.mode = AntiEntropyMode::Operation;
        c.antientropy.interval_ms = 100;
        c.antientropy.purge_interval_ms = 300;
    })
    .await;
    let targets: Vec<String> = (0..3)
        .map(|i| format!("\"{}\"", cluster.node(i).addr))
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let port = common::processes::free_ports(1)[0];
    let alerts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/alerts.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: chorus\n    static_configs:\n      - targets: [{}]\n",
            alerts.display(),
            targets.join(", ")
        ),
    )
    .expect("write config");
    let mut prometheus = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let api = Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = api
            .request(Method::GET, "/-/ready", &[], Bytes::new())
            .await;
        if ready.is_ok_and(|r| r.status == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A healthy cluster under plain traffic: every query of every panel
    // has a series already (counters start at zero for the label values
    // they know, so a panel shows 0, not "No data").
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    for i in 0..30 {
        let client = &clients[i % 3];
        assert_eq!(
            put(client, &format!("h{i}"), "w=2", "1").await,
            StatusCode::NO_CONTENT
        );
        assert!(client.get(&format!("h{i}")).await.is_ok());
    }
    // Until Prometheus has scraped every node twice (a rate needs two
    // samples), some queries are empty whatever the node exports.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut without = Vec::new();
        let mut asked = 0;
        for panel in panels() {
            for expr in &panel.exprs {
                match query(&api, expr).await {
                    Ok(0) => without.push(format!("{} / {}: {expr}", panel.file, panel.title)),
                    Ok(_) => {}
                    Err(e) => panic!("{} / {}: the query failed: {e}", panel.file, panel.title),
                }
                asked += 1;
            }
        }
        assert!(asked >= 40, "{asked} queries asked");
        if without.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queries without a series on a healthy cluster: {without:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Traffic that feeds every panel: writes, reads and deletes through
    // every node (forwards), a crowded key (siblings), a lonely write
    // (read repair), a stopped node (hints, quorum failures, handoff
    // failures) that returns (hints delivered), deletes (purge).
    for i in 0..300 {
        let client = &clients[i % 3];
        assert_eq!(
            put(client, &format!("k{i}"), "w=2", "1").await,
            StatusCode::NO_CONTENT
        );
        assert!(client.get(&format!("k{}", i / 2)).await.is_ok());
    }
    for i in 0..50 {
        let ctx = common::read_context(&clients[0], &format!("k{i}")).await;
        let reply = clients[0]
            .delete(&format!("k{i}"), Some(&ctx))
            .await
            .expect("delete");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    for _ in 0..30 {
        assert_eq!(
            put(&clients[1], "crowded", "w=1", "2").await,
            StatusCode::NO_CONTENT
        );
    }
    let _ = clients[2].get("crowded").await.expect("get crowded");
    let lonely = chorus::replica::rpc::Coordinate {
        key: "lonely".into(),
        context: Default::default(),
        content: chorus::version::Content::Value(Bytes::from_static(b"3")),
        request_id: None,
    };
    let placer = cluster.node(0).cluster().clone();
    let owner = placer.routes().preference_list("lonely")[0].clone();
    let owner = owner.trim_start_matches('n').parse::<usize>().expect("id") - 1;
    let written = common::peer_rpc(&clients[owner], lonely).await;
    assert!(written.is_ok(), "lonely write: {written:?}");
    let _ = clients[owner]
        .request(
            Method::GET,
            &format!("{}?r=all", key_path("lonely")),
            &[],
            Bytes::new(),
        )
        .await
        .expect("read lonely");
    cluster.stop(2).await;
    for i in 300..400 {
        let _ = put(&clients[i % 2], &format!("k{i}"), "w=1", "4").await;
        let _ = put(&clients[i % 2], &format!("k{i}"), "w=all&pw=all", "5").await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(2).await;
    // Enough scrapes for rates over a 1m window.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut empty = Vec::new();
    let mut checked = 0;
    for panel in panels() {
        let mut series = 0;
        for expr in &panel.exprs {
            match query(&api, expr).await {
                Ok(n) => series += n,
                Err(e) => panic!("{} / {}: the query failed: {e}", panel.file, panel.title),
            }
            checked += 1;
        }
        if series == 0 {
            empty.push(format!("{} / {}", panel.file, panel.title));
        }
    }
    assert!(empty.is_empty(), "panels without data: {empty:#?}");
    for expr in alert_exprs() {
        if let Err(e) = query(&api, &expr).await {
            panic!("alert expression failed: {e}");
        }
        checked += 1;
    }
    assert!(checked >= 45, "{checked} expressions run");
    // The rules loaded: Prometheus lists every alert of config/alerts.yml.
    let rules = api
        .request(Method::GET, "/api/v1/rules", &[], Bytes::new())
        .await
        .expect("rules");
    let rules: serde_json::Value = serde_json::from_slice(&rules.body).expect("json");
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        loaded,
        alert_exprs().len(),
        "alert rules loaded by Prometheus"
    );
    prometheus.kill().await.expect("stop prometheus");
}
