//! A graceful leave: hand every range to its new owners, verify, then go.
//!
//! 1. Mark this node `leaving` and tell every member: placement stops
//!    choosing it, so new writes go to the new owners at once.
//! 2. Hand off every key it holds (each range to all its new replicas,
//!    verified, then dropped) until the store is empty. Writes a stale
//!    coordinator still sends here are caught by the next pass.
//! 3. Refuse writes, then one last pass: whatever landed before the refusal
//!    is handed off too, and nothing can land after it.
//! 4. Mark this node `removed`, tell every member, tell the Chord
//!    neighbours, and report done; the node then shuts down.
//!
//! A pass that fails (a new owner unreachable) is retried until
//! `deadline`; after that the node stays `leaving`, keeps its data and
//! serves on, and the leave can be asked for again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Cluster;
use super::handoff::{plan, sweep};
use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::ring::Status;
use crate::store::Store;

pub async fn leave(
    cluster: &Cluster,
    store: &Arc<dyn Store>,
    replica: &Replica,
    batch: usize,
    deadline: Duration,
) -> Result<()> {
    let started = Instant::now();
    let me = cluster.me().to_string();
    if cluster.routes().ring().owners().len() <= 1
        && cluster.routes().ring().owners().iter().any(|o| o.id == me)
    {
        return Err(Error::Membership(
            "this is the ring's only owner; there is nobody to hand its data to".into(),
        ));
    }
    cluster.set_status(&me, Status::Leaving)?;
    let hand_off_everything = async || -> Result<()> {
        loop {
            let transfers = plan(None, &cluster.routes().ring(), &me, cluster.n());
            let outcome = sweep(cluster, store, replica, &transfers, batch).await;
            match outcome {
                Ok(_) if store.scan(0..=u64::MAX, 1)?.is_empty() => return Ok(()),
                Ok(_) => {}
                Err(e) if started.elapsed() > deadline => return Err(e),
                Err(e) => tracing::warn!(error = %e, "leave: handoff pass failed; retrying"),
            }
            if started.elapsed() > deadline {
                return Err(Error::Membership(format!(
                    "keys were still arriving after {deadline:?}; the node stays leaving"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    hand_off_everything().await?;
    replica.close_for_writes();
    hand_off_everything().await?;
    cluster.set_status(&me, Status::Removed)?;
    cluster.push_to_all_and_wait().await;
    cluster.depart().await;
    tracing::info!(node = %me, "left the ring");
    Ok(())
}
