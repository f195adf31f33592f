//! The node-to-node transport: it moves typed calls between nodes and
//! knows no subsystem.
//!
//! Subsystems own their messages and call them typed ([`rpc`]: a request
//! type names its reply type, so a wrong reply cannot happen): the
//! replica's reads, writes, hints, handoff and purges (`replica::rpc`),
//! forwarded client requests (`coordinator::rpc`), liveness, gossip, joins
//! and Chord (`membership::rpc`), and the Merkle and operation exchanges
//! (`antientropy::rpc`). A [`Transport`] moves their [`Frame`]s (service,
//! version, postcard bytes) without looking inside; a call to the node
//! itself goes straight to its registered handler, never encoded.
//! [`HttpTransport`] carries frames between nodes over HTTP/2 cleartext
//! (h2c, or h2 over TLS) with pooled connections and a deadline per call;
//! the frames of batchable services (replica reads, merges, hints) travel
//! on one [`stream`] per peer, or, to a peer of a protocol before streams,
//! coalesced per peer over HTTP/2 ([`batch`]). It is generic over its
//! connector, so a simulated network (turmoil's `TcpStream` through
//! hyper-util's `TokioIo`) can stand in for TCP.
//! Counting the answers of a fan-out is the coordinator's
//! (`coordinator::tally`).

pub mod batch;
pub mod http;
pub mod rpc;
pub mod stream;
pub mod versions;

pub use http::{Addresses, HttpTransport, MAX_MESSAGE_BYTES, PEER_CONTENT_TYPE, tcp_connector};
pub use rpc::{Answer, Call, Frame, Rpc, Service, Services};
pub use versions::Versions;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

/// The route every node serves the peer protocol on.
pub const PEER_PATH: &str = "/peer";

/// How often a peer connection with requests in flight is pinged; one whose
/// ping is not answered within the peer timeout is closed and the next call
/// opens another. A connection can go silent without a reset (a peer host
/// that vanished, a firewall or NAT that dropped its state, a lost segment
/// on the simulated network); at 10 s every call to that peer failed for
/// 10 s, and the simulation's clients got so little done in such runs that
/// some proved too little.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a connection may take to open within a call's `timeout`: half,
/// so that a peer that cannot be reached fails as unavailable (the request
/// surely not sent) before the call's deadline makes it indeterminate.
pub fn connect_timeout(timeout: Duration) -> Duration {
    timeout / 2
}

/// A peer's answer other than 200 or 401: the API's JSON error for a
/// request it refused before decoding it (a body over the peer message
/// limit, one that does not decode, a wrong method). It says why, with the
/// receiver's code; it is never decoded as a reply. Its status is the
/// receiver's 413 (a value over a limit, which the client can act on), or
/// else 503: whatever the peer's HTTP layer refused (a body that came too
/// slowly, something else answering at the address) is no fault of the
/// client whose request it carried.
pub(crate) fn refused(node: &str, status: ::http::StatusCode, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: String,
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Refusal>(body) {
        Ok(r) => (Error::known_code(&r.error), r.message),
        Err(_) => (
            "protocol_error",
            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        ),
    };
    let shown = match status.as_u16() {
        413 => 413,
        _ => 503,
    };
    Error::Remote {
        node: node.to_string(),
        status: shown,
        code,
        message: format!("refused the request ({status}): {message}"),
        retryable: matches!(status.as_u16(), 408 | 429 | 503),
    }
}

pub(crate) fn encode(message: &impl Serialize) -> Result<Vec<u8>> {
    crate::encoding::to_exact_vec(message).map_err(|e| Error::Protocol(e.to_string()))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol(format!("bad {what}: {e}")))
}

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

/// Carries frames to nodes.
pub trait Transport: Send + Sync + 'static {
    /// This node's services, when `to` is this node: a call to itself
    /// takes the typed handler and never the network.
    fn local(&self, to: &str) -> Option<Arc<Services>>;

    /// Sends a frame; answers with the reply's bytes, or why none came.
    fn send(&self, to: Dest<'_>, frame: Frame) -> Call<Bytes>;

    /// The protocol to talk to node `to` at ([`versions::Versions::with`]).
    fn protocol_with(&self, to: &str) -> u16;
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
        // A node known only by its address has not been heard from.
        let protocol = match to {
            Dest::Node(node) => self.protocol_with(node),
            Dest::Addr(_) => versions::OLDEST_PROTOCOL,
        };
        let sent = request
            .frame_for(protocol)
            .map(|frame| self.send(to, frame));
        Box::pin(async move { rpc::reply::<R>(&node, &sent?.await?) })
    }
}

/// Runs an incoming frame through `services`: a [`batch::Batch`] frame by
/// frame, any other by its service. Refused before anything is decoded
/// when the service or version is not spoken here, or when a request signed
/// for any receiver (`to_any`) is not for a service that allows it.
pub fn dispatch(
    services: &Services,
    service: &str,
    version: u16,
    to_any: bool,
    body: Bytes,
) -> Result<Call<Bytes>> {
    use batch::Batch;
    if service == Batch::SERVICE.name {
        if version != Batch::SERVICE.version {
            return Err(Error::UnsupportedVersion {
                service: service.to_string(),
                version,
                speaks: Batch::SERVICE.version,
            });
        }
        if to_any {
            return Err(Error::PeerUnauthenticated(
                "a batch signed for any receiver; only a join may be".into(),
            ));
        }
        return batch::dispatch(services, &body);
    }
    services.dispatch(service, version, to_any, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver's JSON refusal (here a body over its peer message limit,
    /// as `POST /peer` answers it) reaches the sender as that error, with
    /// the receiver's status and code, instead of "bad reply" from decoding
    /// JSON as postcard.
    #[test]
    fn a_refusal_says_why_with_the_receivers_status_and_code() {
        let too_large = Error::ValueTooLarge { max: 64 << 20 };
        let body =
            serde_json::json!({ "error": too_large.code(), "message": too_large.to_string() });
        let e = refused(
            "n2",
            ::http::StatusCode::PAYLOAD_TOO_LARGE,
            body.to_string().as_bytes(),
        );
        assert_eq!(e.status(), ::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.code(), "value_too_large");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("67108864"), "{e}");
        let busy = refused("n2", ::http::StatusCode::SERVICE_UNAVAILABLE, b"<html>");
        assert_eq!(busy.code(), "protocol_error");
        assert!(busy.is_retryable(), "{busy}");
        // What the peer's HTTP layer refused is not the client's fault.
        for status in [
            ::http::StatusCode::REQUEST_TIMEOUT,
            ::http::StatusCode::NOT_FOUND,
            ::http::StatusCode::BAD_REQUEST,
        ] {
            let e = refused("n2", status, b"{}");
            assert_eq!(
                e.status(),
                ::http::StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
            assert!(e.to_string().contains(status.as_str()), "{e}");
        }
    }

    #[test]
    fn an_error_keeps_its_status_code_and_retryability_across_the_wire() {
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
        assert!(decode::<WireError>(&[], "error").is_err());
    }
}
