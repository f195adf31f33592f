//! The deterministic simulation of whole clusters: `chorus sim cluster`
//! and `tests/simulation.rs`.
//!
//! Five real nodes (N=3), the same code `chorus serve` runs, live in one
//! process on turmoil's simulated network, with the in-memory store and
//! simulated time. Everything random comes from one seed: the network's
//! latencies and losses (turmoil's generator), the nemesis's schedule, the
//! clients' operations, each node's gossip and anti-entropy choices and
//! the incarnation a wiped node comes back with. A run:
//!
//! 1. boots the cluster (the first second);
//! 2. runs the clients' workload while the [`nemesis`] injects faults
//!    until `faults_for` has passed, then heals everything;
//! 3. lets anti-entropy run `settle_rounds` rounds with no faults;
//! 4. reads every key at r=all and asks every replica of every key for its
//!    canonical set (`GET /admin/replica/{key}`), and hands the recorded
//!    history to every checker in [`crate::check`].
//!
//! A run that breaks a promise prints its seed; `chorus sim cluster --seed
//! <seed>` replays it (see docs/testing.md). A run is deterministic in a
//! fresh process: tokio numbers tasks with a process-wide counter, and the
//! order in which a crashed host's tasks are dropped follows those
//! numbers, so a campaign runs each seed in a process of its own.

pub mod nemesis;
pub mod net;
pub mod workload;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use self::nemesis::{Event, Fault};
use self::net::{SimConnector, SimNet};
use self::workload::{CLIENT_TIMEOUT, Worker};
use crate::check::record::{Recorder, read_values};
use crate::check::{self, History, Violation};
use crate::client::{Client, key_path};
use crate::config::{AntiEntropyMode, Config, Engine};
use crate::error::{Error, Result};
use crate::membership::Cluster;
use crate::node::{Node, Start, Storage};
use crate::ring::{Ring, position};
use crate::store::disk::Disk;
use crate::store::{Identity, MemoryStore, Store};

/// The port every simulated node listens on (each has its own address).
const PORT: u16 = 7000;

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

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub nodes: usize,
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
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            nodes: 5,
            n: 3,
            clients: 4,
            shared_keys: 4,
            faults_for: Duration::from_secs(10),
            settle_rounds: None,
            mode: None,
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
    pub violations: Vec<Violation>,
    /// (writes, acknowledged writes, reads)
    pub counts: (usize, usize, usize),
}

impl Report {
    /// The run in a few lines: the seed to replay, the faults, the verdict.
    pub fn summary(&self) -> String {
        let (writes, acked, reads) = self.counts;
        let mut out = format!(
            "seed {} ({:?} anti-entropy): {writes} writes ({acked} promised), {reads} reads, {} faults, {} violations, history {}\n",
            self.seed,
            self.mode,
            self.schedule.len(),
            self.violations.len(),
            self.digest()
        );
        for v in &self.violations {
            out.push_str(&format!("  {} on `{}`: {}\n", v.checker, v.key, v.message));
        }
        let keys: std::collections::BTreeSet<&str> =
            self.violations.iter().map(|v| v.key.as_str()).collect();
        for key in keys {
            out.push_str(&format!(
                "  `{key}` at the end: {:?}; its operations:\n",
                self.history.finals.get(key)
            ));
            for op in self.history.ops.iter().filter(|op| op_key(op) == key) {
                out.push_str(&format!("    {op:?}\n"));
            }
        }
        if !self.violations.is_empty() {
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

    /// A short digest of the whole history and every verdict: two runs of
    /// one seed print the same.
    pub fn digest(&self) -> String {
        let text = format!("{:?}{:?}{:?}", self.schedule, self.history, self.violations);
        blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
    }
}

fn op_key(op: &check::Op) -> &str {
    match op {
        check::Op::Write { key, .. } | check::Op::Read { key, .. } => key,
    }
}

/// A node's disk across its lives.
#[derive(Default)]
struct Slot {
    disk: Arc<Disk>,
    lose_data: bool,
    lives: u64,
}

/// What the final checker client found.
#[derive(Default)]
pub struct Final {
    pub finals: BTreeMap<String, Vec<String>>,
    pub replicas: BTreeMap<String, check::convergence::Held>,
    pub errors: Vec<Violation>,
}

impl Final {
    /// Whether every replica of every key holds the same set.
    pub fn converged(&self) -> bool {
        check::convergence::check(&self.replicas).is_empty()
    }
}

/// Every checker over a recorded history and the final state.
pub fn verdicts(recorder: &Recorder, found: Final) -> (History, Vec<Violation>) {
    let history = recorder.history(found.finals);
    let mut violations = found.errors;
    violations.extend(check::lost_writes::check(&history));
    violations.extend(check::convergence::check(&found.replicas));
    violations.extend(check::sessions::check(&history));
    violations.extend(check::siblings::check(&history));
    (history, violations)
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
    let schedule = nemesis::schedule(&mut rng, options.nodes, boot, until);
    let wipes = schedule.iter().any(|e| {
        matches!(
            e.fault,
            Fault::Crash {
                lose_data: true,
                ..
            }
        )
    });

    let mut sim = turmoil::Builder::new()
        .rng_seed(rng.random())
        .simulation_duration(until + Duration::from_secs(600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .repair_rate(0.2)
        .tick_duration(Duration::from_millis(TICK_MS))
        .build();

    let names: Vec<String> = (1..=options.nodes).map(|i| format!("n{i}")).collect();
    // The config names each node's simulated address, known only once
    // every host is registered; hosts read it when they start.
    let config: Arc<OnceLock<Config>> = Arc::new(OnceLock::new());
    let slots: Vec<Arc<Mutex<Slot>>> = names.iter().map(|_| Arc::default()).collect();
    for (i, name) in names.iter().enumerate() {
        let (config, slot, id) = (Arc::clone(&config), Arc::clone(&slots[i]), name.clone());
        let seed = options.seed;
        sim.host(name.as_str(), move || {
            let (config, slot, id) = (Arc::clone(&config), Arc::clone(&slot), id.clone());
            async move {
                let config = config.get().ok_or("the config is not ready")?;
                let (storage, life) = next_life(&slot, &id, seed, i);
                let start = Start {
                    join: None,
                    listener: None,
                    network: SimNet,
                    storage: Some(storage),
                    seed: Some(life),
                };
                let _node = Node::start_with(config, &id, start).await?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    let urls: Vec<String> = names
        .iter()
        .map(|name| format!("http://{}:{PORT}", sim.lookup(name.as_str())))
        .collect();
    let _ = config.set(sim_config(options, mode, &names, &sim));

    let recorder = Arc::new(Recorder::new());
    for c in 0..options.clients {
        let clients: Vec<Client<SimConnector>> = urls
            .iter()
            .map(|url| Client::with_connector(url, SimConnector::new(CLIENT_TIMEOUT)))
            .collect();
        let worker = Worker {
            id: c,
            seed: rng.random(),
            shared_keys: options.shared_keys,
            session: c % 2 == 0,
            single_acks_promise: !wipes,
            until,
            recorder: Arc::clone(&recorder),
        };
        sim.client(format!("client{c}"), async move {
            tokio::time::sleep(boot).await;
            worker.run(clients).await;
            Ok(())
        });
    }
    let done: Rc<RefCell<Option<Final>>> = Rc::new(RefCell::new(None));
    {
        let config = config
            .get()
            .cloned()
            .ok_or_else(|| Error::Protocol("no config".into()))?;
        let keys = workload::keys(options.shared_keys, options.clients);
        let rounds = options.settle_rounds.unwrap_or(settle_rounds(mode));
        let settle = Duration::from_millis(config.antientropy.interval_ms) * rounds;
        let (urls, done) = (urls.clone(), Rc::clone(&done));
        sim.client("checker", async move {
            tokio::time::sleep(until + CLIENT_TIMEOUT + settle).await;
            let clients: Vec<Client<SimConnector>> = urls
                .iter()
                .map(|url| Client::with_connector(url, SimConnector::new(CLIENT_TIMEOUT)))
                .collect();
            let ring = match Cluster::load_members(&config, None) {
                Ok(members) => members.ring(),
                Err(e) => return Err(e.to_string().into()),
            };
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
    let (history, violations) = verdicts(&recorder, found);
    Ok(Report {
        seed: options.seed,
        mode,
        schedule,
        counts: recorder.counts(),
        history,
        violations,
    })
}

/// The storage a node starts its next life with: its data as it was (a
/// crash), or nothing and a new incarnation (a crash that lost the disk).
fn next_life(slot: &Mutex<Slot>, id: &str, seed: u64, index: usize) -> (Storage, u64) {
    let mut slot = slot.lock();
    slot.lives += 1;
    let life_seed = seed ^ ((index as u64) << 48) ^ slot.lives.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if slot.lose_data {
        slot.disk = Disk::new();
    }
    let store = Arc::new(MemoryStore::on_disk(Arc::clone(&slot.disk)));
    // Every life is a new actor, as `Identity::load` makes it.
    let identity = Arc::new(Identity::in_memory(id, life_seed));
    slot.lose_data = false;
    let storage = Storage {
        store: store as Arc<dyn Store>,
        identity,
    };
    (storage, life_seed)
}

fn apply(sim: &mut turmoil::Sim<'_>, names: &[String], slots: &[Arc<Mutex<Slot>>], fault: &Fault) {
    let name = |i: usize| names[i].as_str();
    match fault {
        Fault::Cut(links) => {
            for &(a, b) in links {
                sim.partition(name(a), name(b));
            }
        }
        Fault::Heal => {
            for a in 0..names.len() {
                for b in a + 1..names.len() {
                    sim.release(name(a), name(b));
                }
            }
        }
        Fault::Crash { node, lose_data } => {
            slots[*node].lock().lose_data = *lose_data;
            sim.crash(name(*node));
        }
        Fault::Restart { node } => sim.bounce(name(*node)),
        Fault::Loss(rate) => sim.set_fail_rate(*rate),
        Fault::Latency(max) => sim.set_max_message_latency(*max),
        Fault::Hold(a, b) => sim.hold(name(*a), name(*b)),
        Fault::Release(a, b) => sim.release(name(*a), name(*b)),
    }
}

fn sim_config(
    options: &Options,
    mode: AntiEntropyMode,
    names: &[String],
    sim: &turmoil::Sim<'_>,
) -> Config {
    let mut config = Config::dev(options.nodes, PORT, std::path::Path::new("/nonexistent"));
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
    for (node, name) in config.nodes.iter_mut().zip(names) {
        node.listen = format!("{}:{PORT}", sim.lookup(name.as_str()));
    }
    config
}

/// After the settle: every key read at r=all, and every replica's own set
/// (`clients[i]` talks to `config.nodes[i]`).
/// The replicas asked are each key's preference list on `ring`.
pub async fn final_state<C>(
    config: &Config,
    ring: &Ring,
    clients: &[Client<C>],
    keys: &[String],
) -> Final
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut out = Final::default();
    for (k, key) in keys.iter().enumerate() {
        let path = format!("{}?r=all", key_path(key));
        let mut values = None;
        for attempt in 0..5 {
            let client = &clients[(k + attempt) % clients.len()];
            let call = client.request(Method::GET, &path, &[], Bytes::new());
            if let Ok(Ok(reply)) = tokio::time::timeout(CLIENT_TIMEOUT, call).await
                && let Some(v) = read_values(reply.status.as_u16(), &reply.body)
            {
                values = Some(v);
                break;
            }
        }
        match values {
            Some(v) => {
                out.finals.insert(key.clone(), v);
            }
            None => out
                .errors
                .push(failed(key, "the final read at r=all failed 5 times".into())),
        }
        let mut held = Vec::new();
        for replica in ring.preference_list(position(key.as_bytes()), config.cluster.n) {
            let Some(i) = config.nodes.iter().position(|n| n.id == replica) else {
                continue;
            };
            let path = format!("/admin/replica/{}", &key_path(key)["/kv/".len()..]);
            let call = clients[i].request(Method::GET, &path, &[], Bytes::new());
            match tokio::time::timeout(CLIENT_TIMEOUT, call).await {
                Ok(Ok(reply)) if reply.status == 200 => {
                    held.push((replica.to_string(), Some(reply.body.to_vec())))
                }
                Ok(Ok(reply)) if reply.status == 404 => held.push((replica.to_string(), None)),
                _ => out
                    .errors
                    .push(failed(key, format!("{replica} did not show its replica"))),
            }
        }
        out.replicas.insert(key.clone(), held);
    }
    out
}

fn failed(key: &str, message: String) -> Violation {
    Violation {
        checker: "liveness",
        key: key.to_string(),
        message,
    }
}
