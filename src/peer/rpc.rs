//! Typed calls between nodes: a request type names its reply type.
//!
//! Each subsystem defines its own messages, one struct per request, and
//! ties each to its reply with [`Rpc`] (the idea of Garage's
//! `trait Message { type Response }`, `src/net/message.rs` in
//! deuxfleurs/garage). The transport beneath never looks inside: it moves
//! a [`Frame`] (the service's name and version, and the postcard bytes of
//! the request) to a node and the reply's bytes back. So a reply of the
//! wrong type cannot happen: a call of `R` decodes an `R::Reply` or fails.
//!
//! A node registers one handler per service in its [`Services`] at start
//! (the subsystem that owns the messages registers them, after it is
//! built); `POST /peer` hands each incoming frame to
//! [`Services::dispatch`], and a call to the node itself takes the typed
//! handler directly, without encoding ([`Services::local`]).
//!
//! What can go wrong, and where it shows:
//! - a service the receiver does not know, or a version it does not speak:
//!   a refusal before anything is decoded ([`Error::UnknownService`],
//!   [`Error::UnsupportedVersion`]), which the sender gets with its code;
//! - a body that does not decode as the service's request: a 400, nothing
//!   applied;
//! - the handler's own error: inside the reply, with its status, code and
//!   retryability ([`WireError`]), as every error crossing the wire.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{WireError, decode, encode};
use crate::error::{Error, Result};
use crate::metrics as m;

/// The header of a `POST /peer` that carries a [`Frame`]: `name/version`.
pub const RPC_HEADER: &str = "x-chorus-rpc";

/// The longest service name; a longer header is refused unread.
pub const MAX_SERVICE_NAME: usize = 64;

/// A service: one request type and its handler on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Unique in the cluster, `subsystem.message` (`membership.gossip`).
    pub name: &'static str,
    /// The version this build speaks. Any change to the request or reply
    /// encoding is a new version: postcard does not describe itself, so an
    /// older node cannot skip an added field.
    pub version: u16,
    /// Whether a request signed for any receiver (sent to an address, not
    /// to a member) may be applied: only a join, which a node sends before
    /// it knows the id of the node it asks.
    pub to_any: bool,
    /// Whether calls may share one message with others to the same node
    /// (`batch.rs`): the small, frequent replica requests of client reads
    /// and writes.
    pub batchable: bool,
    /// The protocol that introduced this version ([`super::versions`]):
    /// a node that speaks an older protocol refuses it, and nobody sends
    /// it to such a node.
    pub since: u16,
}

impl Service {
    /// A service that only members may call.
    pub const fn new(name: &'static str, version: u16) -> Service {
        Service {
            name,
            version,
            to_any: false,
            batchable: false,
            since: 1,
        }
    }

    /// The same, introduced by protocol `protocol`.
    pub const fn since(self, protocol: u16) -> Service {
        Service {
            since: protocol,
            ..self
        }
    }

    /// The same, and calls may travel in a batch.
    pub const fn batchable(self) -> Service {
        Service {
            batchable: true,
            ..self
        }
    }

    /// The same, also applied when signed for any receiver (a join).
    pub const fn to_any(self) -> Service {
        Service {
            to_any: true,
            ..self
        }
    }
}

/// A request that one node sends another, tied to its reply.
pub trait Rpc: Serialize + DeserializeOwned + Send + 'static {
    const SERVICE: Service;
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The frame of this request for a peer that speaks `protocol`: its
    /// own encoding, or, for a service whose version is newer than that,
    /// the older version's (whose reply must decode as `Self::Reply`).
    /// Overridden by the requests that changed ([`super::versions`]).
    fn frame_for(&self, protocol: u16) -> Result<Frame> {
        let _ = protocol;
        Frame::of(self)
    }
}

/// A handler's successful reply as it crosses the wire: the postcard bytes
/// of `Ok::<T, WireError>(reply)`, which [`reply`] decodes on the other
/// side.
pub struct Answer<T> {
    bytes: Vec<u8>,
    reply: PhantomData<fn() -> T>,
}

impl<T: Serialize> Answer<T> {
    /// `reply`, encoded.
    pub fn of(reply: &T) -> Result<Answer<T>> {
        let ok: std::result::Result<&T, WireError> = Ok(reply);
        Ok(Answer {
            bytes: encode(&ok)?,
            reply: PhantomData,
        })
    }
}

impl<T> Answer<Option<T>> {
    /// `Some(t)` or `None` from the postcard bytes of a `T` (`stored`,
    /// which the caller vouches for: what a store wrote for a `T`), never
    /// decoded ([`crate::encoding`]).
    pub fn stored(stored: Option<&[u8]>) -> Answer<Option<T>> {
        Answer {
            bytes: crate::encoding::some(crate::encoding::OK, stored),
            reply: PhantomData,
        }
    }
}

/// What the transport moves: which service, at which version, and the
/// request's bytes, never decoded on the way.
#[derive(Clone, Debug)]
pub struct Frame {
    pub service: &'static str,
    pub version: u16,
    pub body: Bytes,
    /// The service's [`Service::batchable`].
    pub batchable: bool,
}

impl Frame {
    /// The frame of `request`, encoded once.
    pub fn of<R: Rpc>(request: &R) -> Result<Frame> {
        Ok(Frame {
            service: R::SERVICE.name,
            version: R::SERVICE.version,
            body: Bytes::from(encode(request)?),
            batchable: R::SERVICE.batchable,
        })
    }

    /// The value of the [`RPC_HEADER`].
    pub fn header(&self) -> String {
        format!("{}/{}", self.service, self.version)
    }
}

/// Parses an [`RPC_HEADER`] a peer sent: `name/version`.
pub fn parse_header(value: &[u8]) -> Result<(String, u16)> {
    let bad = |why: &str| Error::BodyRead(format!("header {RPC_HEADER}: {why}"));
    if value.len() > MAX_SERVICE_NAME + 6 {
        return Err(bad("too long"));
    }
    let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
    let (name, version) = text
        .split_once('/')
        .ok_or_else(|| bad("not `service/version`"))?;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_';
    if name.is_empty() || name.len() > MAX_SERVICE_NAME || !name.chars().all(valid) {
        return Err(bad("not a service name"));
    }
    let version = version.parse().map_err(|_| bad("not a version number"))?;
    Ok((name.to_string(), version))
}

/// A future the caller may keep past the borrow that made it.
pub type Call<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// A service's handler called in-process, with the typed request.
pub type Local<R> = Arc<dyn Fn(R) -> Call<<R as Rpc>::Reply> + Send + Sync>;

/// The same handler behind the wire: request bytes in, reply bytes out.
type Remote = Arc<dyn Fn(Bytes) -> Call<Bytes> + Send + Sync>;

struct Entry {
    service: Service,
    remote: Remote,
    /// A [`Local`] of the service's request type.
    local: Arc<dyn Any + Send + Sync>,
}

/// A node's handlers of incoming peer requests, by service name and
/// version, and the protocol it speaks.
pub struct Services {
    entries: RwLock<HashMap<(&'static str, u16), Entry>>,
    protocol: u16,
}

impl Services {
    /// The services of a node that speaks this build's protocol.
    pub fn new() -> Arc<Services> {
        Services::speaking(super::versions::PROTOCOL)
    }

    /// The services of a node that speaks up to `protocol`: it refuses
    /// the versions of later protocols.
    pub fn speaking(protocol: u16) -> Arc<Services> {
        Arc::new(Services {
            entries: RwLock::new(HashMap::new()),
            protocol,
        })
    }

    /// The protocol this node speaks.
    pub fn protocol(&self) -> u16 {
        self.protocol
    }

    /// Installs the handler of `R` (of its service at its version; the
    /// older versions of a service have handlers of their own), replacing
    /// one installed before (a subsystem rebuilt on the same node).
    pub fn register<R, F, Fut>(&self, handler: F)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let typed = Arc::clone(&handler);
        self.register_answering(
            move |request: R| typed(request),
            move |request: R| {
                let reply = handler(request);
                async move { Answer::of(&reply.await?) }
            },
        );
    }

    /// Installs `R`'s handlers: `local` for a call from this node itself,
    /// `remote` for one that came over the wire, which answers with the
    /// reply's bytes ([`Answer`]). Both must give the same reply: a
    /// replica's read answers a peer with the set's bytes as stored, never
    /// decoding them, and itself with the set.
    pub fn register_answering<R, F, Fut, G, Gut>(&self, local: F, remote: G)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply>> + Send + 'static,
        G: Fn(R) -> Gut + Send + Sync + 'static,
        Gut: Future<Output = Result<Answer<R::Reply>>> + Send + 'static,
    {
        let local: Local<R> = Arc::new(move |request| Box::pin(local(request)));
        let handler = Arc::new(remote);
        let remote: Remote = Arc::new(move |bytes: Bytes| {
            let request = decode::<R>(&bytes, R::SERVICE.name);
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                // A body that does not decode is the sender's fault,
                // refused as such; nothing of it is applied.
                let request = request.map_err(|e| Error::BodyRead(e.to_string()))?;
                match handler(request).await {
                    Ok(Answer { bytes, .. }) => Ok(Bytes::from(bytes)),
                    Err(e) => {
                        let reply: std::result::Result<R::Reply, WireError> =
                            Err(WireError::from_error(&e));
                        Ok(Bytes::from(encode(&reply)?))
                    }
                }
            })
        });
        let entry = Entry {
            service: R::SERVICE,
            remote,
            local: Arc::new(local),
        };
        self.entries
            .write()
            .insert((R::SERVICE.name, R::SERVICE.version), entry);
    }

    /// Installs a handler of `R` that answers at once, without waiting.
    pub fn register_now<R, F>(&self, handler: F)
    where
        R: Rpc,
        F: Fn(R) -> Result<R::Reply> + Send + Sync + 'static,
    {
        self.register(move |request: R| std::future::ready(handler(request)));
    }

    /// The typed handler of `R`, for a call to this node itself (no
    /// encoding crosses, so any version registered is fine).
    pub fn local<R: Rpc>(&self) -> Option<Local<R>> {
        let entries = self.entries.read();
        let entry = entries.get(&(R::SERVICE.name, R::SERVICE.version))?;
        entry.local.downcast_ref::<Local<R>>().cloned()
    }

    /// The handling of one incoming frame: refused at once when this node
    /// has no such service, does not speak its version, or must not apply
    /// it from a request signed for any receiver (`to_any`).
    pub fn dispatch(
        &self,
        service: &str,
        version: u16,
        to_any: bool,
        body: Bytes,
    ) -> Result<Call<Bytes>> {
        self.lookup(service, version, to_any, Via::Post, body)
    }

    /// As [`Services::dispatch`], for a frame that came with others (`via`
    /// a batch or a stream): only a batchable service is taken.
    pub fn dispatch_batched(
        &self,
        service: &str,
        version: u16,
        via: Via,
        body: Bytes,
    ) -> Result<Call<Bytes>> {
        self.lookup(service, version, false, via, body)
    }

    fn lookup(
        &self,
        service: &str,
        version: u16,
        to_any: bool,
        via: Via,
        body: Bytes,
    ) -> Result<Call<Bytes>> {
        let entries = self.entries.read();
        let spoken = |e: &&Entry| e.service.since <= self.protocol;
        let Some(entry) = entries.get(&(service, version)).filter(spoken) else {
            // The newest version of it this node speaks, if any.
            let speaks = entries
                .values()
                .filter(spoken)
                .filter(|e| e.service.name == service)
                .map(|e| e.service.version)
                .max();
            return Err(match speaks {
                Some(speaks) => Error::UnsupportedVersion {
                    service: service.to_string(),
                    version,
                    speaks,
                },
                None => Error::UnknownService(service.to_string()),
            });
        };
        if via != Via::Post && !entry.service.batchable {
            return Err(Error::Protocol(format!(
                "{service} may not travel in a batch"
            )));
        }
        if to_any && !entry.service.to_any {
            // Anything but a join signed for any receiver could be
            // replayed to every node.
            return Err(Error::PeerUnauthenticated(format!(
                "a {service} request signed for any receiver; only a join may be"
            )));
        }
        static CALLS: m::Handles<(&str, Via), metrics::Counter> = m::Handles::new();
        let name = entry.service.name;
        CALLS
            .get(
                (name, via),
                || metrics::counter!(m::PEER_CALLS_TOTAL, "service" => name, "via" => via.label()),
            )
            .increment(1);
        Ok((entry.remote)(body))
    }

    /// The services registered as `name/version`, sorted (for logs and
    /// tests).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .entries
            .read()
            .keys()
            .map(|(name, version)| format!("{name}/{version}"))
            .collect();
        names.sort_unstable();
        names
    }
}

/// How a call reached this node: the label `via` of
/// `chorus_peer_calls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// A `POST /peer` of its own.
    Post,
    /// In a `peer.batch` post (protocol 2, over HTTP/2).
    Batch,
    /// On a peer stream (`super::stream`).
    Stream,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Post => "post",
            Via::Batch => "batch",
            Via::Stream => "stream",
        }
    }
}

/// Decodes a reply's bytes as `R`'s reply, or the error the peer's handler
/// sent back.
pub fn reply<R: Rpc>(node: &str, bytes: &[u8]) -> Result<R::Reply> {
    let reply: std::result::Result<R::Reply, WireError> = decode(bytes, "reply")?;
    reply.map_err(|e| e.into_error(node))
}

#[cfg(test)]
mod tests;
