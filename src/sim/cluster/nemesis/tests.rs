use std::collections::BTreeMap;

use super::*;
use rand::SeedableRng;

fn run(seed: u64) -> Vec<Event> {
    schedule(
        &mut SmallRng::seed_from_u64(seed),
        6,
        1,
        Duration::from_secs(1),
        Duration::from_secs(20),
    )
}

#[test]
fn a_seed_names_one_schedule_that_ends_healed_and_keeps_a_copy() {
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let mut classes = BTreeMap::new();
    for seed in 0..300 {
        let events = run(seed);
        assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "seed {seed}");
        let mut down = std::collections::BTreeSet::new();
        let mut lossy = std::collections::BTreeSet::new();
        for e in &events {
            match e.fault {
                Fault::Crash { node, .. } | Fault::Rollback { node } => {
                    assert!(down.insert(node), "seed {seed}: {node} stopped twice");
                }
                Fault::Restart { node } => assert!(down.remove(&node), "seed {seed}"),
                Fault::Remove { node, .. } => assert!(down.remove(&node), "seed {seed}"),
                _ => {}
            }
            if let Fault::Crash { node, .. } | Fault::Rollback { node } | Fault::Remove { node, .. } =
                e.fault
                && e.fault.loses_data()
            {
                lossy.insert(node);
            }
            assert!(down.len() <= 2, "seed {seed}: more than two nodes down");
            assert!(CLASSES.contains(&e.fault.class()), "{:?}", e.fault);
            *classes.entry(e.fault.class()).or_insert(0) += 1;
        }
        assert!(down.is_empty(), "seed {seed}: a node stays down: {down:?}");
        assert!(lossy.len() <= 1, "seed {seed}: {lossy:?} lose data");
        assert!(matches!(
            events.last().map(|e| &e.fault),
            Some(Fault::Latency(_))
        ));
    }
    // Every class turns up across the seeds, and counts names it.
    for class in CLASSES {
        assert!(classes.contains_key(class), "no {class} in 300 seeds");
    }
    assert_eq!(counts(&run(7)).len(), CLASSES.len());
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
    let oneway = one_way(&mut SmallRng::seed_from_u64(1), 5);
    assert_eq!(oneway.len(), 2);
    assert!(oneway.iter().all(|(a, _)| *a == oneway[0].0));
}
