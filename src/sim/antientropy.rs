//! `chorus sim antientropy`: what anti-entropy costs, measured in process.
//!
//! A cluster of real nodes' parts (store, replica, members, anti-entropy
//! service) in one process, over a transport that calls the other nodes'
//! handlers directly: no sockets, so what is measured is the protocol, not
//! the machine. `keys` keys are written to every replica; for a share
//! `divergence` of them one random replica drifts: half of those miss the
//! write, the other half get an extra write of their own (a sibling the
//! others lack). Then rounds run, each node one exchange per round, until
//! every replica of every key holds the same set. The report gives the
//! rounds, the bytes of every anti-entropy message, and the data size for
//! comparison.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::antientropy::AntiEntropy;
use crate::config::{AntiEntropyMode, Config, Engine};
use crate::error::{Error, Result};
use crate::membership::{Cluster, Roster};
use crate::peer::{Addresses, Call, Dest, Frame, Services, Transport};
use crate::replica::Replica;
use crate::store::{MemoryStore, Store, encode_set};
use crate::version::{Content, Context};

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Anti-entropy mode: state or operation.
    #[arg(long, value_enum, default_value_t = SimMode::State)]
    pub mode: SimMode,
    /// Keys written to every replica.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Share of the keys on which one replica drifts (0 to 1).
    #[arg(long, default_value_t = 0.01)]
    pub divergence: f64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Replicas per key.
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// antientropy.max_keys_per_round.
    #[arg(long, default_value_t = 1000)]
    pub max_keys_per_round: usize,
    /// Most rounds before giving up.
    #[arg(long, default_value_t = 1000)]
    pub max_rounds: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Operation mode: after convergence, run rounds until the logs stop
    /// shrinking (their length per round is in the report).
    #[arg(long)]
    pub drain: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimMode {
    State,
    Operation,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub keys: usize,
    pub divergence: f64,
    /// Keys on which some replica differed before the first round.
    pub differing_keys: usize,
    /// Rounds (every node one exchange) until every replica agreed.
    pub rounds: usize,
    pub converged: bool,
    /// Bytes of every anti-entropy message, both directions, all nodes.
    pub bytes: u64,
    /// `bytes` per differing key.
    pub bytes_per_differing_key: f64,
    /// Encoded size of one replica's data, for comparison.
    pub data_bytes: u64,
    /// Bytes moved in each round.
    pub bytes_per_round: Vec<u64>,
    /// Operation mode: ops held in all logs after each round (before the
    /// first: index 0), through the drain rounds with `--drain`.
    pub log_ops: Vec<usize>,
    /// Operation mode: range exchanges that fell back to state transfer.
    pub fallbacks: u64,
}

impl Report {
    pub fn table(&self) -> String {
        format!(
            "mode {}, {} keys, divergence {}: {} keys differed\n\
             converged: {} after {} rounds\n\
             bytes exchanged: {} ({:.0} per differing key; data on one replica: {} bytes)\n\
             bytes per round: {:?}\n\
             ops held in the logs after each round: {:?}; fallbacks to state: {}\n",
            self.mode,
            self.keys,
            self.divergence,
            self.differing_keys,
            self.converged,
            self.rounds,
            self.bytes,
            self.bytes_per_differing_key,
            self.data_bytes,
            self.bytes_per_round,
            self.log_ops,
            self.fallbacks,
        )
    }
}

struct Member {
    store: Arc<MemoryStore>,
    replica: Arc<Replica>,
    antientropy: Arc<AntiEntropy>,
}

/// A node's handlers of peer requests.
type Handlers = Arc<Services>;

/// Delivers a request straight to the addressed node's handlers.
#[derive(Default)]
struct Direct {
    members: OnceLock<HashMap<String, Handlers>>,
}

impl Transport for Direct {
    fn protocol_with(&self, _: &str) -> u16 {
        crate::peer::versions::PROTOCOL
    }

    fn local(&self, _: &str) -> Option<Arc<Services>> {
        // Every call goes through the receiver's dispatch, as over HTTP.
        None
    }

    fn send(&self, to: Dest<'_>, frame: Frame) -> Call<Bytes> {
        let target = self.members.get().and_then(|m| m.get(to.name())).cloned();
        let to = to.name().to_string();
        Box::pin(async move {
            let Some(services) = target else {
                return Err(Error::Unavailable {
                    node: to,
                    reason: "not in the simulation".into(),
                });
            };
            crate::peer::dispatch(&services, frame.service, frame.version, false, frame.body)?.await
        })
    }
}

fn config(options: &Options) -> Config {
    let mut config = Config::dev(options.nodes, 1, std::path::Path::new("unused"));
    config.cluster.n = options.n.min(options.nodes);
    config.cluster.r = 1;
    config.cluster.w = 1;
    config.storage.engine = Engine::Memory;
    config.antientropy.mode = match options.mode {
        SimMode::State => AntiEntropyMode::State,
        SimMode::Operation => AntiEntropyMode::Operation,
    };
    config.antientropy.max_log_ops = 1_000_000;
    config.antientropy.max_buffered_ops = 1_000_000;
    config.antientropy.max_keys_per_round = options.max_keys_per_round;
    config
}

fn start(config: &Config, seed: u64) -> Result<Vec<Member>> {
    let transport = Arc::new(Direct::default());
    let members = Roster::load(config, None)?;
    let mut out = Vec::new();
    for (i, node) in config.nodes.iter().enumerate() {
        let store = Arc::new(MemoryStore::new());
        let identity = crate::store::Identity::ephemeral(&node.id);
        let replica = Arc::new(Replica::new(
            store.clone(),
            Arc::new(identity),
            &config.limits,
            false,
            crate::clock::Clock::system(),
        ));
        let cluster = Cluster::new(
            &node.id,
            config,
            members.clone(),
            transport.clone(),
            Addresses::default(),
            None,
            Some(seed.wrapping_add(i as u64)),
            crate::clock::Clock::system(),
        );
        let antientropy = AntiEntropy::new(
            cluster,
            store.clone(),
            Arc::clone(&replica),
            config.antientropy.clone(),
        );
        antientropy.refresh_ranges();
        out.push(Member {
            store,
            replica,
            antientropy,
        });
    }
    let handlers = config
        .nodes
        .iter()
        .zip(&out)
        .map(|(n, m)| {
            let services = Services::new();
            m.replica.serve(&services);
            m.antientropy.serve(&services);
            (n.id.clone(), services)
        })
        .collect();
    let _ = transport.members.set(handlers);
    Ok(out)
}

/// Writes the keys, lets one replica of a share of them drift, and
/// returns how many keys differ.
async fn load(options: &Options, config: &Config, members: &[Member]) -> Result<usize> {
    let ring = Roster::load(config, None)?.ring();
    let index: HashMap<&str, usize> = config
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let mut differing = 0;
    for i in 0..options.keys {
        let key = format!("key-{i}");
        let replicas: Vec<usize> = ring
            .preference_list(crate::ring::position(key.as_bytes()), config.cluster.n)
            .into_iter()
            .filter_map(|id| index.get(id).copied())
            .collect();
        let value = Content::Value(value_of(i, options.value_bytes));
        let drifts = rng.random_bool(options.divergence.clamp(0.0, 1.0));
        let odd = replicas[rng.random_range(0..replicas.len())];
        let skip = drifts && rng.random_bool(0.5);
        let coordinator = if skip && odd == replicas[0] {
            replicas[1 % replicas.len()]
        } else {
            replicas[0]
        };
        let crate::replica::Minted { set, durable, .. } = members[coordinator]
            .replica
            .coordinate(key.clone(), Context::default(), value, None)
            .await?;
        durable.wait().await?;
        for &r in &replicas {
            if r == coordinator || (skip && r == odd) {
                continue;
            }
            let merge = vec![(key.clone(), set.clone())];
            members[r].replica.handoff(merge).await?;
        }
        if drifts && !skip {
            let extra = Content::Value(Bytes::from_static(b"\"drift\""));
            members[odd]
                .replica
                .coordinate(key.clone(), Context::default(), extra, None)
                .await?
                .durable
                .wait()
                .await?;
        }
        differing += usize::from(drifts && replicas.len() > 1);
    }
    Ok(differing)
}

/// A JSON string of `len` bytes (at least its number) naming key `i`.
fn value_of(i: usize, len: usize) -> Bytes {
    let digits = format!("\"{i}");
    let pad = len.saturating_sub(digits.len() + 1);
    Bytes::from(format!("{digits}{}\"", "x".repeat(pad)))
}

/// Whether every key is held alike by every replica that holds any.
fn agree(config: &Config, members: &[Member]) -> Result<bool> {
    let ring = Roster::load(config, None)?.ring();
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    for (node, member) in config.nodes.iter().zip(members) {
        for (key, set) in member.store.scan(0..=u64::MAX, usize::MAX)? {
            let replicas =
                ring.preference_list(crate::ring::position(key.as_bytes()), config.cluster.n);
            if !replicas.contains(&node.id.as_str()) {
                continue;
            }
            let encoded = encode_set(&set)?;
            match seen.get(&key) {
                Some(other) if *other != encoded => return Ok(false),
                Some(_) => {}
                None => {
                    seen.insert(key, encoded);
                }
            }
        }
    }
    // A key some replica lacks entirely also differs.
    let held: usize = members.iter().map(|m| m.store.stats().keys as usize).sum();
    Ok(held == seen.len() * config.cluster.n)
}

pub async fn run(options: &Options) -> Result<Report> {
    let config = config(options);
    let members = start(&config, options.seed)?;
    // Rounds on the empty cluster until no new log owes its fellows the
    // state exchange it starts with, so that what follows measures the ops.
    for _ in 0..100 {
        if !members.iter().any(|m| m.antientropy.owes_state()) {
            break;
        }
        for member in &members {
            member.antientropy.step().await;
        }
    }
    let differing_keys = load(options, &config, &members).await?;
    let data_bytes = members[0]
        .store
        .scan(0..=u64::MAX, usize::MAX)?
        .iter()
        .map(|(k, s)| encode_set(s).map(|b| (b.len() + k.len()) as u64))
        .sum::<Result<u64>>()?;
    let mut bytes_per_round = Vec::new();
    let log_size = |members: &[Member]| -> usize {
        members
            .iter()
            .filter_map(|m| m.antientropy.log_sizes())
            .map(|(held, _)| held)
            .sum()
    };
    let mut log_ops = vec![log_size(&members)];
    let mut fallbacks = 0;
    let mut converged = agree(&config, &members)?;
    while !converged && bytes_per_round.len() < options.max_rounds {
        let mut bytes = 0;
        for member in &members {
            let outcome = member.antientropy.step().await;
            if let Some(e) = outcome.error {
                return Err(e);
            }
            bytes += outcome.sent + outcome.received;
            fallbacks += outcome.fallbacks;
        }
        bytes_per_round.push(bytes);
        log_ops.push(log_size(&members));
        converged = agree(&config, &members)?;
    }
    let bytes: u64 = bytes_per_round.iter().sum();
    // Operation mode: rounds go on until the logs stop shrinking, to show
    // how long ops are kept once every replica agrees.
    if options.drain && options.mode == SimMode::Operation {
        let mut still = 0;
        while still < 5 && log_ops.len() < options.max_rounds {
            let mut moved = 0;
            for member in &members {
                moved += member.antientropy.step().await.repaired;
            }
            let now = log_size(&members);
            let shrank = Some(&now) < log_ops.last();
            still = if shrank || moved > 0 { 0 } else { still + 1 };
            log_ops.push(now);
        }
    }
    Ok(Report {
        mode: match options.mode {
            SimMode::State => "state",
            SimMode::Operation => "operation",
        },
        keys: options.keys,
        divergence: options.divergence,
        differing_keys,
        rounds: bytes_per_round.len(),
        converged,
        bytes,
        bytes_per_differing_key: bytes as f64 / differing_keys.max(1) as f64,
        data_bytes,
        bytes_per_round,
        log_ops,
        fallbacks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(keys: usize, divergence: f64) -> Options {
        Options {
            mode: SimMode::State,
            keys,
            divergence,
            nodes: 3,
            n: 3,
            value_bytes: 100,
            max_keys_per_round: 1000,
            max_rounds: 100,
            seed: 7,
            drain: false,
            json: false,
        }
    }

    #[tokio::test]
    async fn bytes_grow_with_the_differing_keys_not_with_the_data() {
        let small = run(&options(2_000, 0.01)).await.expect("small");
        let large = run(&options(20_000, 0.001)).await.expect("large");
        let more = run(&options(20_000, 0.01)).await.expect("more");
        for r in [&small, &large, &more] {
            assert!(r.converged, "{r:?}");
            assert!(r.differing_keys > 0);
        }
        // Ten times the data, about as many differing keys: bytes per
        // differing key stay within a small factor.
        let per_key = |r: &Report| r.bytes_per_differing_key;
        assert!(
            per_key(&large) < 3.0 * per_key(&small),
            "{} vs {} bytes per differing key",
            per_key(&large),
            per_key(&small)
        );
        // Ten times the differing keys on the same data: bytes grow with them.
        assert!(
            more.bytes > 4 * large.bytes,
            "{} vs {}",
            more.bytes,
            large.bytes
        );
        // And stay far below the data itself.
        assert!(more.bytes * 4 < more.data_bytes, "{more:?}");
    }
}

#[cfg(test)]
mod operation_tests {
    use super::*;

    #[tokio::test]
    async fn operation_transfer_repairs_by_ops_and_empties_its_logs() {
        let options = Options {
            mode: SimMode::Operation,
            keys: 3_000,
            divergence: 0.05,
            nodes: 3,
            n: 3,
            value_bytes: 100,
            max_keys_per_round: 1000,
            max_rounds: 200,
            seed: 3,
            drain: true,
            json: false,
        };
        let report = run(&options).await.expect("run");
        assert!(report.converged, "{report:?}");
        assert!(report.differing_keys > 100);
        assert_eq!(report.fallbacks, 0, "the ops alone repaired every replica");
        // Every write became an op, and once every replica had applied an
        // op, it was dropped from every log.
        let peak = report.log_ops.iter().copied().max().unwrap_or(0);
        assert!(peak >= options.keys, "{peak} ops held at most");
        let last = report.log_ops.last().copied().unwrap_or(usize::MAX);
        assert!(
            last < peak / 10,
            "{last} ops still held after convergence (peak {peak})"
        );
    }
}
