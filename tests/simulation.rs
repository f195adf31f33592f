//! The deterministic simulation: whole 5-node clusters of the real node
//! code on turmoil's network under a nemesis, every run checked for lost
//! writes, convergence, sessions and siblings (src/sim/cluster). Each seed
//! runs as `chorus sim cluster --seed <seed>`, a process of its own, which
//! is also how it replays.
//!
//! `CHORUS_SIM_SEED=<seed>` runs one seed; `CHORUS_SIM_SEEDS=<count>` runs
//! that many from `CHORUS_SIM_FIRST` (default 0). CI runs the default: 200
//! seeds, split over two tests so both cores work.

mod common;

use std::process::Command;

fn seeds(part: u64, parts: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("CHORUS_SIM_SEED") {
        let seed: u64 = seed.parse().expect("CHORUS_SIM_SEED is a number");
        return if part == 0 { vec![seed] } else { Vec::new() };
    }
    let count: u64 = std::env::var("CHORUS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let first: u64 = std::env::var("CHORUS_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (first..first + count)
        .filter(|s| s % parts == part)
        .collect()
}

/// Runs one seed: whether it kept every promise, and its summary.
fn simulate(seed: u64) -> (bool, String) {
    let out = Command::new(common::chorus_bin())
        .args(["sim", "cluster", "--seed", &seed.to_string()])
        .output()
        .expect("run chorus sim cluster");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `(writes, reads)` from a summary's first line.
fn counts(summary: &str) -> (u64, u64) {
    let number_before = |word: &str| {
        summary
            .split(&format!(" {word}"))
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (number_before("writes"), number_before("reads"))
}

fn campaign(part: u64, parts: u64) {
    let mut failed = Vec::new();
    for seed in seeds(part, parts) {
        let (ok, summary) = simulate(seed);
        if std::env::var("CHORUS_SIM_VERBOSE").is_ok() {
            eprint!("{summary}");
        }
        let (writes, reads) = counts(&summary);
        assert!(
            writes >= 20 && reads >= 10,
            "seed {seed}: too little happened: {summary}"
        );
        if !ok {
            eprint!("{summary}");
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds that broke a promise: {failed:?}");
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
/// for operation, and the same verdicts (the summary's digest).
#[test]
fn a_seed_replays_exactly() {
    let (_, first) = simulate(4242);
    let (_, again) = simulate(4242);
    let (writes, _) = counts(&first);
    assert!(writes > 20, "{first}");
    assert!(first.contains("history "), "{first}");
    assert_eq!(
        first.lines().next(),
        again.lines().next(),
        "the replay differs"
    );
}
