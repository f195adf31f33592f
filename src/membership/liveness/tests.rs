use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::*;

const PERIOD: u64 = 1000;

fn any_member(_: &str) -> bool {
    true
}

/// `nodes` nodes gossiping to `fanout` random peers per round; the rounds
/// until every live node has heard the latest beat of node 0, which beat
/// once more after everyone knew every node.
fn rounds_to_spread(nodes: usize, fanout: usize, seed: u64) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tables: Vec<Heartbeats> = (0..nodes)
        .map(|i| Heartbeats::new(&format!("n{i}"), 1, PERIOD, 8.0))
        .collect();
    let round = |tables: &mut Vec<Heartbeats>, rng: &mut SmallRng, now: u64| {
        for i in 0..tables.len() {
            tables[i].tick();
            let peers: Vec<usize> = (0..fanout).map(|_| rng.random_range(0..nodes)).collect();
            for p in peers {
                if p == i {
                    continue;
                }
                // Push-pull: each side keeps the newer of every entry.
                let mine = tables[i].beats();
                tables[p].merge(&mine, now, any_member);
                let theirs = tables[p].beats();
                tables[i].merge(&theirs, now, any_member);
            }
        }
    };
    // Until everyone has heard of everyone.
    let mut r = 0;
    while tables.iter().any(|t| t.known.len() < nodes - 1) {
        round(&mut tables, &mut rng, r * PERIOD);
        r += 1;
    }
    let start = r;
    let target = tables[0].heartbeat("n0").expect("own beat").1 + 1;
    for r in 0..100 {
        round(&mut tables, &mut rng, (start + r as u64) * PERIOD);
        let all = tables[1..]
            .iter()
            .all(|t| t.heartbeat("n0").is_some_and(|(_, h)| h >= target));
        if all {
            return r + 1;
        }
    }
    usize::MAX
}

#[test]
fn a_beat_reaches_every_node_in_logarithmic_rounds() {
    for (nodes, bound) in [(10, 4), (64, 6), (256, 8)] {
        let rounds = rounds_to_spread(nodes, 3, nodes as u64);
        // log2(nodes) + 1 rounds at fanout 3 (push-pull spreads faster).
        assert!(
            rounds <= bound,
            "{nodes} nodes: {rounds} rounds (bound {bound})"
        );
    }
}

#[test]
fn silence_convicts_and_a_beat_acquits() {
    let mut table = Heartbeats::new("me", 1, PERIOD, 8.0);
    assert_eq!(table.verdict("n2", 0), Verdict::Unknown);
    let beat = |h: u64| {
        vec![Beat {
            node: "n2".into(),
            generation: 5,
            heartbeat: h,
        }]
    };
    // The first beat heard is a new life; the next ones are not.
    let first = table.merge(&beat(1), PERIOD, any_member);
    assert_eq!(first.new_lives, vec!["n2".to_string()]);
    for h in 2..=20 {
        assert!(
            table
                .merge(&beat(h), h * PERIOD, any_member)
                .new_lives
                .is_empty()
        );
    }
    let last = 20 * PERIOD;
    assert_eq!(table.verdict("n2", last + 5 * PERIOD), Verdict::Up);
    // Threshold 8 with the exponential model: 8 / log10(e) ≈ 18.4 means.
    assert_eq!(table.verdict("n2", last + 17 * PERIOD), Verdict::Up);
    assert_eq!(table.verdict("n2", last + 20 * PERIOD), Verdict::Down);
    // An old beat does not acquit; a new one does.
    assert_eq!(
        table.merge(&beat(3), last + 20 * PERIOD, any_member).newer,
        0
    );
    assert_eq!(table.verdict("n2", last + 20 * PERIOD), Verdict::Down);
    table.merge(&beat(21), last + 21 * PERIOD, any_member);
    assert_eq!(table.verdict("n2", last + 21 * PERIOD), Verdict::Up);
    // A restart (new generation) outranks a higher counter of the old life.
    let restarted = vec![Beat {
        node: "n2".into(),
        generation: 6,
        heartbeat: 1,
    }];
    let merged = table.merge(&restarted, last + 22 * PERIOD, any_member);
    assert_eq!(merged.newer, 1);
    assert_eq!(merged.new_lives, vec!["n2".to_string()]);
    assert_eq!(table.heartbeat("n2"), Some((6, 1)));
    // Strangers are not kept.
    let stranger = vec![Beat {
        node: "x".into(),
        generation: 1,
        heartbeat: 1,
    }];
    assert_eq!(table.merge(&stranger, 0, |n| n != "x"), Merged::default());
    assert_eq!(table.verdict("x", 0), Verdict::Unknown);
}

proptest! {
    /// A slow node that keeps beating, however irregularly, is never
    /// convicted while its silences stay within ten times its mean.
    #[test]
    fn a_slow_but_beating_node_stays_up(
        gaps in prop::collection::vec(1u64..5_000, 20..200),
    ) {
        let mut table = Heartbeats::new("me", 1, PERIOD, 8.0);
        let mut now = 0;
        for (h, gap) in gaps.iter().enumerate() {
            now += gap;
            let beat = vec![Beat { node: "slow".into(), generation: 1, heartbeat: h as u64 + 1 }];
            table.merge(&beat, now, any_member);
        }
        let mean = now as f64 / gaps.len() as f64;
        let soon = now + (2.0 * mean) as u64;
        prop_assert_eq!(table.verdict("slow", soon), Verdict::Up);
        // And silence convicts it in the end.
        let later = now + (40.0 * mean.max(PERIOD as f64)) as u64;
        prop_assert_eq!(table.verdict("slow", later), Verdict::Down);
    }

    /// Merging is order-independent: any order of the same beats leaves
    /// the same latest heartbeat per node.
    #[test]
    fn merge_keeps_the_newest_beat_whatever_the_order(
        beats in prop::collection::vec((0u8..4, 0u64..3, 0u64..50), 1..60),
        seed in any::<u64>(),
    ) {
        let beats: Vec<Beat> = beats
            .into_iter()
            .map(|(n, g, h)| Beat { node: format!("n{n}"), generation: g, heartbeat: h })
            .collect();
        let mut shuffled = beats.clone();
        let mut rng = SmallRng::seed_from_u64(seed);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.random_range(0..=i));
        }
        let (mut a, mut b) = (
            Heartbeats::new("me", 1, PERIOD, 8.0),
            Heartbeats::new("me", 1, PERIOD, 8.0),
        );
        for beat in &beats {
            a.merge(std::slice::from_ref(beat), 0, any_member);
        }
        b.merge(&shuffled, 0, any_member);
        for n in 0..4 {
            let node = format!("n{n}");
            let newest = beats.iter().filter(|x| x.node == node).map(|x| (x.generation, x.heartbeat)).max();
            prop_assert_eq!(a.heartbeat(&node), newest);
            prop_assert_eq!(b.heartbeat(&node), newest);
        }
        let _ = [0u8].choose(&mut rng);
    }
}
