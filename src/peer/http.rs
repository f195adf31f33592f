//! The peer protocol over HTTP/2, client side: h2c, or h2 over TLS when
//! the cluster has `[security.tls]`.
//!
//! Every node serves `POST /peer` on its one listen address (the server
//! speaks HTTP/1.1 and HTTP/2 on the same port). A request carries one
//! [`Frame`]: its service and version in the `x-chorus-rpc` header, its
//! postcard bytes as the body; the response body is the reply's postcard
//! bytes. Calls share one multiplexed HTTP/2 connection per peer
//! (hyper-util's pool), every socket has TCP_NODELAY, and every call has a
//! deadline, after which the peer counts as unavailable for that call.
//! Calls to this node itself skip the network (`Transport::local`). With a
//! cluster secret every request carries its MAC (`security::peer_auth`); a
//! peer's 401 means it applied nothing, and any other status than 200 is a
//! refusal the sender gets as that error (`refused`).
//!
//! Frames of batchable services go to a peer that speaks streams on its
//! [`super::stream`] (a lane whose task runs the stream), and to an older
//! peer on its [`batch`] lane.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::{Mutex, RwLock};

use super::batch::{self, Lane};
use super::rpc::RPC_HEADER;
use super::stream::link;
use super::stream::open::Opener;
use super::stream::{Dial, STREAM_PROTOCOL};
use super::versions::{self, PROTOCOL_HEADER, Versions};
use super::{Call, Dest, Frame, KEEP_ALIVE_INTERVAL, PEER_PATH, Services, Transport, refused};
use crate::error::Error;
use crate::security::peer::Signer;
use crate::security::peer_auth::{ANY_RECEIVER, AUTH_HEADER};

/// The content type of peer messages.
pub const PEER_CONTENT_TYPE: &str = "application/x-chorus-peer";
/// The largest peer message when the config does not say more: room for a
/// full sibling set (limits.max_set_bytes) and its envelope.
pub const MAX_MESSAGE_BYTES: usize = crate::config::MIN_PEER_MESSAGE_BYTES;

/// Node id to `host:port`, kept current by the membership.
pub type Addresses = Arc<RwLock<HashMap<String, String>>>;

pub struct HttpTransport<C = HttpConnector> {
    me: String,
    /// This node's handlers: a call to itself goes straight to them. Weak:
    /// the handlers hold what holds this transport, and the server holds
    /// them (so they go when the node stops).
    services: Weak<Services>,
    addresses: Addresses,
    sender: Sender<C>,
    /// Per peer: the address its lane sends to, and the lane.
    lanes: Mutex<HashMap<String, (String, Lane)>>,
    /// Per peer that speaks streams: the address its stream goes to, and
    /// the lane whose task runs the stream.
    links: Mutex<HashMap<String, (String, Lane)>>,
    opener: Arc<Opener>,
}

/// What one HTTP call needs: the pooled client and the scheme it dials
/// (`http` or `https`), the deadline, the reply limit, what signs the
/// request (none when the node has no secret), and where the protocol
/// each peer answers with is kept.
#[derive(Clone)]
struct Sender<C> {
    client: Client<C, Full<Bytes>>,
    scheme: &'static str,
    timeout: Duration,
    max_message: usize,
    signer: Option<Arc<Signer>>,
    versions: Arc<Versions>,
}

/// A TCP connector for peers: TCP_NODELAY, connecting within `timeout`.
pub fn tcp_connector(timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // https:// too: TLS wraps this connector (`security::tls::connector`).
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(timeout));
    connector
}

impl<C> HttpTransport<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A transport over `connector`: [`tcp_connector`] or a simulated
    /// network, wrapped in TLS (`security::tls::connector`) when `scheme`
    /// is `https`; `dial` opens the connections of peer streams (the same
    /// network, with TLS offering HTTP/1.1: `stream::dialer`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connector: C,
        dial: Dial,
        scheme: &'static str,
        me: &str,
        services: Weak<Services>,
        addresses: Addresses,
        timeout: Duration,
        max_message: usize,
        signer: Option<Arc<Signer>>,
        versions: Arc<Versions>,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let opener = Arc::new(Opener {
            dial,
            scheme,
            signer: signer.clone(),
            versions: Arc::clone(&versions),
            timeout,
            max_message,
        });
        HttpTransport {
            me: me.to_string(),
            services,
            addresses,
            sender: Sender {
                client,
                scheme,
                timeout,
                max_message,
                signer,
                versions,
            },
            lanes: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            opener,
        }
    }

    /// The lane whose task runs the stream to `node` at `addr`, started
    /// on first use and replaced when the node's address changes.
    fn link(&self, node: &str, addr: &str) -> Lane {
        let mut links = self.links.lock();
        if let Some((at, lane)) = links.get(node)
            && at == addr
        {
            return lane.clone();
        }
        let (opener, to, at) = (Arc::clone(&self.opener), node.to_string(), addr.to_string());
        let lane = Lane::with(node, self.sender.timeout, move |rx| {
            link::run(opener, to, at, rx)
        });
        links.insert(node.to_string(), (addr.to_string(), lane.clone()));
        lane
    }

    /// How long a call of `frame` alone may take: the peer timeout, and
    /// time for its bytes.
    fn deadline(&self, frame: &Frame) -> Duration {
        self.sender.timeout + batch::allowance(frame.body.len())
    }

    /// The lane of batched frames to `node` at `addr`, started on first
    /// use and replaced when the node's address changes; a batch stays
    /// within half the peer message limit.
    fn lane(&self, node: &str, addr: &str) -> Lane {
        let mut lanes = self.lanes.lock();
        if let Some((at, lane)) = lanes.get(node)
            && at == addr
        {
            return lane.clone();
        }
        let (sender, to, at) = (self.sender.clone(), node.to_string(), addr.to_string());
        let send: batch::Send = Arc::new(move |frame: Frame| {
            let header = frame.header();
            let patience = batch::patience(sender.timeout, frame.body.len());
            sender.post(to.clone(), at.clone(), false, header, frame.body, patience)
        });
        let budget = self.sender.max_message / 2;
        let lane = Lane::start(node, send, self.sender.timeout, budget);
        lanes.insert(node.to_string(), (addr.to_string(), lane.clone()));
        lane
    }
}

impl<C> Sender<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Posts a frame's `body` for service `rpc` (`name/version`) to `node` at
    /// `addr`, signed for `node`, or for any receiver when `to_any` (the
    /// node is known only by its address); answers with the reply's bytes,
    /// or fails once `timeout` passes.
    fn post(
        &self,
        node: String,
        addr: String,
        to_any: bool,
        rpc: String,
        body: Bytes,
        timeout: Duration,
    ) -> Call<Bytes> {
        let client = self.client.clone();
        let max = self.max_message;
        let (signer, scheme) = (self.signer.clone(), self.scheme);
        let versions = Arc::clone(&self.versions);
        Box::pin(async move {
            let unavailable = |reason: String| Error::Unavailable {
                node: node.clone(),
                reason,
            };
            // Once the request may have left, a failure is indeterminate.
            let indeterminate = |reason: String| Error::Indeterminate {
                node: node.clone(),
                reason,
            };
            let call = async {
                let mut req = Request::builder()
                    .method(Method::POST)
                    .uri(format!("{scheme}://{addr}{PEER_PATH}"))
                    .header(header::CONTENT_TYPE, PEER_CONTENT_TYPE);
                if let Some(signer) = &signer {
                    let to = if to_any { ANY_RECEIVER } else { &node };
                    req = req.header(AUTH_HEADER, signer.sign(to, &rpc, &body));
                }
                req = req.header(RPC_HEADER, rpc);
                let req = req
                    .body(Full::new(body))
                    .map_err(|e| unavailable(format!("bad address `{addr}`: {e}")))?;
                let response = client.request(req).await.map_err(|e| {
                    // A refused TLS handshake is a connect error too.
                    if e.is_connect() {
                        unavailable(crate::error::chain(&e))
                    } else {
                        indeterminate(crate::error::chain(&e))
                    }
                })?;
                // Every answer says what its node speaks; one sent to an
                // address is from a node not yet known by id.
                if !to_any
                    && let Some(protocol) = versions::advertised(
                        response
                            .headers()
                            .get(PROTOCOL_HEADER)
                            .map(|v| v.as_bytes()),
                    )
                {
                    versions.heard(&node, protocol);
                }
                // Refused before anything was applied: say so, and never
                // read the refusal as an answer.
                let status = response.status();
                let bytes = Limited::new(response.into_body(), max)
                    .collect()
                    .await
                    .map_err(|e| indeterminate(format!("reading the reply: {e}")))?
                    .to_bytes();
                if status == http::StatusCode::UNAUTHORIZED {
                    return Err(unavailable(format!(
                        "it refused this node's authentication ({}); is security.peer_secret the same on both?",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    )));
                }
                if status != http::StatusCode::OK {
                    return Err(refused(&node, status, &bytes));
                }
                Ok(bytes)
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(indeterminate(format!("no answer within {timeout:?}"))),
            }
        })
    }
}

impl<C> Transport for HttpTransport<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn local(&self, to: &str) -> Option<Arc<Services>> {
        (to == self.me).then(|| self.services.upgrade()).flatten()
    }

    fn protocol_with(&self, to: &str) -> u16 {
        self.sender.versions.with(to)
    }

    fn send(&self, to: Dest<'_>, frame: Frame) -> Call<Bytes> {
        let (header, deadline) = (frame.header(), self.deadline(&frame));
        match to {
            Dest::Addr(addr) => self.sender.post(
                addr.to_string(),
                addr.to_string(),
                true,
                header,
                frame.body,
                deadline,
            ),
            Dest::Node(node) => match self.addresses.read().get(node).cloned() {
                Some(addr) if frame.batchable => {
                    if self.sender.versions.with(node) >= STREAM_PROTOCOL {
                        self.link(node, &addr).call(frame)
                    } else {
                        self.lane(node, &addr).call(frame)
                    }
                }
                Some(addr) => {
                    self.sender
                        .post(node.to_string(), addr, false, header, frame.body, deadline)
                }
                None => {
                    let node = node.to_string();
                    Box::pin(async move {
                        Err(Error::Unavailable {
                            node,
                            reason: "no address known for this node".into(),
                        })
                    })
                }
            },
        }
    }
}
