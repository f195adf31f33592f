//! The nemesis: a schedule of faults drawn from the seed before the run
//! starts, so that a seed names one exact sequence of faults.
//!
//! Faults come one every 0.3–1.5 s of simulated time during the fault
//! window: a partition (one node alone, a minority against a majority, or
//! the ring-shaped one where every node sees a different majority), a
//! crash of a node with or without the loss of its data (it restarts
//! 0.5–3 s later; at most one loses its data per run, so that a write two
//! replicas acknowledged always keeps a copy), message loss of 0–5 %,
//! latency of 1–200 ms, a hold of one link's messages and their release,
//! or a heal. When the window closes, everything heals: links repaired,
//! held messages released, loss and extra latency gone, every node up.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

/// One thing the nemesis does. Nodes are indices into the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cut these links between nodes (both directions).
    Cut(Vec<(usize, usize)>),
    /// Repair every link between nodes and release held messages.
    Heal,
    /// Stop a node; with `lose_data`, it restarts with an empty store and a
    /// new incarnation.
    Crash { node: usize, lose_data: bool },
    /// Start a crashed node again.
    Restart { node: usize },
    /// Each message on a link breaks the link with this probability (lost
    /// until it is repaired).
    Loss(f64),
    /// Messages take up to this long.
    Latency(Duration),
    /// Hold the messages between two nodes.
    Hold(usize, usize),
    /// Deliver what was held between two nodes.
    Release(usize, usize),
}

/// A fault and when it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub fault: Fault,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>6} ms  {:?}", self.at.as_millis(), self.fault)
    }
}

/// The faults of one run over `nodes` nodes, between `from` and `until`,
/// ending in a full heal at `until`.
pub fn schedule(rng: &mut SmallRng, nodes: usize, from: Duration, until: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    let mut down: Vec<(usize, Duration)> = Vec::new();
    let mut held: Vec<(usize, usize)> = Vec::new();
    let mut wiped = false;
    let mut at = from;
    loop {
        at += Duration::from_millis(rng.random_range(300..1500));
        if at >= until {
            break;
        }
        // Restarts that are due come first.
        down.retain(|&(node, back)| {
            if back <= at {
                events.push(Event {
                    at: back,
                    fault: Fault::Restart { node },
                });
                false
            } else {
                true
            }
        });
        let fault = match rng.random_range(0..10) {
            0 => Fault::Cut(alone(rng, nodes)),
            1 => Fault::Cut(minority(rng, nodes)),
            2 => Fault::Cut(ring(nodes)),
            3 | 4 if down.len() < 2 => {
                let up: Vec<usize> = (0..nodes)
                    .filter(|n| down.iter().all(|d| d.0 != *n))
                    .collect();
                let node = up[rng.random_range(0..up.len())];
                let lose_data = !wiped && rng.random_bool(0.3);
                wiped |= lose_data;
                down.push((
                    node,
                    at + Duration::from_millis(rng.random_range(500..3000)),
                ));
                Fault::Crash { node, lose_data }
            }
            5 => Fault::Loss(rng.random_range(0.0..0.05)),
            6 => Fault::Latency(Duration::from_millis(rng.random_range(1..=200))),
            7 => {
                let a = rng.random_range(0..nodes);
                let b = (a + rng.random_range(1..nodes)) % nodes;
                held.push((a, b));
                Fault::Hold(a, b)
            }
            8 if !held.is_empty() => {
                let (a, b) = held.remove(rng.random_range(0..held.len()));
                Fault::Release(a, b)
            }
            _ => {
                held.clear();
                Fault::Heal
            }
        };
        events.push(Event { at, fault });
    }
    events.sort_by_key(|e| e.at);
    for (node, _) in down {
        events.push(Event {
            at: until,
            fault: Fault::Restart { node },
        });
    }
    for fault in [
        Fault::Heal,
        Fault::Loss(0.0),
        Fault::Latency(Duration::from_millis(1)),
    ] {
        events.push(Event { at: until, fault });
    }
    events
}

/// Every link of one random node.
fn alone(rng: &mut SmallRng, nodes: usize) -> Vec<(usize, usize)> {
    let node = rng.random_range(0..nodes);
    (0..nodes)
        .filter(|&o| o != node)
        .map(|o| (node, o))
        .collect()
}

/// Every link between a random minority and the rest.
fn minority(rng: &mut SmallRng, nodes: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(rng);
    let (small, large) = order.split_at(nodes.saturating_sub(1) / 2);
    small
        .iter()
        .flat_map(|&a| large.iter().map(move |&b| (a, b)))
        .collect()
}

/// Jepsen's majorities ring: each node keeps the links to its neighbours
/// on a ring and loses the rest, so every node sees a majority (with 5
/// nodes) and no two see the same one.
fn ring(nodes: usize) -> Vec<(usize, usize)> {
    let mut cut = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            let gap = b - a;
            if gap != 1 && gap != nodes - 1 {
                cut.push((a, b));
            }
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_seed_names_one_schedule_that_ends_healed() {
        let run = |seed| {
            schedule(
                &mut SmallRng::seed_from_u64(seed),
                5,
                Duration::from_secs(1),
                Duration::from_secs(20),
            )
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        for seed in 0..200 {
            let events = run(seed);
            assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "seed {seed}");
            let mut down = std::collections::BTreeSet::new();
            let mut wipes = 0;
            for e in &events {
                match e.fault {
                    Fault::Crash { node, lose_data } => {
                        assert!(down.insert(node), "seed {seed}: {node} crashed twice");
                        wipes += usize::from(lose_data);
                    }
                    Fault::Restart { node } => assert!(down.remove(&node)),
                    _ => {}
                }
                assert!(down.len() <= 2, "seed {seed}: more than two nodes down");
            }
            assert!(down.is_empty(), "seed {seed}: a node stays down");
            assert!(wipes <= 1, "seed {seed}: {wipes} nodes lose their data");
            assert!(matches!(
                events.last().map(|e| &e.fault),
                Some(Fault::Latency(_))
            ));
        }
    }

    #[test]
    fn every_node_of_the_ring_partition_sees_a_majority() {
        let cut = ring(5);
        for node in 0..5 {
            let reachable = (0..5)
                .filter(|&o| o == node || !cut.contains(&(node.min(o), node.max(o))))
                .count();
            assert_eq!(reachable, 3);
        }
        assert_eq!(minority(&mut SmallRng::seed_from_u64(1), 5).len(), 6);
        assert_eq!(alone(&mut SmallRng::seed_from_u64(1), 5).len(), 4);
    }
}
