//! The deterministic simulation of whole clusters: `chorus sim cluster`
//! and `tests/simulation.rs`.
//!
//! Five real nodes (N=3) and a spare, the same code `chorus serve` runs,
//! live in one process on turmoil's simulated network, each on an
//! in-memory store over a simulated disk ([`crate::store::disk`]) and a
//! clock of its own, in simulated time. Everything random comes from one
//! seed: the network's latencies and losses (turmoil's generator), the
//! nemesis's schedule, the clients' operations, each node's gossip and
//! anti-entropy choices and the incarnation of each life of a node. A run:
//!
//! 1. boots the cluster (the first second);
//! 2. runs the clients' workload (writes, deletes and reads at random
//!    quorums) while the [`nemesis`] injects faults of every class (network,
//!    process, power, disk, clock, membership) until `faults_for` has
//!    passed, then heals everything;
//! 3. lets anti-entropy run `settle_rounds` rounds with no faults;
//! 4. reads every key at r=all and asks every replica of every key (on the
//!    ring as it ended) for its canonical set (`GET /admin/replica/{key}`),
//!    and hands the recorded history to every checker in [`crate::check`].
//!
//! A run passes only if no checker found a violation *and* it did enough to
//! mean something: at least [`MIN_ACKED`] acknowledged writes, and every
//! checker examined something. A run that breaks a promise prints its seed;
//! `chorus sim cluster --seed <seed>` replays it (see docs/testing.md). A
//! run is deterministic in a fresh process: tokio numbers tasks with a
//! process-wide counter, and the order in which a crashed host's tasks are
//! dropped follows those numbers, so a campaign runs each seed in a
//! process of its own.

pub mod finals;
pub mod host;
pub mod nemesis;
pub mod net;
mod operator;
#[cfg(test)]
mod tests;
pub mod workload;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub use self::finals::{Final, final_state, verdicts};
use self::host::{Membership, Slot};
use self::nemesis::{DiskFault, Event, Fault};
use self::net::SimConnector;
use self::workload::{CLIENT_TIMEOUT, Worker};
use crate::check::record::{Counts, Recorder};
use crate::check::{self, History, Verdict};
use crate::client::Client;
use crate::config::{AntiEntropyMode, Config, Engine};
use crate::error::{Error, Result};
use crate::ring::Members;
use crate::store::disk::{Disk, Faults};

/// The port every simulated node listens on (each has its own address).
const PORT: u16 = 7000;

/// A run with fewer acknowledged writes than this proved too little.
pub const MIN_ACKED: usize = 30;

/// Anti-entropy rounds (of 200 ms) after the heal before the final check:
/// the convergence bound the checker holds every run to. Operation
/// transfer needs longer: ops that lived only in a crashed node's memory
/// come back through the state exchange of every tenth round.
pub fn settle_rounds(mode: AntiEntropyMode) -> u32 {
    match mode {
        AntiEntropyMode::Operation => 100,
        _ => 40,
    }
}

/// Simulated time per step: every host runs until idle, then time moves on.
const TICK_MS: u64 = 5;

/// The simulated wall clock starts here (2026-01-01), not at the real time,
/// so a seed replays the same clock readings.
const EPOCH_SECS: u64 = 1_767_225_600;

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Nodes in the ring at the start.
    pub nodes: usize,
    /// Machines that start outside the ring (a nemesis may join them).
    pub spares: usize,
    pub n: usize,
    pub clients: u32,
    pub shared_keys: usize,
    /// How long the workload and the faults run.
    pub faults_for: Duration,
    /// Anti-entropy rounds after the heal before the final check (the
    /// convergence bound); `None`: [`settle_rounds`] of the mode.
    pub settle_rounds: Option<u32>,
    /// `None`: the seed picks state or operation transfer.
    pub mode: Option<AntiEntropyMode>,
    /// A schedule of faults to run instead of the nemesis's (a scenario).
    pub schedule: Option<Vec<Event>>,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            nodes: 5,
            spares: 1,
            n: 3,
            clients: 6,
            shared_keys: 4,
            faults_for: Duration::from_secs(10),
            settle_rounds: None,
            mode: None,
            schedule: None,
        }
    }
}

/// What one run did and found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub mode: AntiEntropyMode,
    pub schedule: Vec<Event>,
    pub history: History,
    /// One per checker, `liveness` last.
    pub verdicts: Vec<Verdict>,
    pub counts: Counts,
}

impl Report {
    /// Every violation any checker found.
    pub fn violations(&self) -> impl Iterator<Item = &check::Violation> {
        self.verdicts.iter().flat_map(|v| &v.violations)
    }

    /// Why the run proved too little to count, if it did: too few
    /// acknowledged writes, or a checker that examined nothing.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.counts.acked < MIN_ACKED {
            out.push(format!(
                "only {} acknowledged writes (at least {MIN_ACKED})",
                self.counts.acked
            ));
        }
        for verdict in &self.verdicts {
            if verdict.examined == 0 {
                out.push(format!("checker {} examined nothing", verdict.checker));
            }
        }
        out
    }

    /// Whether the run kept every promise and examined enough to say so.
    pub fn passed(&self) -> bool {
        self.violations().next().is_none() && self.shortfalls().is_empty()
    }

    /// The run in a few lines: the seed to replay, the faults, the verdict.
    pub fn summary(&self) -> String {
        self.summary_with(false)
    }

    /// The summary, with the whole fault schedule when `verbose`.
    pub fn summary_with(&self, verbose: bool) -> String {
        let c = self.counts;
        let violations: Vec<_> = self.violations().collect();
        let mut out = format!(
            "seed {} ({:?} anti-entropy): {} writes ({} promised), {} deletes ({} promised), {} reads, {} CRDT updates ({} promised), {} faults, {} violations, history {}\n",
            self.seed,
            self.mode,
            c.writes,
            c.acked,
            c.deletes,
            c.acked_deletes,
            c.reads,
            c.updates,
            c.acked_updates,
            self.schedule.len(),
            violations.len(),
            self.digest()
        );
        for short in self.shortfalls() {
            out.push_str(&format!("  too little: {short}\n"));
        }
        for v in &violations {
            out.push_str(&format!("  {} on `{}`: {}\n", v.checker, v.key, v.message));
        }
        let keys: std::collections::BTreeSet<&str> =
            violations.iter().map(|v| v.key.as_str()).collect();
        for key in keys {
            out.push_str(&format!(
                "  `{key}` at the end: {:?}; its operations:\n",
                self.history.finals.get(key)
            ));
            for op in self.history.ops.iter().filter(|op| op_key(op) == key) {
                out.push_str(&format!("    {op:?}\n"));
            }
            if let Some(held) = self.history.crdts.finals.get(key) {
                out.push_str(&format!("    (a CRDT key) at the end: {held:?}\n"));
            }
            for update in &self.history.crdts.updates {
                if format!("{update:?}").contains(&format!("key: {key:?}")) {
                    out.push_str(&format!("    {update:?}\n"));
                }
            }
        }
        if !self.passed() || verbose {
            out.push_str("  faults:\n");
            for e in &self.schedule {
                out.push_str(&format!("    {e}\n"));
            }
            out.push_str(&format!(
                "  replay: chorus sim cluster --seed {}\n",
                self.seed
            ));
        }
        out
    }

    /// The run as one JSON object (`chorus sim cluster --json`).
    pub fn json(&self) -> serde_json::Value {
        let c = self.counts;
        let checked: BTreeMap<&str, usize> = self
            .verdicts
            .iter()
            .map(|v| (v.checker, v.examined))
            .collect();
        let (_, deleted_examined) = check::deletes::check(&self.history);
        let violations: Vec<serde_json::Value> = self
            .violations()
            .map(|v| serde_json::json!({"checker": v.checker, "key": v.key, "message": v.message}))
            .collect();
        serde_json::json!({
            "seed": self.seed,
            "mode": match self.mode {
                AntiEntropyMode::Operation => "operation",
                AntiEntropyMode::Off => "off",
                _ => "state",
            },
            "writes": c.writes,
            "acked": c.acked,
            "deletes": c.deletes,
            "acked_deletes": c.acked_deletes,
            "deleted_values_checked": deleted_examined,
            "reads": c.reads,
            "crdt_updates": c.updates,
            "acked_crdt_updates": c.acked_updates,
            "faults": nemesis::counts(&self.schedule),
            "checked": checked,
            "violations": violations,
            "too_little": self.shortfalls(),
            "passed": self.passed(),
            "history": self.digest(),
        })
    }

    /// A short digest of the whole history and every verdict: two runs of
    /// one seed print the same.
    pub fn digest(&self) -> String {
        let text = format!("{:?}{:?}{:?}", self.schedule, self.history, self.verdicts);
        blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
    }
}

fn op_key(op: &check::Op) -> &str {
    match op {
        check::Op::Write { key, .. } | check::Op::Read { key, .. } => key,
    }
}

pub fn run(options: &Options) -> Result<Report> {
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let mode = options.mode.unwrap_or(if rng.random_bool(0.5) {
        AntiEntropyMode::State
    } else {
        AntiEntropyMode::Operation
    });
    let boot = Duration::from_secs(1);
    let until = boot + options.faults_for;
    let hosts = options.nodes + options.spares;
    let drawn = nemesis::schedule(&mut rng, hosts, options.spares, boot, until);
    let schedule = options.schedule.clone().unwrap_or(drawn);
    // A write one node alone acknowledged is lost with that node's data:
    // w=1 acknowledgements are promises only after the last such fault.
    let single_acks_after = schedule
        .iter()
        .filter(|e| e.fault.loses_data())
        .map(|e| e.at)
        .max()
        .unwrap_or_default();

    let mut sim = turmoil::Builder::new()
        .rng_seed(rng.random())
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(until + Duration::from_secs(600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .repair_rate(0.2)
        // A listen backlog as a Linux host's (somaxconn): a node that has
        // bound its port but not begun to accept (it is joining) queues
        // connections instead of taking the simulation down.
        .tcp_capacity(4096)
        .tick_duration(Duration::from_millis(TICK_MS))
        .build();

    let names: Vec<String> = (1..=hosts).map(|i| format!("n{i}")).collect();
    // The config names each node's simulated address, known only once
    // every host is registered; hosts read it when they start.
    let config: Arc<OnceLock<Config>> = Arc::new(OnceLock::new());
    let addrs: Arc<OnceLock<Vec<String>>> = Arc::new(OnceLock::new());
    let slots: Vec<Arc<Mutex<Slot>>> = (0..hosts)
        .map(|i| Arc::new(Mutex::new(Slot::new(i < options.nodes))))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let (config, slot, id) = (Arc::clone(&config), Arc::clone(&slots[i]), name.clone());
        let (seed, addrs) = (options.seed, Arc::clone(&addrs));
        sim.host(name.as_str(), move || {
            let (config, slot, id) = (Arc::clone(&config), Arc::clone(&slot), id.clone());
            let addrs = Arc::clone(&addrs);
            async move {
                let config = config.get().ok_or("the config is not ready")?;
                let addrs = addrs.get().ok_or("the addresses are not ready")?;
                host::run(config, &id, i, seed, &slot, addrs).await?;
                Ok(())
            }
        });
    }
    let urls: Vec<String> = names
        .iter()
        .map(|name| format!("http://{}:{PORT}", sim.lookup(name.as_str())))
        .collect();
    let _ = config.set(sim_config(options, mode, &names, &sim));
    let _ = addrs.set(
        names
            .iter()
            .map(|name| format!("{}:{PORT}", sim.lookup(name.as_str())))
            .collect(),
    );
    let config = config
        .get()
        .cloned()
        .ok_or_else(|| Error::Protocol("no config".into()))?;
    let clients = |timeout| -> Vec<Client<SimConnector>> {
        urls.iter()
            .map(|url| Client::with_connector(url, SimConnector::new(timeout)))
            .collect()
    };

    let recorder = Arc::new(Recorder::new());
    for c in 0..options.clients {
        let worker = Worker {
            id: c,
            seed: rng.random(),
            shared_keys: options.shared_keys,
            session: c % 2 == 0,
            single_acks_after,
            until,
            recorder: Arc::clone(&recorder),
        };
        let clients = clients(CLIENT_TIMEOUT);
        sim.client(format!("client{c}"), async move {
            tokio::time::sleep(boot).await;
            worker.run(clients).await;
            Ok(())
        });
    }
    let prober = Worker {
        id: options.clients,
        seed: rng.random(),
        shared_keys: options.shared_keys,
        session: false,
        single_acks_after,
        until,
        recorder: Arc::clone(&recorder),
    };
    let probed: Vec<String> = (0..options.shared_keys.min(2))
        .map(|k| format!("k{k}"))
        .collect();
    sim.client(
        "operator",
        operator::run(
            schedule.clone(),
            clients(CLIENT_TIMEOUT),
            names.clone(),
            prober,
            probed,
        ),
    );
    let done: Rc<RefCell<Option<Final>>> = Rc::new(RefCell::new(None));
    {
        let keys = workload::keys(options.shared_keys, options.clients);
        let rounds = options.settle_rounds.unwrap_or(settle_rounds(mode));
        let settle = Duration::from_millis(config.antientropy.interval_ms) * rounds;
        let (clients, done, slots) = (clients(CLIENT_TIMEOUT), Rc::clone(&done), slots.clone());
        let config = config.clone();
        sim.client("checker", async move {
            tokio::time::sleep(until + CLIENT_TIMEOUT + settle).await;
            let ring = final_members(&slots).ring();
            let found = final_state(&config, &ring, &clients, &keys).await;
            *done.borrow_mut() = Some(found);
            Ok(())
        });
    }

    let mut events = schedule.iter().peekable();
    loop {
        let now = sim.elapsed();
        while let Some(event) = events.next_if(|e| e.at <= now) {
            apply(&mut sim, &names, &slots, &event.fault);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "seed {}: the simulation failed: {e}",
                    options.seed
                )));
            }
        }
    }

    let found = done.borrow_mut().take().unwrap_or_default();
    let (history, verdicts) = verdicts(&recorder, found);
    Ok(Report {
        seed: options.seed,
        mode,
        schedule,
        counts: recorder.counts(),
        history,
        verdicts,
    })
}

/// The ring as the running nodes see it once they have gossiped: the
/// merge of their members documents.
fn final_members(slots: &[Arc<Mutex<Slot>>]) -> Members {
    let mut members = Members::default();
    for slot in slots {
        if let Some(cluster) = &slot.lock().cluster {
            members.merge(&cluster.roster().members());
        }
    }
    members
}

fn apply(sim: &mut turmoil::Sim<'_>, names: &[String], slots: &[Arc<Mutex<Slot>>], fault: &Fault) {
    let name = |i: usize| names[i].as_str();
    match fault {
        Fault::Cut(links) => {
            for &(a, b) in links {
                sim.partition(name(a), name(b));
            }
        }
        Fault::CutOneWay(links) => {
            for &(from, to) in links {
                sim.partition_oneway(name(from), name(to));
            }
        }
        Fault::Heal => {
            for a in 0..names.len() {
                for b in a + 1..names.len() {
                    sim.release(name(a), name(b));
                }
            }
        }
        Fault::Crash { node, kind } => {
            crash(sim, name(*node), &slots[*node]);
            let mut slot = slots[*node].lock();
            match kind {
                nemesis::Crash::Process => {}
                nemesis::Crash::PowerLoss => slot.disk.power_loss(),
                nemesis::Crash::DiskLoss => {
                    slot.disk = Disk::new();
                    slot.saved_members = None;
                    slot.generation_floor = 0;
                }
            }
        }
        Fault::Restart { node } => sim.bounce(name(*node)),
        Fault::Backup { node } => {
            let mut slot = slots[*node].lock();
            let members = slot.cluster.as_ref().map(|c| c.roster().members());
            slot.backup = Some((slot.disk.snapshot(), members, slot.generation_floor));
        }
        Fault::Rollback { node } => {
            crash(sim, name(*node), &slots[*node]);
            let mut slot = slots[*node].lock();
            if let Some((image, members, floor)) = slot.backup.clone() {
                slot.disk.restore(image);
                slot.saved_members = members;
                slot.generation_floor = floor;
            }
        }
        Fault::Disk { node, fault } => {
            let disk = Arc::clone(&slots[*node].lock().disk);
            let mut faults = disk.faults();
            match fault {
                DiskFault::WriteErrors(errno) => faults.write_error = Some(errno),
                DiskFault::FailSync => faults.failing_syncs = 1,
                DiskFault::Slow(latency) => faults.sync_latency = *latency,
                DiskFault::Heal => faults = Faults::default(),
            }
            disk.set_faults(faults);
        }
        Fault::ClockSkew { node, ms } => slots[*node].lock().skew.store(*ms, Ordering::Relaxed),
        Fault::Loss(rate) => sim.set_fail_rate(*rate),
        Fault::Latency(max) => sim.set_max_message_latency(*max),
        Fault::Hold(a, b) => sim.hold(name(*a), name(*b)),
        Fault::Release(a, b) => sim.release(name(*a), name(*b)),
        Fault::Join { node, via } | Fault::Rejoin { node, via, .. } => {
            let addr = format!("{}:{PORT}", sim.lookup(name(*via)));
            {
                let mut slot = slots[*node].lock();
                slot.join_via = Some(addr);
                if matches!(
                    fault,
                    Fault::Rejoin {
                        keep_disk: false,
                        ..
                    }
                ) {
                    slot.disk = Disk::new();
                    slot.saved_members = None;
                    slot.generation_floor = 0;
                }
            }
            sim.bounce(name(*node));
        }
        // The operator client asks the node (leave) or a member (remove).
        Fault::Leave { .. } => {}
        Fault::Remove { node, .. } => slots[*node].lock().membership = Membership::Out,
    }
}

/// Stops a node: what it knew of the ring is saved, as its
/// `members.json` would be.
fn crash(sim: &mut turmoil::Sim<'_>, name: &str, slot: &Mutex<Slot>) {
    {
        let mut slot = slot.lock();
        if let Some(cluster) = slot.cluster.take() {
            slot.saved_members = Some(cluster.roster().members());
        }
    }
    sim.crash(name);
}

fn sim_config(
    options: &Options,
    mode: AntiEntropyMode,
    names: &[String],
    sim: &turmoil::Sim<'_>,
) -> Config {
    let mut config = Config::dev(names.len(), PORT, std::path::Path::new("/nonexistent"));
    config.cluster.name = "chorus-sim".into();
    config.cluster.n = options.n;
    config.cluster.r = options.n / 2 + 1;
    config.cluster.w = options.n / 2 + 1;
    config.cluster.timeout_ms = 1_000;
    config.storage.engine = Engine::Memory;
    config.ring.stabilize_ms = 200;
    config.ring.gossip_ms = 100;
    config.ring.handoff_interval_ms = 300;
    config.ring.peer_timeout_ms = 500;
    config.antientropy.mode = mode;
    config.antientropy.interval_ms = 200;
    config.antientropy.purge_interval_ms = 1_000;
    // Peers authenticate in the simulation as in a real cluster; its
    // network is not loopback, and has no TLS.
    config.security.peer_secret = Some("chorus-simulation-secret-of-32-bytes+".into());
    config.security.allow_plaintext = true;
    for (i, (node, name)) in config.nodes.iter_mut().zip(names).enumerate() {
        node.listen = format!("{}:{PORT}", sim.lookup(name.as_str()));
        // Spares join later, through a member.
        node.initial = i < options.nodes;
    }
    config
}
