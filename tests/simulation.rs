//! The deterministic simulation: whole clusters of the real node code on
//! turmoil's network under a nemesis that draws from every fault class
//! (partitions one-way and both ways, crashes, power loss, lost disks,
//! rollbacks to a backup, failing and slow disks, clock skew, joins,
//! leaves, removals and rejoins), every run checked for lost writes,
//! resurrected deletes, convergence, sessions and siblings
//! (src/sim/cluster). Each seed runs as `chorus sim cluster --seed <seed>
//! --json`, a process of its own, which is also how it replays.
//!
//! Two sets of seeds run:
//! - fixed seeds, `0..CHORUS_SIM_SEEDS` (default 120) from
//!   `CHORUS_SIM_FIRST` (default 0): the same in every run;
//! - a window of `CHORUS_SIM_WINDOW` seeds (default 40) that moves with the
//!   commit (its start is derived from `git rev-parse HEAD`, or set with
//!   `CHORUS_SIM_WINDOW_FIRST`): every commit explores seeds no earlier
//!   run did. A failure prints the seed; `chorus sim cluster --seed <seed>`
//!   replays it.
//!
//! `CHORUS_SIM_SEED=<seed>` runs that one seed only. The seeds are split
//! over two tests so both cores work. A run fails if it broke a promise
//! *or* proved too little (under 30 acknowledged writes, or a checker that
//! examined nothing), and every seed must finish within 5 minutes.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one seed may take before it counts as hung.
const SEED_TIMEOUT: Duration = Duration::from_secs(300);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// The first seed of the moving window: from the commit, so that it
/// changes from run to run of CI, and prints how to run it again.
fn window_first() -> u64 {
    if let Some(first) = env_u64("CHORUS_SIM_WINDOW_FIRST") {
        return first;
    }
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let hash = match &head {
        Some(head) => u64::from_str_radix(&head[..head.len().min(12)], 16).unwrap_or(0),
        // No git: the clock moves the window instead.
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    // Above the fixed seeds and the recorded campaigns.
    1_000_000 + hash % 1_000_000_000
}

fn seeds(part: u64, parts: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("CHORUS_SIM_SEED") {
        return if part == 0 { vec![seed] } else { Vec::new() };
    }
    let count = env_u64("CHORUS_SIM_SEEDS").unwrap_or(120);
    let first = env_u64("CHORUS_SIM_FIRST").unwrap_or(0);
    let window = env_u64("CHORUS_SIM_WINDOW").unwrap_or(40);
    let from = window_first();
    if part == 0 {
        eprintln!(
            "simulation seeds: {first}..{} and the window {from}..{} (CHORUS_SIM_WINDOW_FIRST={from})",
            first + count,
            from + window
        );
    }
    (first..first + count)
        .chain(from..from + window)
        .enumerate()
        .filter(|(i, _)| *i as u64 % parts == part)
        .map(|(_, s)| s)
        .collect()
}

/// Runs one seed: its JSON report, or why there is none.
fn simulate(seed: u64) -> Result<serde_json::Value, String> {
    let mut child = Command::new(common::chorus_bin())
        .args(["sim", "cluster", "--json", "--seed", &seed.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chorus sim cluster");
    let started = Instant::now();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > SEED_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "seed {seed} did not finish within {SEED_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    serde_json::from_str(out.trim()).map_err(|e| {
        let tail: String = err
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("seed {seed} printed no report ({e}): {out}\n{tail}")
    })
}

fn campaign(part: u64, parts: u64) {
    let mut failed = Vec::new();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut checked: BTreeMap<String, u64> = BTreeMap::new();
    let (mut runs, mut acked, mut deletes) = (0, 0, 0);
    for seed in seeds(part, parts) {
        let report = match simulate(seed) {
            Ok(report) => report,
            Err(why) => {
                eprintln!("{why}");
                failed.push(seed);
                continue;
            }
        };
        runs += 1;
        acked += report["acked"].as_u64().unwrap_or(0);
        deletes += report["acked_deletes"].as_u64().unwrap_or(0);
        for (map, field) in [(&mut faults, "faults"), (&mut checked, "checked")] {
            for (k, v) in report[field].as_object().into_iter().flatten() {
                *map.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        if std::env::var("CHORUS_SIM_VERBOSE").is_ok() || report["passed"] != true {
            eprintln!("{report}");
        }
        if report["passed"] != true {
            eprintln!("replay: chorus sim cluster --seed {seed}");
            failed.push(seed);
        }
    }
    eprintln!(
        "part {part}: {runs} runs, {acked} acknowledged writes and {deletes} deletes checked; faults {faults:?}; checked {checked:?}"
    );
    assert!(failed.is_empty(), "seeds that failed: {failed:?}");
    // Over many seeds, every fault class turns up and every checker works.
    if runs >= 40 {
        for class in [
            "partition",
            "one_way_partition",
            "crash",
            "power_loss",
            "disk_loss",
            "rollback",
            "disk_fault",
            "slow_disk",
            "clock_skew",
            "join",
            "leave",
            "remove",
        ] {
            assert!(faults.contains_key(class), "no {class} in {runs} runs");
        }
        assert!(checked.values().all(|&n| n > 0), "{checked:?}");
    }
}

#[test]
fn seeds_part_0() {
    campaign(0, 2);
}

#[test]
fn seeds_part_1() {
    campaign(1, 2);
}

/// A seed names one run: run twice, it gives the same history, operation
/// for operation, and the same verdicts (the report's digest).
#[test]
fn a_seed_replays_exactly() {
    let first = simulate(4242).expect("seed 4242");
    let again = simulate(4242).expect("seed 4242 again");
    assert!(first["acked"].as_u64().unwrap_or(0) > 20, "{first}");
    assert_eq!(first["history"], again["history"], "the replay differs");
    assert_eq!(first, again);
}
