use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::version::{Actor, Content, Context, Dot};

const ORIGINS: [&str; 3] = ["a/1", "b/1", "c/1"];

/// One replica: its log and the data its applied ops wrote.
#[derive(Clone, Default)]
struct Replica {
    log: RangeLog,
    data: HashMap<String, SiblingSet>,
    counter: u64,
}

impl Replica {
    fn write(&mut self, origin: usize, key: &str) -> Op {
        self.counter += 1;
        let mut set = self.data.get(key).cloned().unwrap_or_default();
        let actor = Actor::new(ORIGINS[origin], 1);
        let ctx = Context::default();
        let dot = Dot::new(
            actor.clone(),
            set.min_counter(&ctx, &actor).max(self.counter),
        );
        self.counter = dot.counter;
        set.write(
            &ctx,
            dot,
            Content::Value(Bytes::from(format!("{}", self.counter))),
        );
        self.data.insert(key.to_string(), set.clone());
        self.log.append_local(ORIGINS[origin], key, set)
    }

    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            self.data.entry(op.key.clone()).or_default().merge(&op.set);
        }
    }

    /// Pulls from `from`: its missing ops, or a state transfer on a gap.
    fn pull(&mut self, from: &Replica, max: usize, max_buffered: usize) -> bool {
        match from.log.missing_for(self.log.applied(), max) {
            Ok(ops) => {
                let (delivered, fits) = self.log.receive(ops, max_buffered);
                self.apply(&delivered);
                if !fits {
                    self.state_transfer(from);
                    return false;
                }
                true
            }
            Err(Gap::Truncated { .. }) => {
                self.state_transfer(from);
                false
            }
        }
    }

    fn state_transfer(&mut self, from: &Replica) {
        for (key, set) in &from.data {
            self.data.entry(key.clone()).or_default().merge(set);
        }
        let delivered = self.log.adopt(from.log.applied());
        self.apply(&delivered);
    }
}

#[derive(Clone, Debug)]
enum Step {
    Write(usize, u8),
    Pull(usize, usize),
    Truncate(usize),
    Bound(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3, 0u8..6).prop_map(|(r, k)| Step::Write(r, k)),
        4 => (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Pull(a, b)),
        1 => (0usize..3).prop_map(Step::Truncate),
        1 => (0usize..3, 2usize..10).prop_map(|(r, m)| Step::Bound(r, m)),
    ]
}

fn fellows(i: usize) -> Vec<String> {
    (0..3)
        .filter(|&j| j != i)
        .map(|j| ORIGINS[j].to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the interleaving of writes, pulls (with small batches and a
    /// small buffer), truncations and overflows, pulling all round until
    /// nothing moves leaves every replica with the same data and vector, and
    /// that data is what applying every write everywhere gives.
    #[test]
    fn replicas_converge_through_ops_or_fallbacks(
        steps in prop::collection::vec(step(), 1..120),
        batch in 1usize..8,
    ) {
        let mut replicas: [Replica; 3] = Default::default();
        let mut everything: HashMap<String, SiblingSet> = HashMap::new();
        for s in steps {
            match s {
                Step::Write(r, k) => {
                    let op = replicas[r].write(r, &format!("k{k}"));
                    everything.entry(op.key.clone()).or_default().merge(&op.set);
                }
                Step::Pull(a, b) if a != b => {
                    let from = replicas[b].clone();
                    replicas[a].pull(&from, batch, 4);
                    let vector = replicas[a].log.applied().clone();
                    replicas[b].log.note_peer(ORIGINS[a], vector);
                }
                Step::Pull(..) => {}
                Step::Truncate(r) => {
                    replicas[r].log.truncate(&fellows(r));
                }
                Step::Bound(r, max) => {
                    replicas[r].log.bound(max);
                }
            }
        }
        for _ in 0..200 {
            for a in 0..3 {
                for b in 0..3 {
                    if a != b {
                        let from = replicas[b].clone();
                        replicas[a].pull(&from, usize::MAX, usize::MAX);
                    }
                }
            }
        }
        for r in &replicas {
            prop_assert_eq!(r.log.applied(), replicas[0].log.applied());
            prop_assert_eq!(&r.data, &everything);
        }
    }

    /// Ops arriving in any order, duplicated, are applied each once, every
    /// one after its dependencies.
    #[test]
    fn delivery_respects_dependencies_whatever_the_arrival_order(
        writes in prop::collection::vec((0usize..3, 0u8..4, any::<bool>()), 1..40),
        seed in any::<u64>(),
    ) {
        // Three origins writing, each sometimes after hearing the others.
        let mut replicas: [Replica; 3] = Default::default();
        let mut all = Vec::new();
        for (r, k, sync) in writes {
            if sync {
                for other in 0..3 {
                    if other != r {
                        let from = replicas[other].clone();
                        replicas[r].pull(&from, usize::MAX, usize::MAX);
                    }
                }
            }
            all.push(replicas[r].write(r, &format!("k{k}")));
        }
        let mut arrivals: Vec<Op> = all.iter().chain(all.iter().step_by(2)).cloned().collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        for i in (1..arrivals.len()).rev() {
            arrivals.swap(i, rng.random_range(0..=i));
        }
        let mut receiver = RangeLog::default();
        let mut order = Vec::new();
        for chunk in arrivals.chunks(3) {
            let (delivered, fits) = receiver.receive(chunk.to_vec(), usize::MAX);
            prop_assert!(fits);
            order.extend(delivered);
        }
        prop_assert_eq!(order.len(), all.len(), "each op applied exactly once");
        let mut applied = Applied::new();
        for op in &order {
            prop_assert_eq!(applied.get(&op.origin).copied().unwrap_or(0), op.seq - 1);
            for (origin, seq) in &op.deps {
                if *origin != op.origin {
                    prop_assert!(applied.get(origin).copied().unwrap_or(0) >= *seq);
                }
            }
            applied.insert(op.origin.clone(), op.seq);
        }
        prop_assert_eq!(receiver.buffered(), 0);
    }
}

#[test]
fn truncation_waits_for_every_replica_and_an_overflow_forces_a_fallback() {
    let mut a = Replica::default();
    let mut b = Replica::default();
    for k in 0..5 {
        a.write(0, &format!("k{k}"));
    }
    // b and c have not said what they hold: nothing may go.
    assert_eq!(a.log.truncate(&fellows(0)), 0);
    assert!(b.pull(&a, usize::MAX, usize::MAX));
    a.log.note_peer("b/1", b.log.applied().clone());
    // c has still not: nothing may go.
    assert_eq!(a.log.truncate(&fellows(0)), 0);
    a.log
        .note_peer("c/1", Applied::from([("a/1".to_string(), 3)]));
    assert_eq!(
        a.log.truncate(&fellows(0)),
        3,
        "the three ops every replica has"
    );
    assert_eq!(a.log.len(), 2);
    // c, behind the floor of the truncated ops... had them; one behind it
    // (an empty vector) cannot be served from the log.
    assert!(
        a.log
            .missing_for(&Applied::from([("a/1".to_string(), 3)]), 10)
            .is_ok()
    );
    assert_eq!(
        a.log.missing_for(&Applied::new(), 10),
        Err(Gap::Truncated {
            origin: "a/1".into()
        })
    );
    // An overflow drops the oldest ops regardless, and says so.
    for k in 0..10 {
        a.write(0, &format!("x{k}"));
    }
    assert_eq!(a.log.bound(4), 8);
    let mut c = Replica::default();
    assert!(
        !c.pull(&a, usize::MAX, usize::MAX),
        "c must fall back to state"
    );
    assert_eq!(c.log.applied(), a.log.applied());
    assert_eq!(c.data, a.data);
}
