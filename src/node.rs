//! One chorus node: builds the parts from the config, serves, shuts down.
//!
//! Start-up: open the store, bind the listener, build the peer transport,
//! find the members (saved in `data_dir/members.json`, else the config's
//! initial nodes, else, with `--join`, from the seed that admits this
//! node), then serve and run the background tasks: Chord maintenance every
//! `ring.stabilize_ms`, members and heartbeat gossip every `ring.gossip_ms`, ownership
//! handoff after every change and every `ring.handoff_interval_ms`,
//! anti-entropy every `antientropy.interval_ms`, and metrics upkeep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::antientropy::AntiEntropy;
use crate::api::{self, Api, LeaveState};
use crate::clock::Clock;
use crate::config::{Config, Engine};
use crate::coordinator::Coordinator;
use crate::coordinator::quorum::Quorum;
use crate::error::{Error, Result};
use crate::membership::rpc::Join;
use crate::membership::{Cluster, Roster, handoff};
use crate::net::{Listener, Network, Tcp};
use crate::peer::{Addresses, HttpTransport, Services, Transport, Versions, versions};
use crate::replica::Replica;
use crate::ring::{Members, Status};
use crate::security::peer::{Signer, Verifier};
use crate::security::tls::Tls;
use crate::security::tokens::Tokens;
use crate::store::{FjallStore, Identity, MemoryStore, Store};
use crate::version::context::Seal;

/// How a node starts, beyond its config.
pub struct Start<N: Network = Tcp> {
    /// Join a running ring through the node at this `host:port`.
    pub join: Option<String>,
    /// Serve on this listener instead of binding `listen` (tests bind
    /// port 0 first to know every address before any node starts).
    pub listener: Option<N::Listener>,
    /// The network: TCP, or the simulation's.
    pub network: N,
    /// Run on this store and identity instead of the configured engine's
    /// (the simulation keeps a crashed node's data across its restart).
    pub storage: Option<Storage>,
    /// Seeds the node's random choices (gossip and anti-entropy peers);
    /// `None` seeds from the OS. The simulation replays from its seed.
    pub seed: Option<u64>,
    /// The node's wall clock; `None`: the system's.
    pub clock: Option<Clock>,
    /// The members document the node saved in an earlier life, where no
    /// `data_dir/members.json` keeps it (the simulation keeps it per
    /// machine).
    pub members: Option<Members>,
}

impl Default for Start<Tcp> {
    fn default() -> Self {
        Start {
            join: None,
            listener: None,
            network: Tcp,
            storage: None,
            seed: None,
            clock: None,
            members: None,
        }
    }
}

/// A store and the identity that mints dots into it.
#[derive(Clone)]
pub struct Storage {
    pub store: Arc<dyn Store>,
    pub identity: Arc<Identity>,
}

/// A running node. Dropping it without [`Node::shutdown`] aborts its tasks.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    /// `https` when the node has `[security.tls]`, else `http`.
    scheme: &'static str,
    cluster: Arc<Cluster>,
    store: Arc<dyn Store>,
    antientropy: Arc<AntiEntropy>,
    shutdown: watch::Sender<bool>,
    left: watch::Receiver<bool>,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    undeclared: Arc<api::Undeclared>,
}

impl Node {
    /// Opens the node's store and starts serving on its `listen` address
    /// (port 0 picks a free port; see [`Node::addr`]).
    pub async fn start(config: &Config, id: &str) -> Result<Node> {
        Node::start_with(config, id, Start::default()).await
    }

    pub async fn start_with<N: Network>(
        config: &Config,
        id: &str,
        start: Start<N>,
    ) -> Result<Node> {
        config.validate()?;
        let me = config.node(id)?;
        let secret = config.security.secret()?;
        let listen: SocketAddr = me
            .listen
            .parse()
            .map_err(|e| Error::config(format!("nodes.{id}.listen"), format!("{e}")))?;
        for warning in config.security.check_exposure(listen, secret.as_deref())? {
            tracing::warn!(node = id, "{warning}");
        }
        let tls = config.security.tls.as_ref().map(Tls::load).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tokens = config.security.token_texts()?;
        let tokens = Tokens::new(
            tokens
                .iter()
                .map(|(name, token, scopes)| (name.as_str(), token.as_str(), scopes.as_slice())),
        );
        let clock = start.clock.unwrap_or_else(Clock::system);
        let (store, identity, dir): (Arc<dyn Store>, _, _) =
            match (start.storage, config.storage.engine) {
                (Some(Storage { store, identity }), _) => (store, identity, None),
                (None, Engine::Fjall) => (
                    Arc::new(FjallStore::open(&me.data_dir, &config.storage)?),
                    Arc::new(Identity::load(&me.data_dir, id, clock.now_ms())?),
                    Some(me.data_dir.clone()),
                ),
                (None, Engine::Memory) => (
                    Arc::new(MemoryStore::new()),
                    Arc::new(Identity::ephemeral(id)),
                    None,
                ),
            };
        let listener = match start.listener {
            Some(listener) => listener,
            None => start.network.bind(&me.listen).await.map_err(|e| {
                Error::config(
                    format!("nodes.{id}.listen"),
                    format!("cannot bind {}: {e}", me.listen),
                )
            })?,
        };
        let addr = listener.local_addr()?;
        let advertised = if me.listen.ends_with(":0") {
            addr.to_string()
        } else {
            me.listen.clone()
        };

        if let Some(problem) = tls
            .as_ref()
            .and_then(|t| t.own_certificate_problem(host(&advertised)))
        {
            tracing::warn!(node = id, "{problem}");
        }

        let durable = config.storage.fsyncs_each_write();
        // This life's generations outrank the last life's, whatever the
        // clock says now.
        clock.raise_generation_floor(identity.generation_floor());
        let replica = Arc::new(Replica::new(
            Arc::clone(&store),
            identity,
            &config.limits,
            durable,
            clock.clone(),
        ));
        let addresses = Addresses::default();
        let versions = Arc::new(Versions::new(versions::configured(
            config.cluster.protocol,
        )?));
        let services = Services::speaking(versions.mine());
        let max_peer_message = config.limits.max_peer_message();
        let peer_timeout = Duration::from_millis(config.ring.peer_timeout_ms);
        let peer_tls = match &tls {
            Some(tls) => tls.client.clone(),
            None => crate::security::tls::client_config(rustls::RootCertStore::empty()),
        };
        let connector = start
            .network
            .connector(crate::peer::connect_timeout(peer_timeout));
        let transport: Arc<dyn Transport> = Arc::new(HttpTransport::new(
            crate::security::tls::connector(connector.clone(), peer_tls.clone(), true),
            crate::peer::stream::dialer(crate::security::tls::connector(
                connector, peer_tls, false,
            )),
            scheme,
            id,
            Arc::downgrade(&services),
            Arc::clone(&addresses),
            peer_timeout,
            max_peer_message,
            secret
                .as_deref()
                .map(|s| Arc::new(Signer::new(s, id, clock.generation(), clock.clone()))),
            Arc::clone(&versions),
        ));
        let members_file = dir.as_ref().map(|d| d.join("members.json"));
        let saved = match start.members {
            Some(members) => Some(members),
            None => match &members_file {
                Some(file) if file.exists() => Some(Roster::load(config, Some(file))?),
                _ => None,
            },
        };
        // With --join, a node always asks the seed to admit it: a new node,
        // one that left or was removed and comes back under its id (even
        // if what it saved before it died still says it is a member), and
        // a member restarting (admitted unchanged). What it saved merges in
        // (the newer entry wins). Only when the seed cannot answer or
        // refuses does a node that saved a document start from it.
        let members = match (&start.join, saved) {
            (Some(seed), saved) => {
                let zone = me.zone.clone();
                match join(&*transport, seed, id, &advertised, zone, me.weight).await {
                    Ok(mut members) => {
                        if let Some(saved) = &saved {
                            members.merge(saved);
                        }
                        members
                    }
                    Err(e) => match saved {
                        Some(saved) => {
                            tracing::warn!(node = id, error = %e, "could not join; starting from the saved members document");
                            saved
                        }
                        None => return Err(e),
                    },
                }
            }
            (None, Some(saved)) => saved,
            (None, None) => Roster::load(config, None)?,
        };
        if members.get(id).is_none() {
            return Err(Error::config(
                "--join",
                format!(
                    "node `{id}` is not a member of the ring (initial = false?); start it with --join ADDR of a running node"
                ),
            ));
        }
        let cluster = Cluster::new(
            id,
            config,
            members,
            Arc::clone(&transport),
            addresses,
            members_file,
            start.seed,
            clock.clone(),
        );
        cluster.roster().save()?;
        if cluster
            .roster()
            .members()
            .get(id)
            .is_some_and(|m| m.status != Status::Removed)
        {
            cluster.set_own_addr(&advertised)?;
        }

        let antientropy = AntiEntropy::new(
            Arc::clone(&cluster),
            Arc::clone(&store),
            Arc::clone(&replica),
            config.antientropy.clone(),
        );
        let coordinator = Arc::new(Coordinator::new(
            Arc::clone(&cluster),
            Arc::clone(&replica),
            Duration::from_millis(config.cluster.speculative_read_ms),
        ));
        let watch = crate::watch::WatchService::new(Arc::clone(&cluster), &config.limits);
        replica.events().subscribe(watch.clone());
        watch.serve(&services);
        let feed = crate::feed::FeedService::new(
            Arc::clone(&store),
            Arc::clone(&cluster),
            &config.changes,
        );
        replica.events().subscribe(feed.clone());
        feed.serve(&services);
        replica.serve(&services);
        coordinator.serve(&services);
        cluster.serve(&services);
        antientropy.serve(&services);
        let metrics = crate::metrics::install();
        let (left_tx, left) = watch::channel(false);
        let (shutdown, stopped) = watch::channel(false);
        let undeclared = Arc::new(api::Undeclared::default());
        let api = Arc::new(Api {
            node: id.to_string(),
            coordinator,
            quorum: Quorum::defaults(&config.cluster),
            timeout_ms: config.cluster.timeout_ms,
            cluster: Arc::clone(&cluster),
            replica: Arc::clone(&replica),
            antientropy: Arc::clone(&antientropy),
            watch: Arc::clone(&watch),
            feed: Arc::clone(&feed),
            limits: config.limits.clone(),
            seal: Seal::new(&config.cluster.name, secret.as_deref()),
            metrics: metrics.clone(),
            store: Arc::clone(&store),
            max_peer_message,
            services,
            handoff_batch: config.ring.handoff_batch,
            leave: Arc::new(parking_lot::Mutex::new(LeaveState::Serving)),
            left: left_tx,
            peer_auth: Verifier::new(
                id,
                secret.as_deref(),
                config.security.peer_clock_skew_ms,
                clock.clone(),
            ),
            tokens,
            open_routes: config.security.open_routes.clone(),
            inflight: tokio::sync::Semaphore::new(config.limits.max_inflight),
            versions,
            peer_inflight: tokio::sync::Semaphore::new(config.limits.max_peer_inflight),
            peer_bytes: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_peer_inflight_bytes as usize,
            )),
            peer_streams: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            peer_timeout,
            stopped: stopped.clone(),
            undeclared: Arc::clone(&undeclared),
        });
        let server = tokio::spawn(api::serve(
            listener,
            api,
            tls.map(|t| t.acceptor),
            stopped,
            Duration::from_secs(10),
        ));

        let ring = &config.ring;
        let mut tasks = Vec::new();
        let c = Arc::clone(&cluster);
        tasks.push(every(Duration::from_millis(ring.stabilize_ms), move || {
            let c = Arc::clone(&c);
            async move { c.chord_tick().await }
        }));
        let c = Arc::clone(&cluster);
        tasks.push(every(Duration::from_millis(ring.gossip_ms), move || {
            let c = Arc::clone(&c);
            async move {
                c.gossip_once().await;
                c.beat_once().await;
            }
        }));
        tasks.push(tokio::spawn(handoff::run(
            Arc::clone(&cluster),
            Arc::clone(&store),
            Arc::clone(&replica),
            Duration::from_millis(ring.handoff_interval_ms),
            ring.handoff_batch,
            dir.map(|d| d.join("handoff.json")),
        )));
        tasks.push(tokio::spawn(Arc::clone(&antientropy).run()));
        tasks.push(tokio::spawn(watch.run()));
        tasks.push(tokio::spawn(feed.run()));
        tasks.push(every(Duration::from_secs(5), move || {
            metrics.run_upkeep();
            std::future::ready(())
        }));
        tracing::info!(node = id, %addr, "serving");
        Ok(Node {
            id: id.to_string(),
            addr,
            scheme,
            cluster,
            store,
            antientropy,
            shutdown,
            left,
            server: Some(server),
            tasks,
            undeclared,
        })
    }

    /// This node's view of the ring (for tests and tools in process).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// This node's local store (for tests and tools in process).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This node's anti-entropy service (for tests and tools in process).
    /// The answers this node gave whose status their route does not
    /// declare (`api::ROUTES`, docs/openapi.yaml): none, while the contract
    /// holds.
    pub fn undeclared(&self) -> &Arc<api::Undeclared> {
        &self.undeclared
    }

    pub fn antientropy(&self) -> &Arc<AntiEntropy> {
        &self.antientropy
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Resolves once this node has left the ring gracefully (it should then stop).
    pub async fn left(&self) {
        let mut left = self.left.clone();
        let _ = left.wait_for(|l| *l).await;
    }

    /// Stops accepting, lets open requests finish, syncs and closes the store.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        tracing::info!(node = %self.id, "stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// Asks the node at `seed` to admit this one; retries while it starts up.
async fn join(
    transport: &dyn Transport,
    seed: &str,
    id: &str,
    addr: &str,
    zone: Option<String>,
    weight: u32,
) -> Result<Members> {
    let mut last = None;
    for _ in 0..20 {
        let request = Join {
            id: id.to_string(),
            addr: addr.to_string(),
            zone: zone.clone(),
            weight,
        };
        match transport.rpc_addr(seed, request).await {
            Ok(members) => {
                members.check()?;
                tracing::info!(node = id, %seed, "joined the ring");
                return Ok(members);
            }
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::config(
        "--join",
        format!(
            "could not join through {seed}: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

/// Runs `work` every `period`, one run at a time, until aborted.
/// The host of a `host:port` address, IPv6 brackets removed: the name a
/// peer dialling it checks this node's certificate against.
fn host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn every<F, Fut>(period: Duration, mut work: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work().await;
        }
    })
}
