//! The node-to-node protocol: a transport, and the messages still shared.
//!
//! Subsystems own their messages and call them typed ([`rpc`]: a request
//! type names its reply type, so a wrong reply cannot happen): liveness,
//! gossip, joins and Chord (`membership::rpc`), and the Merkle and
//! operation exchanges (`antientropy::rpc`). A [`Transport`] moves their
//! [`Frame`]s without looking inside, and a call to the node itself goes
//! straight to its registered handler.
//!
//! The replica's reads and writes, hints, handoff and purges, and forwarded
//! client requests still travel as one [`PeerRequest`] answered by a
//! [`PeerResponse`] (or a [`WireError`]), encoded with postcard (never
//! JSON); issue 20 moves them to services of their own, one per commit.
//! [`HttpTransport`] carries both between nodes over HTTP/2 cleartext (h2c)
//! with pooled connections and a deadline per call; it is generic over its
//! connector, so a simulated network (turmoil's `TcpStream` through
//! hyper-util's `TokioIo`) can stand in for TCP. Counting the answers of a
//! fan-out is the coordinator's (`coordinator::tally`).

pub mod batch;
pub mod http;
pub mod rpc;

pub use http::{
    Addresses, HttpTransport, MAX_MESSAGE_BYTES, PEER_CONTENT_TYPE, PEER_PATH, tcp_connector,
};
pub use rpc::{Call, Frame, Rpc, Service, Services};

use bytes::Bytes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::coordinator::quorum::Quorum;
use crate::error::{Error, Result};
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
        /// The client's `Idempotency-Key`: if the set already records it,
        /// the write is a retry and nothing new is minted.
        request_id: Option<String>,
    },
    /// Merge `set` into the local copy of `key` (replication, read repair,
    /// hinted handoff, anti-entropy) and answer once it is durable.
    Merge { key: String, set: SiblingSet },
    /// Sloppy quorum: `owner`, a primary replica of `key`, is unreachable;
    /// keep `set` for it (merged into the local store, where the handoff
    /// sweep finds it as data this node does not own and delivers it to the
    /// owners once they answer, verified, before dropping it).
    Hint {
        owner: String,
        key: String,
        set: SiblingSet,
    },
    /// Ownership handoff: merge every entry, answer once all are durable.
    Handoff(Vec<(String, SiblingSet)>),
    /// Return the local sets of these keys (to verify a handoff).
    Fetch(Vec<String>),
    /// Tombstone purge: every replica of these keys was seen holding
    /// exactly the given tombstone-only set; where the local set is still
    /// that set, replace it by its grave (the siblings go, the context
    /// stays). Answered once durable.
    Purge(Vec<(String, SiblingSet)>),
    /// A client request that reached a node outside the key's preference
    /// list, forwarded once: the receiver coordinates it and never forwards
    /// it again.
    Forward(ClientOp),
    /// Several batchable requests to the same replica (see `batch.rs`), at
    /// most [`batch::MAX_BATCH`], answered by [`PeerResponse::Batch`] with
    /// one reply each, in order.
    Batch(Vec<PeerRequest>),
}

/// A client request as a coordinator runs it, with the quorum the client
/// asked for and the time left of its deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    /// Answered with [`PeerResponse::Value`]: the merged set over the replicas.
    Read {
        key: String,
        quorum: Quorum,
        timeout_ms: u64,
        /// The client's context: the answer must have seen all of it.
        session: Option<Context>,
    },
    /// Answered with [`PeerResponse::Coordinated`].
    Write {
        key: String,
        context: Context,
        content: Content,
        quorum: Quorum,
        timeout_ms: u64,
        request_id: Option<String>,
    },
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The local sibling set of the key read, if the replica has one.
    Value(Option<SiblingSet>),
    /// A coordinated write was minted: the dot, the resulting set, and
    /// whether the minting replica keeps it: `Ok(durable)` once it holds it
    /// (fsynced, with `durable`), `Err(why)` when its own fsync failed.
    /// Either way the write exists, under this one dot: the coordinator
    /// sends the set on and never has another replica mint it again; a
    /// minter that could not keep it counts toward no quorum. (A failed
    /// commit is an error instead: the set was never handed out, so the
    /// write exists nowhere.)
    Coordinated {
        dot: Dot,
        set: SiblingSet,
        kept: std::result::Result<bool, String>,
    },
    /// A merge (or a handoff batch) is stored, durably or not.
    Merged { durable: bool },
    /// The local sets of the keys fetched, in the order asked.
    Sets(Vec<Option<SiblingSet>>),
    /// The replies to a [`PeerRequest::Batch`], in its order.
    Batch(Vec<WireReply>),
}

/// An error as it crosses the wire: the receiver rebuilds an
/// [`Error::Remote`] with the same status and code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl WireError {
    pub fn from_error(e: &Error) -> WireError {
        WireError {
            status: e.status().as_u16(),
            code: e.code().to_string(),
            message: e.to_string(),
            retryable: e.is_retryable(),
        }
    }

    pub fn into_error(self, node: &str) -> Error {
        Error::Remote {
            node: node.to_string(),
            status: self.status,
            code: Error::known_code(&self.code),
            message: self.message,
            retryable: self.retryable,
        }
    }
}

/// What travels back: a response or an error.
pub type WireReply = std::result::Result<PeerResponse, WireError>;

impl PeerRequest {
    /// Whether the request is for the receiver's replica (its store), as
    /// opposed to its ring, membership or coordinator.
    pub fn is_for_replica(&self) -> bool {
        matches!(
            self,
            PeerRequest::Read { .. }
                | PeerRequest::Coordinate { .. }
                | PeerRequest::Merge { .. }
                | PeerRequest::Hint { .. }
                | PeerRequest::Handoff(_)
                | PeerRequest::Fetch(_)
                | PeerRequest::Purge(_)
                | PeerRequest::Batch(_)
        )
    }

    /// A short name of the request's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::Read { .. } => "read",
            PeerRequest::Coordinate { .. } => "coordinate",
            PeerRequest::Merge { .. } => "merge",
            PeerRequest::Hint { .. } => "hint",
            PeerRequest::Handoff(_) => "handoff",
            PeerRequest::Fetch(_) => "fetch",
            PeerRequest::Purge(_) => "purge",
            PeerRequest::Forward(_) => "forward",
            PeerRequest::Batch(_) => "batch",
        }
    }

    /// Whether the request may travel in a [`PeerRequest::Batch`]: the
    /// small, frequent replica requests of client reads and writes.
    pub fn is_batchable(&self) -> bool {
        matches!(
            self,
            PeerRequest::Read { .. } | PeerRequest::Merge { .. } | PeerRequest::Hint { .. }
        )
    }

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

pub(crate) fn encode(message: &impl Serialize) -> Result<Vec<u8>> {
    postcard::to_allocvec(message).map_err(|e| Error::Protocol(e.to_string()))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol(format!("bad {what}: {e}")))
}

pub type Reply = Pin<Box<dyn Future<Output = Result<PeerResponse>> + Send>>;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest<'a> {
    /// A member, by node id.
    Node(&'a str),
    /// An address (a node that is joining knows only its seed's address);
    /// signed for any receiver, so only a service that allows it
    /// ([`Service::to_any`]) is applied.
    Addr(&'a str),
}

impl Dest<'_> {
    /// The node id or address, to name in errors.
    pub fn name(&self) -> &str {
        match self {
            Dest::Node(name) | Dest::Addr(name) => name,
        }
    }
}

/// Carries requests to nodes.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, to: &str, request: PeerRequest) -> Reply;

    /// This node's services, when `to` is this node: a call to itself
    /// takes the typed handler and never the network.
    fn local(&self, to: &str) -> Option<Arc<Services>>;

    /// Sends a frame; answers with the reply's bytes, or why none came.
    fn send(&self, to: Dest<'_>, frame: Frame) -> Call<Bytes>;
}

impl<'t> dyn Transport + 't {
    /// Calls `R` on node `to`: the reply is an `R::Reply`, or an error.
    pub fn rpc<R: Rpc>(&self, to: &str, request: R) -> Call<R::Reply> {
        if let Some(handler) = self.local(to).and_then(|s| s.local::<R>()) {
            return handler(request);
        }
        self.rpc_to(Dest::Node(to), request)
    }

    /// Calls `R` on whatever node answers at `addr` (a join).
    pub fn rpc_addr<R: Rpc>(&self, addr: &str, request: R) -> Call<R::Reply> {
        self.rpc_to(Dest::Addr(addr), request)
    }

    fn rpc_to<R: Rpc>(&self, to: Dest<'_>, request: R) -> Call<R::Reply> {
        let node = to.name().to_string();
        let sent = Frame::of(&request).map(|frame| self.send(to, frame));
        Box::pin(async move { rpc::reply::<R>(&node, &sent?.await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, Context};

    /// A receiver's JSON refusal (here a body over its peer message limit,
    /// as `POST /peer` answers it) reaches the sender as that error, with
    /// the receiver's status and code, instead of "bad reply" from decoding
    /// JSON as postcard.
    #[test]
    fn a_refusal_says_why_with_the_receivers_status_and_code() {
        let too_large = Error::ValueTooLarge { max: 64 << 20 };
        let body =
            serde_json::json!({ "error": too_large.code(), "message": too_large.to_string() });
        let e = http::refused(
            "n2",
            ::http::StatusCode::PAYLOAD_TOO_LARGE,
            body.to_string().as_bytes(),
        );
        assert_eq!(e.status(), ::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.code(), "value_too_large");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("67108864"), "{e}");
        let busy = http::refused("n2", ::http::StatusCode::SERVICE_UNAVAILABLE, b"<html>");
        assert_eq!(busy.code(), "protocol_error");
        assert!(busy.is_retryable(), "{busy}");
    }

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
                request_id: Some("retry-1".into()),
            },
        ];
        for r in requests {
            assert_eq!(
                PeerRequest::decode(&r.encode().expect("encode")).expect("decode"),
                r
            );
        }
        let response = PeerResponse::Coordinated {
            dot,
            set,
            kept: Ok(true),
        };
        assert_eq!(
            PeerResponse::decode(&response.encode().expect("encode")).expect("decode"),
            response
        );
        assert!(PeerRequest::decode(&[0xff, 0xff, 0xff]).is_err());
        // An error keeps its status, code and retryability across the wire.
        let refused = Error::TooManySiblings {
            count: 101,
            max: 100,
        };
        let back = WireError::from_error(&refused).into_error("n2");
        assert_eq!(
            (back.status().as_u16(), back.code()),
            (503, "too_many_siblings")
        );
        assert!(!back.is_retryable(), "a replica would refuse it alike");
        let down = Error::Storage("disk".into());
        assert!(WireError::from_error(&down).into_error("n2").is_retryable());
        assert!(PeerResponse::decode(&[]).is_err());
    }
}
