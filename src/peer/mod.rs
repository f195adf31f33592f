//! The node-to-node protocol: one request enum, one response enum.
//!
//! Every exchange between replicas is a [`PeerRequest`] answered by a
//! [`PeerResponse`], encoded with postcard (never JSON). A [`Transport`]
//! carries them; the coordinator uses it for every replica, itself included,
//! so that replication only adds destinations, not code paths. The
//! in-process [`LocalTransport`] serves a single node; the HTTP/2 transport
//! between nodes and the simulated one for turmoil implement the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::version::{Content, Context, Dot, SiblingSet};

/// What one node asks of another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Return the local sibling set of `key` (a replica's part of a read).
    Read { key: String },
    /// Coordinate a client write: mint a dot from the receiver's counter,
    /// apply `content` with the client's `context` to the local copy, and
    /// answer with the resulting set once it is durable.
    Coordinate {
        key: String,
        context: Context,
        content: Content,
    },
    /// Merge `set` into the local copy of `key` (replication, read repair,
    /// hinted handoff, anti-entropy) and answer once it is durable.
    Merge { key: String, set: SiblingSet },
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The local sibling set of the key read, if the replica has one.
    Value(Option<SiblingSet>),
    /// A coordinated write is durable: the dot minted and the resulting set.
    Coordinated { dot: Dot, set: SiblingSet },
    /// A merge is durable.
    Merged,
}

impl PeerRequest {
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerRequest> {
        decode(bytes, "request")
    }
}

impl PeerResponse {
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerResponse> {
        decode(bytes, "response")
    }
}

fn encode(message: &impl Serialize) -> Result<Vec<u8>> {
    postcard::to_allocvec(message).map_err(|e| Error::Protocol(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol(format!("bad {what}: {e}")))
}

pub type Reply = Pin<Box<dyn Future<Output = Result<PeerResponse>> + Send>>;

/// Carries requests to replicas by node id.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, to: &str, request: PeerRequest) -> Reply;
}

/// Delivers requests addressed to this node to its own replica, in process.
pub struct LocalTransport {
    node: String,
    replica: Arc<Replica>,
}

impl LocalTransport {
    pub fn new(node: impl Into<String>, replica: Arc<Replica>) -> Self {
        LocalTransport {
            node: node.into(),
            replica,
        }
    }
}

impl Transport for LocalTransport {
    fn call(&self, to: &str, request: PeerRequest) -> Reply {
        if to != self.node {
            let to = to.to_string();
            return Box::pin(async move {
                Err(Error::Unavailable {
                    node: to,
                    reason: "no transport to other nodes in this build".into(),
                })
            });
        }
        let replica = Arc::clone(&self.replica);
        Box::pin(async move { replica.handle(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, Context};

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let mut set = SiblingSet::new();
        let dot = Dot::new(Actor::new("n1", 9), 4);
        set.write(&Context::default(), dot.clone(), Content::Tombstone);
        let requests = [
            PeerRequest::Read { key: "k".into() },
            PeerRequest::Merge {
                key: "k".into(),
                set: set.clone(),
            },
            PeerRequest::Coordinate {
                key: "k".into(),
                context: Context::default().after_write(dot.clone()),
                content: Content::Value(bytes::Bytes::from_static(b"{}")),
            },
        ];
        for r in requests {
            assert_eq!(
                PeerRequest::decode(&r.encode().expect("encode")).expect("decode"),
                r
            );
        }
        let response = PeerResponse::Coordinated { dot, set };
        assert_eq!(
            PeerResponse::decode(&response.encode().expect("encode")).expect("decode"),
            response
        );
        assert!(PeerRequest::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(PeerResponse::decode(&[]).is_err());
    }
}
