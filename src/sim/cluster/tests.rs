//! Scenarios: the simulation with a schedule written by hand, for faults
//! whose effect the checkers alone would not show.

use std::time::Duration;

use super::nemesis::{Crash, Event, Fault};
use super::{Options, run};
use crate::check::Op;
use crate::config::AntiEntropyMode;

fn at(ms: u64, fault: Fault) -> Event {
    Event {
        at: Duration::from_millis(ms),
        fault,
    }
}

/// A node's clock steps back 8 s, and the node restarts. Its new life's
/// generation would be below the last one's, and peers would take its
/// heartbeats and signed requests for replays of the old life and shut it
/// out until its clock caught up: the writes a client makes through it
/// right after the restart would all fail. Each life starts above the
/// floor the node keeps on its disk instead.
///
/// It happens 10 s in: a receiver refuses stamps from more than 5 s
/// before it started (`security::peer_auth`, the replay guard across its
/// restarts), so peers that started less than 8 - 5 s before would refuse
/// this node's requests for a while, whatever its generation.
#[test]
fn a_node_whose_clock_went_back_is_heard_after_its_restart() {
    let mut options = Options::new(11);
    options.faults_for = Duration::from_secs(14);
    options.mode = Some(AntiEntropyMode::State);
    options.settle_rounds = Some(10);
    options.schedule = Some(vec![
        at(
            10_000,
            Fault::ClockSkew {
                node: 2,
                ms: -8_000,
            },
        ),
        at(
            10_200,
            Fault::Crash {
                node: 2,
                kind: Crash::Process,
            },
        ),
        at(10_700, Fault::Restart { node: 2 }),
    ]);
    let report = run(&options).expect("the run");
    // The prober writes through the node the moment it is back.
    let probes: Vec<bool> = report
        .history
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Write { client, acked, .. } if *client == options.clients => Some(*acked),
            _ => None,
        })
        .collect();
    assert!(!probes.is_empty(), "no probe ran");
    assert!(
        probes.iter().all(|acked| *acked),
        "writes through the node failed after its restart: {probes:?}\n{}",
        report.summary()
    );
    assert!(report.passed(), "{}", report.summary());
}
