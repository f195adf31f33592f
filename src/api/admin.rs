//! Cluster inspection and membership changes:
//!
//! - `GET /cluster`: the members (address, zone, weight, tokens, status,
//!   liveness as this node sees it) and this node's Chord state
//!   (predecessor, successor list and fingers of each of its vnodes);
//! - `POST /admin/leave`: this node leaves gracefully (202; progress in
//!   `GET /cluster` under `leave`), then shuts down;
//! - `POST /admin/remove/{node}`: takes a dead node out of the ring; its
//!   ranges pass to the next nodes, which receive the data from the other
//!   replicas;
//! - `POST /admin/antientropy/rebuild`: rebuilds this node's Merkle trees
//!   from its store (202; done before the next anti-entropy round).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::Api;
use super::response::{self, Body};
use crate::error::{Error, Result};
use crate::membership::{Liveness, leave};
use crate::ring::{Status, Vnode};

/// Where a graceful leave of this node stands.
#[derive(Clone, Debug, Default)]
pub enum LeaveState {
    #[default]
    Serving,
    Leaving,
    Failed(String),
    Left,
}

pub fn cluster(api: &Api) -> Result<Response<Body>> {
    let members = api.cluster.roster().members();
    let ring = api.cluster.routes().ring();
    let listed: Vec<Value> = members
        .iter()
        .map(|m| {
            let liveness = match api.cluster.detector().liveness(&m.id) {
                Liveness::Up => "up",
                Liveness::Down => "down",
                Liveness::Unknown => "unknown",
            };
            json!({
                "id": m.id,
                "addr": m.addr,
                "zone": m.zone,
                "weight": m.weight,
                "tokens": m.tokens.len(),
                "status": m.status,
                "version": m.version,
                // The peer protocol it answered with last; this node's own.
                "protocol": if m.id == api.node {
                    Some(api.versions.mine())
                } else {
                    api.versions.of(&m.id)
                },
                "liveness": if m.status == Status::Removed { "gone" } else { liveness },
                "ownership": ring.ownership(&m.id),
                "phi": api.cluster.detector().phi(&m.id).map(|phi| (phi * 100.0).round() / 100.0),
            })
        })
        .collect();
    let vnode =
        |v: &Vnode<String>| json!({ "position": format!("{:016x}", v.pos), "node": v.node });
    let routing: Vec<Value> = api
        .cluster
        .routes()
        .vnodes()
        .into_iter()
        .map(|(pos, pred, succs, fingers)| {
            json!({
                "position": format!("{pos:016x}"),
                "predecessor": pred.as_ref().map(vnode),
                "successors": succs.iter().map(vnode).collect::<Vec<_>>(),
                "fingers": fingers
                    .iter()
                    .map(|(i, f)| json!({ "index": i, "vnode": vnode(f) }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let leave = match &*api.leave.lock() {
        LeaveState::Serving => json!({ "state": "serving" }),
        LeaveState::Leaving => json!({ "state": "leaving" }),
        LeaveState::Failed(e) => json!({ "state": "failed", "error": e }),
        LeaveState::Left => json!({ "state": "left" }),
    };
    let stats = api.antientropy.stats();
    let (log_ops, buffered) = api.antientropy.log_sizes().unwrap_or((0, 0));
    let body = json!({
        "node": api.cluster.me(),
        "n": api.cluster.n(),
        "hints_pending": api.replica.hints_pending(),
        "antientropy": {
            "mode": api.antientropy.mode_name(),
            "lag": api.antientropy.lag(),
            "rounds": stats.rounds,
            "in_sync_rounds": stats.in_sync,
            "last_round_differing": stats.last_round_differing,
            "keys_repaired": stats.repaired,
            "log_ops": log_ops,
            "ops_buffered": buffered,
            "purged": stats.purged,
        },
        "members": listed,
        "routing": routing,
        "leave": leave,
    });
    Ok(response::json(
        StatusCode::OK,
        Bytes::from(body.to_string()),
    ))
}

pub fn leave(api: &Api) -> Result<Response<Body>> {
    {
        let mut state = api.leave.lock();
        match &*state {
            LeaveState::Leaving | LeaveState::Left => {
                let body = json!({ "node": api.cluster.me(), "state": "leaving" });
                return Ok(response::json(
                    StatusCode::ACCEPTED,
                    Bytes::from(body.to_string()),
                ));
            }
            LeaveState::Serving | LeaveState::Failed(_) => *state = LeaveState::Leaving,
        }
    }
    let (cluster, store, replica) = (
        Arc::clone(&api.cluster),
        Arc::clone(&api.store),
        Arc::clone(&api.replica),
    );
    let (state, left, batch) = (Arc::clone(&api.leave), api.left.clone(), api.handoff_batch);
    tokio::spawn(async move {
        let deadline = Duration::from_secs(600);
        let outcome = leave::leave(&cluster, &store, &replica, batch, deadline).await;
        match outcome {
            Ok(()) => {
                *state.lock() = LeaveState::Left;
                let _ = left.send(true);
            }
            Err(e) => {
                tracing::error!(error = %e, "leave failed; the node keeps serving");
                *state.lock() = LeaveState::Failed(e.to_string());
            }
        }
    });
    let body = json!({ "node": api.cluster.me(), "state": "leaving" });
    Ok(response::json(
        StatusCode::ACCEPTED,
        Bytes::from(body.to_string()),
    ))
}

pub fn remove(api: &Api, node: &str) -> Result<Response<Body>> {
    if node == api.cluster.me() {
        return Err(Error::Membership(
            "a node cannot remove itself; use POST /admin/leave (chorus leave)".into(),
        ));
    }
    let changed = api.cluster.set_status(node, Status::Removed)?;
    tracing::info!(%node, changed, "removed from the ring");
    let body = json!({ "node": node, "status": "removed", "changed": changed });
    Ok(response::json(
        StatusCode::OK,
        Bytes::from(body.to_string()),
    ))
}

pub fn rebuild_trees(api: &Api) -> Result<Response<Body>> {
    let trees = api.antientropy.rebuild();
    let body = json!({ "node": api.node, "rebuilding": trees });
    Ok(response::json(
        StatusCode::ACCEPTED,
        Bytes::from(body.to_string()),
    ))
}
