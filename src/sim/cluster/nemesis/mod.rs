//! The nemesis: a schedule of faults drawn from the seed before the run
//! starts, so that a seed names one exact sequence of faults.
//!
//! Faults come one every 0.3–1.5 s of simulated time during the fault
//! window, drawn from every class a network, a disk, a clock or an
//! operator can produce:
//!
//! - **network**: a partition of 0.5–3 s (one node alone, a minority
//!   against a majority, or the ring-shaped one where every node sees a
//!   different majority), or a one-way partition (a node's messages to
//!   some peers are lost while theirs still reach it); bursts of 0.5–3 s
//!   of message loss of 0–5 % or latency of 1–200 ms; a hold of one link's
//!   messages and its release; a heal;
//! - **process and power**: a crash that keeps the page cache (a killed
//!   process), a power loss (every write not synced is gone), a lost disk
//!   (the node comes back empty); each restarts 0.5–3 s later;
//! - **disk**: a backup copy of a node's disk, and later a rollback to it
//!   (the whole disk, identity included, goes back in time: a restored
//!   backup); writes failing with `EIO` or `ENOSPC` for a while; an fsync
//!   that fails (the store is poisoned, and the operator restarts the node
//!   after a power cycle); a slow disk;
//! - **clock**: a node's clock steps by up to ±5 s;
//! - **membership**: a spare node joins, a node leaves gracefully, a dead
//!   node is removed by an operator, a node that left or was removed
//!   rejoins under its old id, with its old disk or an empty one.
//!
//! The schedule keeps every promise checkable: at most two nodes are down
//! at once, and all the faults that lose acknowledged data on a node (a
//! lost disk, a rollback, a removal) fall on one node per run, so a write
//! that two replicas acknowledged always keeps a copy; single-node
//! acknowledgements are not promises in a run that has any. When the
//! window closes, everything heals: links repaired, held messages
//! released, loss, latency, disk faults and clock skew gone, every member
//! that is down started again.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

mod fault;

pub use self::fault::{CLASSES, Crash, DiskFault, Event, Fault, counts};

/// Where each node stands as the schedule is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    /// Stopped; restarts at this time.
    Down(Duration),
    /// Left or removed: not a member until it rejoins.
    Gone,
    /// Never joined yet.
    Spare,
}

/// The schedule being drawn.
struct Draw<'a> {
    rng: &'a mut SmallRng,
    events: Vec<Event>,
    states: Vec<State>,
    held: Vec<(usize, usize)>,
    /// The one node whose faults may lose data, once chosen.
    lossy: Option<usize>,
    backed_up: Vec<bool>,
    /// Disk faults to clear at the end.
    disk_faulty: Vec<bool>,
    skewed: Vec<bool>,
    membership_changes: usize,
}

/// Membership changes in one run, at most.
const MAX_MEMBERSHIP_CHANGES: usize = 2;

/// The faults of one run over `nodes` hosts, the last `spares` of which
/// start outside the ring, between `from` and `until`, ending in a full
/// heal at `until`.
pub fn schedule(
    rng: &mut SmallRng,
    nodes: usize,
    spares: usize,
    from: Duration,
    until: Duration,
) -> Vec<Event> {
    let mut draw = Draw {
        rng,
        events: Vec::new(),
        states: (0..nodes)
            .map(|n| {
                if n + spares >= nodes {
                    State::Spare
                } else {
                    State::Up
                }
            })
            .collect(),
        held: Vec::new(),
        lossy: None,
        backed_up: vec![false; nodes],
        disk_faulty: vec![false; nodes],
        skewed: vec![false; nodes],
        membership_changes: 0,
    };
    let mut at = from;
    loop {
        at += Duration::from_millis(draw.rng.random_range(300..1500));
        if at >= until {
            break;
        }
        draw.restarts_due(at);
        let fault = draw.next(at, until);
        if let Some(fault) = fault {
            draw.events.push(Event { at, fault });
        }
    }
    draw.finish(until)
}

impl Draw<'_> {
    fn push(&mut self, at: Duration, fault: Fault) {
        self.events.push(Event { at, fault });
    }

    /// Restarts that are due by `at` come first.
    fn restarts_due(&mut self, at: Duration) {
        for node in 0..self.states.len() {
            if let State::Down(back) = self.states[node]
                && back <= at
            {
                self.states[node] = State::Up;
                self.push(back, Fault::Restart { node });
            }
        }
    }

    fn nodes(&self) -> usize {
        self.states.len()
    }

    fn up(&self) -> Vec<usize> {
        (0..self.nodes())
            .filter(|&n| self.states[n] == State::Up)
            .collect()
    }

    fn down(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, State::Down(_)))
            .count()
    }

    /// Members that own ranges or will again (up or down).
    fn members(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, State::Up | State::Down(_)))
            .count()
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.random_range(0..from.len())])
    }

    /// Whether `node` may take a fault that loses data (and takes the
    /// run's one lossy node if none is chosen yet).
    fn may_lose(&mut self, node: usize) -> bool {
        match self.lossy {
            Some(lossy) => lossy == node,
            None => {
                self.lossy = Some(node);
                true
            }
        }
    }

    fn burst_end(&mut self, at: Duration, until: Duration) -> Duration {
        (at + Duration::from_millis(self.rng.random_range(500..3000))).min(until)
    }

    fn restart_at(&mut self, at: Duration) -> Duration {
        at + Duration::from_millis(self.rng.random_range(500..3000))
    }

    fn next(&mut self, at: Duration, until: Duration) -> Option<Fault> {
        let nodes = self.nodes();
        let up = self.up();
        Some(match self.rng.random_range(0..20) {
            // A partition lasts 0.5-3 s, then everything heals.
            0..=3 => {
                let end = self.burst_end(at, until);
                self.held.clear();
                self.push(end, Fault::Heal);
                match self.rng.random_range(0..4) {
                    0 => Fault::Cut(alone(self.rng, nodes)),
                    1 => Fault::Cut(minority(self.rng, nodes)),
                    2 => Fault::Cut(ring(nodes)),
                    _ => Fault::CutOneWay(one_way(self.rng, nodes)),
                }
            }
            4..=6 if self.down() < 2 => {
                let node = self.pick(&up)?;
                let kind = match self.rng.random_range(0..10) {
                    0..=3 => Crash::Process,
                    4..=8 => Crash::PowerLoss,
                    _ if self.may_lose(node) => Crash::DiskLoss,
                    _ => Crash::PowerLoss,
                };
                self.states[node] = State::Down(self.restart_at(at));
                Fault::Crash { node, kind }
            }
            7 => {
                let node = self.pick(&up)?;
                self.backed_up[node] = true;
                Fault::Backup { node }
            }
            8 if self.down() < 2 => {
                let candidates: Vec<usize> =
                    up.iter().copied().filter(|&n| self.backed_up[n]).collect();
                let node = self.pick(&candidates)?;
                if !self.may_lose(node) {
                    return None;
                }
                self.states[node] = State::Down(self.restart_at(at));
                Fault::Rollback { node }
            }
            9 | 10 => {
                let node = self.pick(&up)?;
                self.disk_fault(node, at, until)?
            }
            11 => {
                let node = self.rng.random_range(0..nodes);
                self.skewed[node] = true;
                Fault::ClockSkew {
                    node,
                    ms: self.rng.random_range(-5000..=5000),
                }
            }
            // Loss and latency come in bursts of 0.5-3 s. Loss is turmoil's:
            // each step a link fails with this chance and mends with 0.2,
            // and a TCP segment lost on it is never sent again, so the
            // connection goes silent until a keep-alive ping ends it.
            12 => {
                let end = self.burst_end(at, until);
                self.push(end, Fault::Loss(0.0));
                Fault::Loss(self.rng.random_range(0.0..0.05))
            }
            13 => {
                let end = self.burst_end(at, until);
                self.push(end, Fault::Latency(Duration::from_millis(1)));
                Fault::Latency(Duration::from_millis(self.rng.random_range(1..=200)))
            }
            14 => {
                let a = self.rng.random_range(0..nodes);
                let b = (a + self.rng.random_range(1..nodes)) % nodes;
                self.held.push((a, b));
                Fault::Hold(a, b)
            }
            15 if !self.held.is_empty() => {
                let (a, b) = self.held.remove(self.rng.random_range(0..self.held.len()));
                Fault::Release(a, b)
            }
            16 | 17 => self.membership(at, until)?,
            _ => {
                self.held.clear();
                Fault::Heal
            }
        })
    }

    /// A disk fault on `node`, with what ends it scheduled: a heal after a
    /// while, or, for a failed fsync, a power cycle by the operator.
    fn disk_fault(&mut self, node: usize, at: Duration, until: Duration) -> Option<Fault> {
        let end = (at + Duration::from_millis(self.rng.random_range(300..2000))).min(until);
        let fault = match self.rng.random_range(0..4) {
            0 => DiskFault::WriteErrors("EIO"),
            1 => DiskFault::WriteErrors("ENOSPC"),
            2 => DiskFault::Slow(Duration::from_millis(self.rng.random_range(5..100))),
            _ if self.down() < 2 => {
                // The poisoned store fails every write until the node is
                // restarted; the operator power-cycles it.
                let back = self.restart_at(end);
                self.states[node] = State::Down(back);
                self.push(
                    end,
                    Fault::Crash {
                        node,
                        kind: Crash::PowerLoss,
                    },
                );
                self.push(
                    end,
                    Fault::Disk {
                        node,
                        fault: DiskFault::Heal,
                    },
                );
                return Some(Fault::Disk {
                    node,
                    fault: DiskFault::FailSync,
                });
            }
            _ => return None,
        };
        self.disk_faulty[node] = true;
        self.push(
            end,
            Fault::Disk {
                node,
                fault: DiskFault::Heal,
            },
        );
        Some(Fault::Disk { node, fault })
    }

    /// A join, a leave, a removal or a rejoin, when the ring can take it:
    /// nobody down, at least four members, time left for the handoff.
    fn membership(&mut self, at: Duration, until: Duration) -> Option<Fault> {
        if self.membership_changes >= MAX_MEMBERSHIP_CHANGES
            || self.down() > 0
            || at + Duration::from_secs(3) > until
        {
            return None;
        }
        let up = self.up();
        let via = self.pick(&up)?;
        let returning: Vec<usize> = (0..self.nodes())
            .filter(|&n| matches!(self.states[n], State::Spare | State::Gone))
            .collect();
        let fault = match self.rng.random_range(0..3) {
            0 if !returning.is_empty() => {
                let node = self.pick(&returning)?;
                let was_spare = self.states[node] == State::Spare;
                self.states[node] = State::Up;
                if was_spare {
                    Fault::Join { node, via }
                } else {
                    Fault::Rejoin {
                        node,
                        via,
                        keep_disk: self.rng.random_bool(0.5),
                    }
                }
            }
            1 if self.members() > 4 => {
                let candidates: Vec<usize> = up.iter().copied().filter(|&n| n != via).collect();
                let node = self.pick(&candidates)?;
                self.states[node] = State::Gone;
                Fault::Leave { node }
            }
            2 if self.members() > 4 => {
                // A dead node is removed: it dies now, the operator removes
                // it a moment later, and its copies are gone for good.
                let candidates: Vec<usize> = up.iter().copied().filter(|&n| n != via).collect();
                let node = self.pick(&candidates)?;
                if !self.may_lose(node) {
                    return None;
                }
                self.states[node] = State::Gone;
                let removed = at + Duration::from_millis(self.rng.random_range(200..1000));
                self.push(removed, Fault::Remove { node, via });
                Fault::Crash {
                    node,
                    kind: Crash::Process,
                }
            }
            _ => return None,
        };
        self.membership_changes += 1;
        Some(fault)
    }

    /// The heal at `until`: every member that is down starts again, and
    /// every network, disk and clock fault is gone.
    fn finish(mut self, until: Duration) -> Vec<Event> {
        self.events.sort_by_key(|e| e.at);
        for node in 0..self.nodes() {
            if let State::Down(_) = self.states[node] {
                self.push(until, Fault::Restart { node });
            }
            if self.disk_faulty[node] {
                self.push(
                    until,
                    Fault::Disk {
                        node,
                        fault: DiskFault::Heal,
                    },
                );
            }
            if self.skewed[node] {
                self.push(until, Fault::ClockSkew { node, ms: 0 });
            }
        }
        for fault in [
            Fault::Heal,
            Fault::Loss(0.0),
            Fault::Latency(Duration::from_millis(1)),
        ] {
            self.push(until, fault);
        }
        self.events
    }
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

/// One node whose messages to a random half of the others are lost, while
/// theirs still reach it (a half-broken NIC, an asymmetric firewall rule):
/// it hears requests it cannot answer.
fn one_way(rng: &mut SmallRng, nodes: usize) -> Vec<(usize, usize)> {
    let from = rng.random_range(0..nodes);
    let mut others: Vec<usize> = (0..nodes).filter(|&o| o != from).collect();
    others.shuffle(rng);
    others.truncate(nodes / 2);
    others.into_iter().map(|to| (from, to)).collect()
}

#[cfg(test)]
mod tests;
