//! Real `chorus serve` processes on loopback: free ports, a cluster config
//! for them, starting a node and waiting until it serves, and the CLI.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Free loopback ports, found by binding port 0.
pub fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<_> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Writes a cluster config of one node per port (n1, n2, …) at N = 3,
/// R = W = 2, with quick ring timers and a peer secret, and returns its path.
pub fn write_config(dir: &Path, ports: &[u16]) -> PathBuf {
    let mut text = String::from(
        "[cluster]\nname = \"processes\"\nn = 3\nr = 2\nw = 2\n\n\
         [ring]\nstabilize_ms = 200\ngossip_ms = 200\nhandoff_interval_ms = 300\npeer_timeout_ms = 1000\n\n\
         [security]\npeer_secret = \"processes-test-secret-0123456789abcdef\"\n",
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "\n[[nodes]]\nid = \"n{}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
            i + 1,
            dir.join(format!("n{}", i + 1)).display()
        ));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Writes a one-node (N = 1) in-memory config on a free loopback port, with
/// `limits` as the `[limits]` section's keys and `node` as more keys of
/// the `[[nodes]]` entry; returns its path and the node's URL.
pub fn one_node_config(dir: &Path, limits: &str, node: &str) -> (PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = dir.join("node.toml");
    let text = format!(
        "[cluster]\nname = \"one\"\nn = 1\nr = 1\nw = 1\n\n[limits]\n{limits}\n\n\
         [storage]\nengine = \"memory\"\n\n[[nodes]]\nid = \"n1\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{node}\n",
        dir.join("n1").display()
    );
    std::fs::write(&path, text).expect("write config");
    (path, format!("http://127.0.0.1:{port}"))
}

/// Starts `chorus serve` for `node` (stderr to `{node}.log` beside the
/// config) and returns once it printed that it serves. The child is killed
/// when dropped.
pub async fn serve(config: &Path, node: &str) -> Child {
    serve_with(config, node, &[]).await
}

/// As [`serve`], with more arguments (`--join ADDR`).
pub async fn serve_with(config: &Path, node: &str, args: &[&str]) -> Child {
    let mut command = Command::new(super::chorus_bin());
    command
        .args(["serve", "--node", node, "--config"])
        .arg(config)
        .args(args);
    spawn_serving(command, config, node).await
}

/// Spawns `command` (a `chorus serve`, perhaps wrapped) with stderr
/// appended to `{node}.log` beside the config, and waits for the line that
/// says it serves.
pub async fn spawn_serving(mut command: Command, config: &Path, node: &str) -> Child {
    let log_path = config.with_file_name(format!("{node}.log"));
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chorus");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let served = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    if !matches!(served, Ok(Ok(Some(_)))) {
        // The node's own words are the only clue once the temp dir is gone.
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{node} did not start serving ({served:?}); the end of its log:\n{}",
            tail.join("\n")
        );
    }
    child
}

/// A cluster of `count` real processes on loopback (`write_config`'s
/// settings), each serving, with a client for each.
pub struct Processes {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub children: Vec<Child>,
    pub clients: Vec<chorus::client::Client>,
}

impl Processes {
    pub async fn start(count: usize) -> Processes {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(count);
        let config = write_config(dir.path(), &ports);
        let mut children = Vec::new();
        for i in 1..=count {
            children.push(serve(&config, &format!("n{i}")).await);
        }
        let clients = ports
            .iter()
            .map(|p| chorus::client::Client::new(&format!("http://127.0.0.1:{p}")))
            .collect();
        Processes {
            dir,
            config,
            children,
            clients,
        }
    }

    /// SIGKILLs every process and reaps it.
    pub async fn kill_all(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Runs the `chorus` CLI; its success and stdout.
pub async fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(super::chorus_bin())
        .args(args)
        .output()
        .await
        .expect("run chorus");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// VmRSS of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}
