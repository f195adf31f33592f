//! The faults the nemesis draws, and how a run's JSON counts them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One thing the nemesis does. Nodes are indices into the cluster's hosts.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cut these links between nodes (both directions).
    Cut(Vec<(usize, usize)>),
    /// Lose the messages from the first node of each pair to the second.
    CutOneWay(Vec<(usize, usize)>),
    /// Repair every link between nodes and release held messages.
    Heal,
    /// Stop a node.
    Crash { node: usize, kind: Crash },
    /// Start a stopped node again.
    Restart { node: usize },
    /// Copy a node's disk aside (what a backup or snapshot would hold).
    Backup { node: usize },
    /// Stop a node and put its disk back to its last backup; it restarts
    /// on the old copy.
    Rollback { node: usize },
    /// Something goes wrong with a node's disk, or stops going wrong.
    Disk { node: usize, fault: DiskFault },
    /// A node's clock is set off the true time by this much.
    ClockSkew { node: usize, ms: i64 },
    /// Each message on a link breaks the link with this probability (lost
    /// until it is repaired).
    Loss(f64),
    /// Messages take up to this long.
    Latency(Duration),
    /// Hold the messages between two nodes.
    Hold(usize, usize),
    /// Deliver what was held between two nodes.
    Release(usize, usize),
    /// A spare node joins the ring through `via`.
    Join { node: usize, via: usize },
    /// A node leaves the ring gracefully (the operator asks it to).
    Leave { node: usize },
    /// The operator removes a dead node through `via`.
    Remove { node: usize, via: usize },
    /// A node that left or was removed joins again under its id through
    /// `via`, with the disk it had or an empty one.
    Rejoin {
        node: usize,
        via: usize,
        keep_disk: bool,
    },
}

/// How a node stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The process dies; the OS keeps what it was given (SIGKILL).
    Process,
    /// The machine loses power: what was not synced is gone.
    PowerLoss,
    /// The disk is gone: the node comes back empty.
    DiskLoss,
}

/// A disk fault, set on and later cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// Every write fails with this error (`EIO`, `ENOSPC`).
    WriteErrors(&'static str),
    /// The next fsync fails (and poisons the store until a restart).
    FailSync,
    /// Every sync takes this long.
    Slow(Duration),
    /// The disk works again.
    Heal,
}

impl Fault {
    /// The fault's class, as the run's JSON counts them.
    pub fn class(&self) -> &'static str {
        match self {
            Fault::Cut(_) => "partition",
            Fault::CutOneWay(_) => "one_way_partition",
            Fault::Heal => "heal",
            Fault::Crash {
                kind: Crash::Process,
                ..
            } => "crash",
            Fault::Crash {
                kind: Crash::PowerLoss,
                ..
            } => "power_loss",
            Fault::Crash {
                kind: Crash::DiskLoss,
                ..
            } => "disk_loss",
            Fault::Restart { .. } => "restart",
            Fault::Backup { .. } => "backup",
            Fault::Rollback { .. } => "rollback",
            Fault::Disk {
                fault: DiskFault::Slow(_),
                ..
            } => "slow_disk",
            Fault::Disk {
                fault: DiskFault::Heal,
                ..
            } => "disk_heal",
            Fault::Disk { .. } => "disk_fault",
            Fault::ClockSkew { .. } => "clock_skew",
            Fault::Loss(_) => "message_loss",
            Fault::Latency(_) => "latency",
            Fault::Hold(..) => "hold",
            Fault::Release(..) => "release",
            Fault::Join { .. } => "join",
            Fault::Leave { .. } => "leave",
            Fault::Remove { .. } => "remove",
            Fault::Rejoin { .. } => "rejoin",
        }
    }

    /// Whether the fault may lose what the node had acknowledged.
    pub fn loses_data(&self) -> bool {
        matches!(
            self,
            Fault::Crash {
                kind: Crash::DiskLoss,
                ..
            } | Fault::Rollback { .. }
                | Fault::Remove { .. }
        )
    }
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

/// Every class [`Fault::class`] names, in the order the JSON lists them.
pub const CLASSES: [&str; 21] = [
    "partition",
    "one_way_partition",
    "heal",
    "message_loss",
    "latency",
    "hold",
    "release",
    "crash",
    "power_loss",
    "disk_loss",
    "restart",
    "backup",
    "rollback",
    "disk_fault",
    "slow_disk",
    "disk_heal",
    "clock_skew",
    "join",
    "leave",
    "remove",
    "rejoin",
];

/// How many faults of each class a schedule holds, every class named (a
/// class the run did not draw counts 0, so a campaign's totals can tell
/// "never drawn" from "not reported").
pub fn counts(events: &[Event]) -> BTreeMap<&'static str, usize> {
    let mut out: BTreeMap<&'static str, usize> = CLASSES.iter().map(|c| (*c, 0)).collect();
    for e in events {
        *out.entry(e.fault.class()).or_default() += 1;
    }
    out
}
