//! `chorus sim ring`: the Chord routing of many nodes, in one process.
//!
//! Four phases, all on one seeded [`Network`]:
//!
//! 1. *Cold start* (or, with `--seeded`, every node given the exact ring).
//!    One node, then waves of joins: in each wave as many new
//!    nodes as are already in join through a random member (Chord's join:
//!    look up your successor). Rounds of stabilize, notify,
//!    check_predecessor and fix_fingers (every node once per round) follow
//!    until every first successor is exact, then the next wave joins. After
//!    the last wave rounds go on until every predecessor, successor list
//!    and finger is exact. `rounds_to_converge` counts every round.
//! 2. *Lookups* from random nodes for random keys: hops and correctness.
//! 3. *Churn.* Over ten rounds, 10% of the nodes crash (without a word) and
//!    as many new ones join; lookups run between the events and the next
//!    round of maintenance. A lookup is correct when the first live node of
//!    the list it returns is the real owner at that moment.
//! 4. *Load.* `keys` key names hashed onto the ring after the cold start:
//!    keys owned per node, max over mean.

use std::time::Instant;

use rand::Rng;
use serde::Serialize;

use super::network::Network;
use crate::ring::chord::ChordConfig;
use crate::ring::position;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Nodes in the ring.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Tokens (virtual nodes) per node.
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// Keys hashed onto the ring to measure load.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// Lookups measured after convergence (and again during churn).
    #[arg(long, default_value_t = 10_000)]
    pub lookups: usize,
    /// Successor list length.
    #[arg(long, default_value_t = 8)]
    pub successors: usize,
    /// Finger lookups per vnode per round.
    #[arg(long, default_value_t = 2)]
    pub fingers_per_tick: usize,
    /// Share of nodes replaced during the churn phase.
    #[arg(long, default_value_t = 0.1)]
    pub churn: f64,
    /// Most maintenance rounds before giving up on convergence.
    #[arg(long, default_value_t = 200)]
    pub max_rounds: usize,
    /// Start every node knowing the whole ring (as chorus nodes do from
    /// the members document) instead of the cold start of joins: the
    /// churn phase is the same, and a run of 100,000 nodes takes minutes.
    #[arg(long)]
    pub seeded: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print each round's remaining routing errors to stderr.
    #[arg(long)]
    pub progress: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub tokens: usize,
    pub seeded: bool,
    pub mean_hops: f64,
    pub p99_hops: u32,
    pub max_hops: u32,
    pub correct_after_convergence: f64,
    pub rounds_to_converge: usize,
    pub converged: bool,
    pub correct_during_churn: f64,
    /// How many lookups that share is of.
    pub lookups_during_churn: usize,
    pub load_max_over_mean: f64,
    pub load_min_over_mean: f64,
    /// The same for exact ring ownership, free of key-sampling noise.
    pub share_max_over_mean: f64,
    pub rpcs: u64,
    pub seconds: f64,
}

pub fn run(o: &Options) -> Report {
    let started = Instant::now();
    let config = ChordConfig {
        successors: o.successors.max(1),
        fingers_per_tick: o.fingers_per_tick.max(1),
    };
    let mut net = Network::new(config, o.seed);
    let nodes = o.nodes.max(1);

    // 1. Cold start in doubling waves; each wave settles its successors
    // before the next one joins, as an operator adding nodes would wait.
    // Or every node seeded with the exact ring.
    let debug = o.progress;
    net.add(o.tokens);
    let mut rounds = 0;
    if o.seeded {
        while net.live().len() < nodes {
            net.add(o.tokens);
        }
        net.seed_all();
    }
    while net.live().len() < nodes && rounds < o.max_rounds {
        let live = net.live();
        let wave = live.len().min(nodes - live.len());
        for _ in 0..wave {
            let id = net.add(o.tokens);
            let seed = live[net.rng().random_range(0..live.len())];
            net.join(id, seed);
        }
        loop {
            net.round();
            rounds += 1;
            let m = net.mismatches(false);
            if debug {
                eprintln!(
                    "{:.1}s round {rounds}, {} nodes: {m:?}",
                    started.elapsed().as_secs_f64(),
                    net.live().len()
                );
            }
            if m.successor == 0 || rounds >= o.max_rounds {
                break;
            }
        }
    }
    let mut converged = net.converged();
    while !converged && rounds < o.max_rounds {
        net.round();
        rounds += 1;
        converged = net.converged();
        if debug {
            eprintln!(
                "{:.1}s round {rounds}: {:?}",
                started.elapsed().as_secs_f64(),
                net.mismatches(true)
            );
        }
    }
    let load = load(&net, o.keys);
    let shares: Vec<f64> = net
        .live()
        .iter()
        .map(|&n| net.shares()[n as usize])
        .collect();
    let share_max_over_mean = shares.iter().cloned().fold(0.0, f64::max)
        / (shares.iter().sum::<f64>() / shares.len().max(1) as f64);

    // 2. Lookups on the converged ring.
    let (mut hops, correct_after) = lookups(&mut net, o.lookups);
    hops.sort_unstable();
    let mean_hops = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len().max(1) as f64;
    let p99_hops = hops
        .get((hops.len() * 99 / 100).min(hops.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);

    // 3. Churn.
    let churn_rounds = 10;
    let per_round = ((nodes as f64 * o.churn) / churn_rounds as f64).round() as usize;
    let (mut correct, mut total) = (0.0, 0usize);
    let mut churn_lookups = 0;
    for _ in 0..churn_rounds {
        for _ in 0..per_round {
            let live = net.live();
            if live.len() <= 2 {
                break;
            }
            let victim = live[net.rng().random_range(0..live.len())];
            net.crash(victim);
            let live = net.live();
            let id = net.add(o.tokens);
            let seed = live[net.rng().random_range(0..live.len())];
            net.join(id, seed);
        }
        let batch = (o.lookups / churn_rounds).max(1);
        let (_, share) = lookups(&mut net, batch);
        correct += share * batch as f64;
        total += batch;
        churn_lookups += batch;
        net.round();
    }

    Report {
        nodes,
        tokens: o.tokens,
        seeded: o.seeded,
        mean_hops,
        p99_hops,
        max_hops: hops.last().copied().unwrap_or(0),
        correct_after_convergence: correct_after,
        rounds_to_converge: rounds,
        converged,
        correct_during_churn: correct / total.max(1) as f64,
        lookups_during_churn: churn_lookups,
        load_max_over_mean: load.0,
        load_min_over_mean: load.1,
        share_max_over_mean,
        rpcs: net.rpcs,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// `count` lookups of random positions from random live nodes: their hops
/// and the share that found the real owner.
fn lookups(net: &mut Network, count: usize) -> (Vec<u32>, f64) {
    let truth = net.truth();
    let live = net.live();
    let mut hops = Vec::with_capacity(count);
    let mut right = 0usize;
    for _ in 0..count {
        let from = live[net.rng().random_range(0..live.len())];
        let id: u64 = net.rng().random();
        let found = net.lookup(from, id);
        hops.push(found.hops);
        if found.owner.as_ref() == Some(Network::owner(&truth, id)) {
            right += 1;
        }
    }
    (hops, right as f64 / count.max(1) as f64)
}

/// Keys owned per live node as primary: (max / mean, min / mean).
fn load(net: &Network, keys: usize) -> (f64, f64) {
    let truth = net.truth();
    let mut owned = vec![0u64; net.shares().len()];
    for i in 0..keys {
        let pos = position(format!("key-{i}").as_bytes());
        owned[Network::owner(&truth, pos).node as usize] += 1;
    }
    let live: Vec<u64> = net.live().iter().map(|&n| owned[n as usize]).collect();
    let mean = live.iter().sum::<u64>() as f64 / live.len().max(1) as f64;
    let max = live.iter().copied().max().unwrap_or(0) as f64;
    let min = live.iter().copied().min().unwrap_or(0) as f64;
    (max / mean, min / mean)
}

impl Report {
    pub fn table(&self) -> String {
        let log2 = ((self.nodes * self.tokens) as f64).log2();
        format!(
            "nodes {} × tokens {} ({} vnodes){}, {:.1} s, {} simulated requests\n\
             lookup hops         mean {:.2}  p99 {}  max {}   (½·log2(vnodes)+1 = {:.2}, ½·log2(nodes)+1 = {:.2})\n\
             correct lookups     {:.2}% after convergence, {:.2}% of {} during churn\n\
             rounds to converge  {}{}\n\
             keys per node       max/mean {:.3}  min/mean {:.3}  (ring share max/mean {:.3})\n",
            self.nodes,
            self.tokens,
            self.nodes * self.tokens,
            if self.seeded { ", seeded" } else { "" },
            self.seconds,
            self.rpcs,
            self.mean_hops,
            self.p99_hops,
            self.max_hops,
            log2 / 2.0 + 1.0,
            (self.nodes as f64).log2() / 2.0 + 1.0,
            self.correct_after_convergence * 100.0,
            self.correct_during_churn * 100.0,
            self.lookups_during_churn,
            self.rounds_to_converge,
            if self.converged {
                ""
            } else {
                " (not converged)"
            },
            self.load_max_over_mean,
            self.load_min_over_mean,
            self.share_max_over_mean,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(nodes: usize, seeded: bool) -> Options {
        Options {
            nodes,
            tokens: 8,
            keys: 10_000,
            lookups: 6_000,
            successors: 8,
            fingers_per_tick: 2,
            churn: 0.1,
            max_rounds: 200,
            seeded,
            seed: 3,
            json: false,
            progress: false,
        }
    }

    /// While a tenth of the nodes crash and as many join, lookups made
    /// between the events and the next round of maintenance find the real
    /// owner at least 99.5% of the time: each answer is checked with the
    /// owner it names, a dead owner passes its range down the successor
    /// list, and a joiner tells its successor at once. (Before: about 98%.)
    #[test]
    fn lookups_during_churn_find_the_owner() {
        for seeded in [false, true] {
            let report = run(&options(300, seeded));
            assert!(report.converged, "{}", report.table());
            assert_eq!(report.correct_after_convergence, 1.0, "{}", report.table());
            assert!(report.lookups_during_churn >= 6_000, "{}", report.table());
            assert!(
                report.correct_during_churn >= 0.995,
                "seeded {seeded}: {}",
                report.table()
            );
        }
    }
}
