//! One chorus node: builds the parts from the config, serves, shuts down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, Api};
use crate::config::{Config, Engine};
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::peer::LocalTransport;
use crate::replica::Replica;
use crate::store::{FjallStore, Identity, MemoryStore, Store};
use crate::version::context::cluster_fingerprint;

/// A running node. Dropping it without [`Node::shutdown`] aborts its tasks.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    upkeep: JoinHandle<()>,
}

impl Node {
    /// Opens the node's store and starts serving on its `listen` address
    /// (port 0 picks a free port; see [`Node::addr`]).
    pub async fn start(config: &Config, id: &str) -> Result<Node> {
        config.validate()?;
        let me = config.node(id)?;
        let (store, identity): (Arc<dyn Store>, _) = match config.storage.engine {
            Engine::Fjall => (
                Arc::new(FjallStore::open(&me.data_dir, &config.storage)?),
                Identity::load(&me.data_dir, id)?,
            ),
            Engine::Memory => (Arc::new(MemoryStore::new()), Identity::ephemeral(id)),
        };
        let replica = Arc::new(Replica::new(Arc::clone(&store), identity, &config.limits));
        let transport = Arc::new(LocalTransport::new(id, replica));
        let metrics = crate::metrics::install();
        let api = Arc::new(Api {
            node: id.to_string(),
            coordinator: Coordinator::new(id, transport),
            limits: config.limits.clone(),
            fingerprint: cluster_fingerprint(&config.cluster.name),
            metrics: metrics.clone(),
            store,
        });
        let listener = TcpListener::bind(&me.listen).await.map_err(|e| {
            Error::config(
                format!("nodes.{id}.listen"),
                format!("cannot bind {}: {e}", me.listen),
            )
        })?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = watch::channel(false);
        let server = tokio::spawn(api::serve(listener, api, stopped, Duration::from_secs(10)));
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        tracing::info!(node = id, %addr, "serving");
        Ok(Node {
            id: id.to_string(),
            addr,
            shutdown,
            server: Some(server),
            upkeep,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open requests finish, syncs and closes the store.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.upkeep.abort();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        tracing::info!(node = %self.id, "stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.upkeep.abort();
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}
