//! The coordinator: the replica-facing side of one client request.
//!
//! A write goes to the first replica of the key's preference list, which
//! mints the dot and stores it (`Coordinate`); the resulting sibling set is
//! then merged into the other replicas (`Merge`). A read asks every replica
//! (`Read`) and merges the answers with the one sibling merge. Every call,
//! the one to this node included, goes through the [`Transport`].
//!
//! Until the ring exists the preference list is this node alone; per-request
//! quorums, sloppy quorum and read repair build on this shape.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::peer::{PeerRequest, PeerResponse, Transport};
use crate::version::{Content, Context, Dot, SiblingSet};

pub struct Coordinator {
    node: String,
    transport: Arc<dyn Transport>,
}

/// A write that every replica acknowledged as durable.
pub struct Written {
    pub dot: Dot,
    pub set: SiblingSet,
}

impl Coordinator {
    pub fn new(node: impl Into<String>, transport: Arc<dyn Transport>) -> Self {
        Coordinator {
            node: node.into(),
            transport,
        }
    }

    /// The nodes that hold `key`, in preference order.
    pub fn preference_list(&self, _key: &str) -> Vec<String> {
        vec![self.node.clone()]
    }

    pub async fn write(&self, key: &str, context: Context, content: Content) -> Result<Written> {
        let replicas = self.preference_list(key);
        let (first, others) = replicas.split_first().ok_or_else(|| Error::Unavailable {
            node: self.node.clone(),
            reason: "the preference list is empty".into(),
        })?;
        let request = PeerRequest::Coordinate {
            key: key.to_string(),
            context,
            content,
        };
        let (dot, set) = match self.transport.call(first, request).await? {
            PeerResponse::Coordinated { dot, set } => (dot, set),
            other => return Err(unexpected(first, &other)),
        };
        let merges = others.iter().map(|to| {
            let request = PeerRequest::Merge {
                key: key.to_string(),
                set: set.clone(),
            };
            (to.clone(), request)
        });
        for (to, response) in self.fan_out(merges.collect()).await {
            match response? {
                PeerResponse::Merged => {}
                other => return Err(unexpected(&to, &other)),
            }
        }
        Ok(Written { dot, set })
    }

    /// The merged sibling set of `key` over its replicas; `None` if none has it.
    pub async fn read(&self, key: &str) -> Result<Option<SiblingSet>> {
        let requests = self.preference_list(key).into_iter().map(|to| {
            let request = PeerRequest::Read {
                key: key.to_string(),
            };
            (to, request)
        });
        let mut merged: Option<SiblingSet> = None;
        for (to, response) in self.fan_out(requests.collect()).await {
            match response? {
                PeerResponse::Value(Some(set)) => match &mut merged {
                    Some(m) => m.merge(&set),
                    None => merged = Some(set),
                },
                PeerResponse::Value(None) => {}
                other => return Err(unexpected(&to, &other)),
            }
        }
        Ok(merged)
    }

    /// Sends every request in parallel and collects every answer.
    async fn fan_out(
        &self,
        mut requests: Vec<(String, PeerRequest)>,
    ) -> Vec<(String, Result<PeerResponse>)> {
        if requests.len() == 1
            && let Some((to, request)) = requests.pop()
        {
            // One replica: no task to spawn.
            let reply = self.transport.call(&to, request).await;
            return vec![(to, reply)];
        }
        let mut calls = JoinSet::new();
        for (to, request) in requests {
            let reply = self.transport.call(&to, request);
            calls.spawn(async move { (to, reply.await) });
        }
        let mut out = Vec::with_capacity(calls.len());
        while let Some(joined) = calls.join_next().await {
            // A call task only fails by panicking, and then its replica is unknown.
            out.push(joined.unwrap_or_else(|e| {
                let failure = Error::Protocol(format!("a replica call died: {e}"));
                ("(unknown)".to_string(), Err(failure))
            }));
        }
        out
    }
}

fn unexpected(node: &str, response: &PeerResponse) -> Error {
    Error::Protocol(format!(
        "node {node} answered with an unexpected {response:?}"
    ))
}
