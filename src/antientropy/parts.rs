//! What anti-entropy works with: the handles a node's service owns and
//! lends to each round of [`exchange`](super::exchange) and
//! [`purge`](super::purge).
//!
//! Its own file so that the rounds depend on it and not on `service`,
//! which runs them: the arrows between the sibling files point one way
//! (service -> exchange, purge -> parts).

use std::sync::Arc;

use super::operation::OpLogs;
use super::trees::Trees;
use crate::config::AntiEntropyConfig;
use crate::membership::Cluster;
use crate::replica::Replica;
use crate::store::Store;

pub struct Parts {
    pub cluster: Arc<Cluster>,
    pub store: Arc<dyn Store>,
    pub replica: Arc<Replica>,
    pub trees: Arc<Trees>,
    pub config: AntiEntropyConfig,
    /// The op logs, in operation mode.
    pub oplogs: Option<Arc<OpLogs>>,
}
