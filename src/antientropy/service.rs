//! One node's anti-entropy: its trees, its answers to peers, its rounds.

use std::sync::Arc;
use std::time::Duration;

use super::exchange::{self, Outcome};
use super::operation::OpLogs;
use super::parts::Parts;
use super::rpc;
use super::trees::Trees;
use crate::config::{AntiEntropyConfig, AntiEntropyMode};
use crate::error::{Error, Result};
use crate::membership::Cluster;
use crate::metrics as m;
use crate::peer::{Rpc, Services};
use crate::replica::Replica;
use crate::ring::Position;
use crate::store::Store;

/// Keys a tree build scans per step: the observer waits at most that long.
const BUILD_CHUNK: usize = 256;

/// A node's anti-entropy service: a cheap handle, shared by the API (which
/// answers peers with it) and the background task ([`AntiEntropy::run`]).
pub struct AntiEntropy {
    parts: Parts,
    stats: parking_lot::Mutex<Stats>,
}

/// This node's rounds so far, for tests and tools in process (the metrics
/// are process-wide, and tests run several nodes in one process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rounds: u64,
    pub in_sync: u64,
    pub differing: u64,
    /// Keys (state) or ops (operation) that changed this node's data or a
    /// peer's.
    pub repaired: u64,
    /// Rounds that found keys differing.
    pub differing_rounds: u64,
    /// Operation mode: range exchanges that fell back to state transfer.
    pub fallbacks: u64,
    /// Deletes this node purged as their primary.
    pub purged: u64,
    /// Operation mode: ops received and applied.
    pub ops_applied: u64,
    /// Keys (or data-changing ops) the last round found differing.
    pub last_round_differing: u64,
}

impl AntiEntropy {
    /// Makes the service and, unless the mode is off, has the store tell
    /// its trees of every write from now on.
    pub fn new(
        cluster: Arc<Cluster>,
        store: Arc<dyn Store>,
        replica: Arc<Replica>,
        config: AntiEntropyConfig,
    ) -> Arc<AntiEntropy> {
        let trees = Arc::new(Trees::new());
        if config.mode != AntiEntropyMode::Off {
            store.observe(trees.clone());
        }
        let oplogs = (config.mode == AntiEntropyMode::Operation).then(|| {
            let logs = Arc::new(OpLogs::new(
                cluster.me(),
                // The origin's generation: this process's start.
                cluster.clock().generation(),
                config.max_log_ops,
                config.max_buffered_ops,
            ));
            replica.events().subscribe(logs.clone());
            logs
        });
        Arc::new(AntiEntropy {
            parts: Parts {
                cluster,
                store,
                replica,
                trees,
                config,
                oplogs,
            },
            stats: parking_lot::Mutex::default(),
        })
    }

    pub(super) fn mode(&self) -> &'static str {
        match self.parts.config.mode {
            AntiEntropyMode::State => "state",
            AntiEntropyMode::Operation => "operation",
            AntiEntropyMode::Off => "off",
        }
    }

    /// Registers anti-entropy's handlers in `services`.
    pub fn serve(self: &Arc<Self>, services: &Services) {
        self.answer(services, rpc::roots);
        self.answer(services, rpc::children);
        self.answer(services, rpc::leaves);
        self.answer(services, rpc::ops);
    }

    /// Answers `R` from this node's parts.
    fn answer<R: Rpc>(self: &Arc<Self>, services: &Services, f: fn(&Parts, R) -> Result<R::Reply>) {
        let ae = Arc::clone(self);
        services.register_now(move |request: R| f(&ae.parts, request));
    }

    /// The op logs' sizes (ops held, ops buffered), in operation mode.
    pub fn log_sizes(&self) -> Option<(usize, usize)> {
        self.parts.oplogs.as_ref().map(|l| l.sizes())
    }

    /// Operation mode: whether some range's log still owes a fellow replica
    /// the state exchange a new log starts with.
    pub fn owes_state(&self) -> bool {
        self.parts.oplogs.as_ref().is_some_and(|l| l.owes_any())
    }

    /// How far this node's replicas are from agreeing, as it knows: in
    /// state mode, the keys its last round found differing; in operation
    /// mode, the ops its logs hold that some replica still lacks, plus
    /// those buffered.
    pub fn lag(&self) -> u64 {
        match self.log_sizes() {
            Some((held, buffered)) => (held + buffered) as u64,
            None => self.stats().last_round_differing,
        }
    }

    /// The configured mode, as its config name.
    pub fn mode_name(&self) -> &'static str {
        self.mode()
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock()
    }

    /// Drops every tree, to be built again from the store before the next
    /// round; returns how many (none when the mode is off).
    pub fn rebuild(&self) -> usize {
        let trees = self.parts.trees.rebuild();
        metrics::counter!(m::ANTIENTROPY_TREE_BUILDS_TOTAL).increment(trees as u64);
        trees
    }

    /// Keeps the trees matching the ring, builds them, and runs a round
    /// with one peer every `interval_ms` (longer when `rate_bytes_per_sec`
    /// asks for it), until aborted.
    pub async fn run(self: Arc<Self>) {
        if self.parts.config.mode == AntiEntropyMode::Off {
            return;
        }
        let interval = Duration::from_millis(self.parts.config.interval_ms);
        let purge_every = Duration::from_millis(self.parts.config.purge_interval_ms);
        let mut changes = self.parts.cluster.roster().subscribe();
        self.refresh_ranges();
        let (mut purged_at, mut cursor) = (tokio::time::Instant::now(), 0);
        loop {
            if changes.has_changed().unwrap_or(false) {
                changes.borrow_and_update();
                self.refresh_ranges();
            }
            let outcome = self.step().await;
            if !purge_every.is_zero() && purged_at.elapsed() >= purge_every {
                purged_at = tokio::time::Instant::now();
                self.purge(&mut cursor).await;
            }
            tokio::time::sleep(self.pause_after(&outcome).max(interval)).await;
        }
    }

    /// Builds what trees are incomplete, then runs and records one round.
    pub async fn step(&self) -> Outcome {
        self.build().await;
        let outcome = exchange::round(&self.parts, self.stats().rounds).await;
        self.record(&outcome);
        outcome
    }

    /// One purge round (see [`super::purge`]), counted.
    pub async fn purge(&self, cursor: &mut Position) -> u64 {
        match super::purge::round(&self.parts, cursor).await {
            Ok(purged) => {
                self.stats.lock().purged += purged;
                metrics::counter!(m::TOMBSTONES_PURGED_TOTAL).increment(purged);
                purged
            }
            Err(e) => {
                tracing::debug!(error = %e, "tombstone purge round stopped");
                0
            }
        }
    }

    /// Sets the trees to the ranges this node now replicates.
    pub fn refresh_ranges(&self) {
        let me = self.parts.cluster.me();
        let mine = self
            .parts
            .cluster
            .routes()
            .ring()
            .ranges(self.parts.cluster.n())
            .into_iter()
            .filter(|r| r.replicas.iter().any(|id| id == me))
            .collect::<Vec<_>>();
        if let Some(logs) = &self.parts.oplogs {
            logs.set_ranges(&mine);
        }
        let to_build = self.parts.trees.set_ranges(mine);
        metrics::counter!(m::ANTIENTROPY_TREE_BUILDS_TOTAL).increment(to_build as u64);
    }

    /// Builds every incomplete tree from the store, off the async threads
    /// of a multi-threaded runtime. A single-threaded runtime (the
    /// simulation's, whose time only its own steps advance) builds in place,
    /// yielding between steps, so the build takes no wall-clock time that
    /// the simulation cannot replay.
    async fn build(&self) {
        let (trees, store) = (Arc::clone(&self.parts.trees), Arc::clone(&self.parts.store));
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        let built = if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
            loop {
                match trees.build_step(&*store, BUILD_CHUNK) {
                    Ok(true) => tokio::task::yield_now().await,
                    Ok(false) => break Ok(Ok(())),
                    Err(e) => break Ok(Err(e)),
                }
            }
        } else {
            tokio::task::spawn_blocking(move || {
                while trees.build_step(&*store, BUILD_CHUNK)? {}
                Ok::<_, Error>(())
            })
            .await
        };
        match built {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "building Merkle trees failed; retrying"),
            Err(e) => tracing::warn!(error = %e, "the Merkle tree build stopped"),
        }
    }

    /// Counts a round in the stats and the metrics.
    fn record(&self, outcome: &Outcome) {
        {
            let mut stats = self.stats.lock();
            stats.rounds += 1;
            stats.in_sync += u64::from(outcome.result == "in_sync");
            stats.differing += outcome.differing;
            stats.repaired += outcome.repaired;
            stats.fallbacks += outcome.fallbacks;
            stats.ops_applied += outcome.ops_applied;
            stats.last_round_differing = outcome.differing;
            stats.differing_rounds += u64::from(outcome.differing > 0);
        }
        let mode = self.mode();
        metrics::counter!(m::ANTIENTROPY_ROUNDS_TOTAL, "mode" => mode, "result" => outcome.result)
            .increment(1);
        metrics::counter!(m::ANTIENTROPY_DIFFERING_KEYS_TOTAL, "mode" => mode)
            .increment(outcome.differing);
        metrics::counter!(m::ANTIENTROPY_KEYS_REPAIRED_TOTAL, "mode" => mode)
            .increment(outcome.repaired);
        for (direction, bytes) in [("sent", outcome.sent), ("received", outcome.received)] {
            metrics::counter!(m::ANTIENTROPY_BYTES_TOTAL, "mode" => mode, "direction" => direction)
                .increment(bytes);
        }
        if let Some(e) = &outcome.error {
            tracing::debug!(peer = ?outcome.peer, error = %e, "anti-entropy round failed");
        }
    }

    /// The pause the rate cap asks for after a round.
    fn pause_after(&self, outcome: &Outcome) -> Duration {
        match self.parts.config.rate_bytes_per_sec {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64((outcome.sent + outcome.received) as f64 / rate as f64),
        }
    }
}
