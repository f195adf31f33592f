//! Hosts for real processes: one network namespace per node, each joined
//! to a bridge by a veth pair (iproute2), so that links between nodes can
//! be cut one pair at a time (blackhole routes inside the namespaces) while
//! the test, in the root namespace, still reaches every node. Everything is
//! named after this test process and removed on drop.
//!
//! Where namespaces cannot be made (no root, no `ip`), [`Hosts::create`]
//! falls back to loopback, says so loudly, and cannot cut links; with
//! `CHORUS_REQUIRE_NETNS=1` (CI sets it) it fails instead, so a run that
//! could not cut a single link never passes for one that did.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::process::Child;

pub struct Hosts {
    tag: String,
    subnet: String,
    count: usize,
    /// `None`: loopback, with these ports.
    namespaces: bool,
    ports: Vec<u16>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    /// `count` hosts in namespaces, or on loopback when namespaces cannot
    /// be made here.
    pub fn create(count: usize) -> Hosts {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 6;
        let pid = std::process::id();
        let mut hosts = Hosts {
            tag: format!("ch{}{made}", pid % 10_000),
            subnet: format!("10.{}.{}", 100 + pid % 100, (pid / 100) % 40 * 6 + made + 1),
            count,
            namespaces: true,
            ports: Vec::new(),
        };
        if let Err(e) = hosts.build() {
            hosts.teardown();
            assert!(
                std::env::var("CHORUS_REQUIRE_NETNS").as_deref() != Ok("1"),
                "CHORUS_REQUIRE_NETNS=1 and network namespaces cannot be made: {e}"
            );
            eprintln!(
                "\n*** NOTE: network namespaces are unavailable ({e}).\n*** The nemesis runs on loopback: it kills and pauses processes but cannot cut links.\n"
            );
            hosts.namespaces = false;
            hosts.ports = super::processes::free_ports(count);
        }
        hosts
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", self.subnet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..self.count {
            let (ns, outside, inside) = (self.ns(i), self.veth(i), format!("{}p{i}", self.tag));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(i)),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
        }
        Ok(())
    }

    fn teardown(&self) {
        for i in 0..self.count {
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 2)
    }

    pub fn isolated(&self) -> bool {
        self.namespaces
    }

    /// `host:port` node `i` listens on.
    pub fn addr(&self, i: usize) -> String {
        if self.namespaces {
            format!("{}:7000", self.ip(i))
        } else {
            format!("127.0.0.1:{}", self.ports[i])
        }
    }

    /// Cuts the link between nodes `a` and `b`, both ways (no-op on
    /// loopback).
    pub fn cut(&self, a: usize, b: usize) {
        if !self.namespaces {
            return;
        }
        for (from, to) in [(a, b), (b, a)] {
            let _ = ip(&[
                "-n",
                &self.ns(from),
                "route",
                "add",
                "blackhole",
                &format!("{}/32", self.ip(to)),
            ]);
        }
    }

    /// Repairs every cut link.
    pub fn heal(&self) {
        if !self.namespaces {
            return;
        }
        for i in 0..self.count {
            let _ = ip(&["-n", &self.ns(i), "route", "flush", "type", "blackhole"]);
        }
    }

    /// Writes a cluster config for these hosts: N=3, quick timers, the
    /// first `initial` nodes forming the ring, `extra` TOML appended to
    /// `[cluster]`.
    pub fn write_config(&self, dir: &Path, initial: usize) -> PathBuf {
        let mut text = String::from(
            "[cluster]\nname = \"nemesis\"\nn = 3\nr = 2\nw = 2\ntimeout_ms = 2000\n\n\
             [ring]\nstabilize_ms = 200\ngossip_ms = 200\nhandoff_interval_ms = 300\npeer_timeout_ms = 500\n\n\
             [antientropy]\ninterval_ms = 200\n\n\
             [security]\npeer_secret = \"nemesis-test-secret-0123456789abcdef\"\nallow_plaintext = true\n",
        );
        for i in 0..self.count {
            text.push_str(&format!(
                "\n[[nodes]]\nid = \"n{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\ninitial = {}\n",
                i + 1,
                self.addr(i),
                dir.join(format!("n{}", i + 1)).display(),
                i < initial
            ));
        }
        let path = dir.join("cluster.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts `chorus serve` for node `i` in its namespace (with `--join`
    /// through node `join` if given), and returns once it serves.
    pub async fn serve(&self, config: &Path, i: usize, join: Option<usize>) -> Child {
        let node = format!("n{}", i + 1);
        let mut args: Vec<String> = Vec::new();
        let program = if self.namespaces {
            args.extend(["netns", "exec", &self.ns(i)].map(String::from));
            args.push(super::chorus_bin().to_string());
            "ip".to_string()
        } else {
            super::chorus_bin().to_string()
        };
        args.extend(["serve", "--node", &node, "--config"].map(String::from));
        args.push(config.display().to_string());
        if let Some(j) = join {
            args.extend(["--join".to_string(), self.addr(j)]);
        }
        let mut command = tokio::process::Command::new(program);
        command.args(&args);
        super::processes::spawn_serving(command, config, &node).await
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if self.namespaces {
            self.teardown();
        }
    }
}

/// Sends `signal` (STOP, CONT) to a child this test started.
pub fn signal(child: &Child, signal: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
    }
}
