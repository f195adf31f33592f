//! The public REST API and the HTTP server that carries it.
//!
//! Routes (docs/api.md is the contract):
//! - `GET|PUT|DELETE /kv/{key}`: `kv.rs`
//! - `GET|POST /crdt/{key}`: counters, sets and maps: `crdt.rs`
//! - `POST /batch`: many key operations in one request: `batch.rs`
//! - `GET /health`: liveness and the node's id
//! - `GET /metrics`: Prometheus text
//! - `GET /cluster`, `POST /admin/leave`, `POST /admin/remove/{node}`: `admin.rs`
//! - `GET /admin/replica/{key}`: this node's own stored set: `replica_view.rs`
//! - `POST /peer`: the node-to-node protocol, postcard over h2c: `peer.rs`
//! - `GET /changes`: the change feed: `changes.rs`
//!
//! `routes.rs` is the table of them all: the router dispatches by it, and
//! docs/openapi.yaml is tested equal to it.
//!
//! The HTTP server that carries them (limits on connections, timeouts,
//! TLS, graceful drain) is `server.rs`.
//!
//! Every error is JSON `{"error": code, "message": …}` with the status the
//! [`Error`] carries. Every socket gets TCP_NODELAY; request headers must
//! arrive within `limits.header_timeout_ms` and bodies within
//! `limits.body_timeout_ms`.

mod admin;
mod batch;
mod changes;
mod crdt;
mod kv;
mod peer;
mod replica_view;
mod response;
mod routes;
mod scan;
mod server;
mod watching;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use admin::LeaveState;
pub use replica_view::NODE_HEADER;
use response::Body;
pub use response::{CONTEXT_HEADER, EXPIRES_HEADER, QUORUM_HEADER};
pub use routes::{ANY_ROUTE, Handler, Operation, ROUTES, Route, Undeclared};
pub use server::serve;

use crate::antientropy::AntiEntropy;
use crate::config::Limits;
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::membership::Cluster;
use crate::membership::Liveness;
use crate::metrics as m;
use crate::replica::Replica;
use crate::ring::Status;
use crate::store::Store;

/// Everything a request handler needs; shared by all connections.
pub struct Api {
    pub node: String,
    pub coordinator: Arc<Coordinator>,
    pub cluster: Arc<Cluster>,
    pub replica: Arc<Replica>,
    pub antientropy: Arc<AntiEntropy>,
    /// This node's watchers and the subscriptions it holds (`watch`).
    pub watch: Arc<crate::watch::WatchService>,
    /// The change feed: this node's log and its readers (`feed`).
    pub feed: Arc<crate::feed::FeedService>,
    pub limits: Limits,
    /// The cluster's default quorum and request timeout.
    pub quorum: crate::coordinator::quorum::Quorum,
    pub timeout_ms: u64,
    /// Seals the contexts this node hands out and checks those it gets.
    pub seal: crate::version::context::Seal,
    pub metrics: PrometheusHandle,
    pub store: Arc<dyn Store>,
    /// Largest peer message accepted.
    pub max_peer_message: usize,
    /// This node's handlers of peer requests, by service.
    pub services: Arc<crate::peer::Services>,
    pub handoff_batch: usize,
    pub leave: Arc<parking_lot::Mutex<LeaveState>>,
    /// Turns true when this node has left the ring and should stop.
    pub left: watch::Sender<bool>,
    /// Checks every `POST /peer` before its body is decoded.
    pub peer_auth: crate::security::peer::Verifier,
    /// Client bearer tokens (none: the API is open) and the routes that
    /// need none.
    pub tokens: crate::security::tokens::Tokens,
    pub open_routes: Vec<crate::config::OpenRoute>,
    /// Client requests being served (`limits.max_inflight` permits).
    pub inflight: tokio::sync::Semaphore,
    /// The peer protocol this node speaks, and what its peers answered with.
    pub versions: Arc<crate::peer::Versions>,
    /// Peer requests being served on `POST /peer` (`limits.max_peer_inflight`
    /// permits; a stream's calls are bounded by its window instead).
    pub peer_inflight: tokio::sync::Semaphore,
    /// Bytes of peer request bodies held (`limits.max_peer_inflight_bytes`).
    pub peer_bytes: Arc<tokio::sync::Semaphore>,
    /// Peer streams being served (`limits.max_connections` permits, held
    /// for a stream's life): shutdown waits until all are back.
    pub peer_streams: Arc<tokio::sync::Semaphore>,
    /// How long a peer stream's replies may take to leave.
    pub peer_timeout: Duration,
    /// Turns true when the node stops (closed when it is dropped): its
    /// peer streams, which outlive the HTTP server's connections, close.
    pub stopped: watch::Receiver<bool>,
    /// The answers whose status their route does not declare.
    pub undeclared: Arc<Undeclared>,
}

impl Api {
    /// Serves one request and records it in the request metrics.
    pub async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        // HEAD is a GET whose body is left out, its length kept: load
        // balancers and caches send it. (hyper drops the body of a HEAD
        // answer on HTTP/1.1 but not on HTTP/2, so it is dropped here.)
        let head = req.method() == Method::HEAD;
        if head {
            *req.method_mut() = Method::GET;
        }
        let path = req.uri().path().to_string();
        let found = routes::find(&path);
        let watching = is_watch(&req);
        let op = match watching {
            true => "watch",
            false => operation(req.method(), found.map(|(route, _)| route.handler)),
        };
        let quorum = quorum_label(op, req.uri().query());
        // Peer requests are never refused for load: replication, repair,
        // hints and handoff are bounded by their own queues.
        // A watcher waits, and has a limit of its own (`limits.max_watchers`);
        // so does a reader of the feed (`changes.max_readers`).
        let permit = if path == crate::peer::PEER_PATH || watching || path == "/changes" {
            Ok(None)
        } else {
            self.inflight
                .try_acquire()
                .map(Some)
                .map_err(|_| Error::Overloaded {
                    what: "client requests in flight",
                    key: "max_inflight",
                    limit: self.limits.max_inflight,
                })
        };
        let method = match head {
            true => "HEAD",
            false => req.method().as_str(),
        };
        let method = routes::METHODS
            .iter()
            .copied()
            .find(|m| *m == method)
            .unwrap_or("other");
        let admitted = permit.and_then(|permit| self.uri_fits(&req).map(|()| permit));
        let response = match admitted {
            Ok(_permit) => match self.route(found, method, &path, req).await {
                Ok(response) => response,
                Err(e) => {
                    if e.status().is_server_error() {
                        tracing::warn!(error = %e, %path, "request failed");
                    }
                    response::error(&e)
                }
            },
            Err(e) => response::error(&e),
        };
        if let Some((route, _)) = found {
            self.undeclared
                .check(route, method, response.status().as_u16());
        }
        let mut response = response;
        if head {
            without_body(&mut response);
        }
        if path == crate::peer::PEER_PATH {
            // Every peer answer, a refusal too, says what this node speaks.
            response.headers_mut().insert(
                crate::peer::versions::PROTOCOL_HEADER,
                http::HeaderValue::from(self.services.protocol()),
            );
        }
        static REQUESTS: m::Handles<(&str, u16, &str), metrics::Counter> = m::Handles::new();
        static DURATIONS: m::Handles<&str, metrics::Histogram> = m::Handles::new();
        let status = response.status();
        REQUESTS
            .get((op, status.as_u16(), quorum), || {
                let status = status_label(status);
                metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "status" => status, "quorum" => quorum)
            })
            .increment(1);
        DURATIONS
            .get(
                op,
                || metrics::histogram!(m::REQUEST_DURATION_SECONDS, "op" => op),
            )
            .record(started.elapsed().as_secs_f64());
        response
    }

    /// Samples what gauges show, once per scrape: the store, hints, the
    /// ring as this node sees it, and the process.
    fn record_gauges(&self) {
        let stats = self.store.stats();
        metrics::gauge!(m::STORE_KEYS).set(stats.keys as f64);
        metrics::gauge!(m::STORE_DISK_BYTES).set(stats.disk_bytes as f64);
        metrics::gauge!(m::HINTS_PENDING).set(self.replica.hints_pending() as f64);
        let (watchers, watch_bytes) = self.watch.watchers().load();
        metrics::gauge!(m::WATCHERS).set(watchers as f64);
        metrics::gauge!(m::WATCH_BYTES).set(watch_bytes as f64);
        let members = self.cluster.roster().members();
        for (status, label) in [
            (Status::Active, "active"),
            (Status::Leaving, "leaving"),
            (Status::Removed, "removed"),
        ] {
            let count = members.iter().filter(|m| m.status == status).count();
            metrics::gauge!(m::RING_MEMBERS, "status" => label).set(count as f64);
        }
        let mut liveness = [0u32; 3];
        for member in members.iter().filter(|m| m.status != Status::Removed) {
            liveness[match self.cluster.detector().liveness(&member.id) {
                Liveness::Up => 0,
                Liveness::Down => 1,
                Liveness::Unknown => 2,
            }] += 1;
        }
        for (count, label) in liveness.iter().zip(["up", "down", "unknown"]) {
            metrics::gauge!(m::MEMBERS_LIVENESS, "liveness" => label).set(f64::from(*count));
        }
        let ring = self.cluster.routes().ring();
        metrics::gauge!(m::RING_OWNERSHIP).set(ring.ownership(&self.node));
        let tokens = members.get(&self.node).map_or(0, |m| m.tokens.len());
        metrics::gauge!(m::RING_TOKENS).set(tokens as f64);
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        metrics::gauge!(m::RUNTIME_WORKERS).set(workers as f64);
        crate::metrics::collect_process();
    }

    /// Lets the request through when no tokens are configured, when the
    /// route is open, or when its bearer token has the route's scope.
    fn authorize(&self, path: &str, req: &Request<Incoming>) -> Result<()> {
        use crate::security::tokens::{Denied, Scope};
        if self.tokens.is_empty() {
            return Ok(());
        }
        let open = |route| self.open_routes.contains(&route);
        let needs: &[Scope] = match path {
            crate::peer::PEER_PATH => return Ok(()),
            "/health" if open(crate::config::OpenRoute::Health) => return Ok(()),
            "/metrics" if open(crate::config::OpenRoute::Metrics) => return Ok(()),
            "/health" | "/metrics" => &[Scope::Monitor],
            "/cluster" => &[Scope::Admin],
            // Any known token: each op checks its own scope (batch.rs).
            "/batch" => &[],
            p if p.starts_with("/admin/") => &[Scope::Admin],
            // A write that answers with the key's siblings reads them:
            // other writers' values, which `write` alone must not see.
            p if is_key_route(p)
                && req.method() != Method::GET
                && asks_returnbody(req.uri().query()) =>
            {
                &[Scope::Write, Scope::Read]
            }
            p if is_key_route(p) && req.method() != Method::GET => &[Scope::Write],
            _ => &[Scope::Read],
        };
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        let refused = |reason: &'static str| {
            metrics::counter!(m::CLIENT_AUTH_REFUSED_TOTAL, "reason" => reason).increment(1);
        };
        match self.tokens.authorize(header, needs) {
            Ok(_) => Ok(()),
            Err(Denied::Unauthenticated(why)) => {
                refused("unauthenticated");
                Err(Error::Unauthenticated(why))
            }
            Err(Denied::Forbidden { token, needs }) => {
                refused("forbidden");
                Err(Error::Forbidden {
                    token,
                    needs: needs.name(),
                })
            }
        }
    }

    /// Refuses a URI over the limit with a JSON 414 (over hyper's own
    /// limit, 64 KiB, hyper answers a bare one before a request exists).
    fn uri_fits(&self, req: &Request<Incoming>) -> Result<()> {
        let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        let max = max_uri_bytes(self.limits.max_key_bytes);
        match len > max {
            true => Err(Error::UriTooLong { len, max }),
            false => Ok(()),
        }
    }

    /// Serves `req` on its route; `method` is the one it came with (a
    /// HEAD's, which `req` carries as a GET).
    async fn route(
        &self,
        found: Option<(&'static Route, &str)>,
        method: &str,
        path: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Body>> {
        self.authorize(path, &req)?;
        let Some((route, param)) = found else {
            return Err(Error::NoRoute(path.to_string()));
        };
        if route.operation(method).is_none() {
            let method = match method {
                "other" => req.method().to_string(),
                known => known.to_string(),
            };
            return Err(Error::MethodNotAllowed {
                method,
                allowed: route.allow,
            });
        }
        // A route without parameters refuses every one by name; the others'
        // handlers say which they take.
        let takes_none = matches!(
            route.handler,
            Handler::Health
                | Handler::Metrics
                | Handler::Cluster
                | Handler::Leave
                | Handler::Remove
                | Handler::Rebuild
                | Handler::Replica
        );
        if takes_none {
            no_parameters(req.uri().query())?;
        }
        // Each handler's future is boxed: a request's future is then the
        // size of the handler it runs, not of the largest one (a batch's or
        // a scan's). A watcher or a feed reader waits for minutes, and
        // there may be thousands: this kept 8.7 KiB of each (docs/benchmarks.md,
        // "Watchers").
        match route.handler {
            Handler::Key if is_watch(&req) => Box::pin(watching::handle(self, param, req)).await,
            Handler::Key => Box::pin(kv::handle(self, param, req)).await,
            Handler::Crdt => Box::pin(crdt::handle(self, param, req)).await,
            Handler::Replica => replica_view::get(self, param),
            Handler::Remove => admin::remove(self, param),
            Handler::Peer => Box::pin(peer::handle(self, req)).await,
            Handler::Batch => Box::pin(batch::handle(self, req)).await,
            Handler::Changes => Box::pin(changes::handle(self, req)).await,
            Handler::Scan => Box::pin(scan::handle(self, req)).await,
            Handler::Cluster => admin::cluster(self),
            Handler::Leave => admin::leave(self),
            Handler::Rebuild => admin::rebuild_trees(self),
            Handler::Health => {
                let body = serde_json::json!({ "status": "ok", "node": self.node });
                Ok(response::json(
                    StatusCode::OK,
                    Bytes::from(body.to_string()),
                ))
            }
            Handler::Metrics => {
                self.record_gauges();
                let mut response = response::empty(StatusCode::OK);
                *response.body_mut() = Body::new(Bytes::from(self.metrics.render()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                Ok(response)
            }
        }
    }
}

/// The longest URI (path and query) a request may have: room for a key
/// and three scan bounds, percent-encoded, and a cursor; at most hyper's
/// own limit (64 KiB less 2 bytes), over which hyper answers without a
/// JSON body.
pub fn max_uri_bytes(max_key_bytes: usize) -> usize {
    max_key_bytes
        .saturating_mul(16)
        .saturating_add(4096)
        .min(65_534)
}

/// Whether this node may take a write that needs peer protocol
/// `protocol` (a TTL: [`EXPIRING_PROTOCOL`]; a CRDT update:
/// [`CRDT_PROTOCOL`]): it writes a sibling nodes before it cannot decode,
/// so every member must speak it (and have been heard saying so).
/// Otherwise a retryable 503 that names the member holding it back and
/// `what` waits for it.
///
/// [`EXPIRING_PROTOCOL`]: crate::peer::versions::EXPIRING_PROTOCOL
/// [`CRDT_PROTOCOL`]: crate::peer::versions::CRDT_PROTOCOL
fn cluster_speaks(api: &Api, protocol: u16, what: &str) -> Result<()> {
    let needs = |node: &str, speaks: String| Error::Unavailable {
        node: node.to_string(),
        reason: format!(
            "{speaks}; {what} needs every node at peer protocol {protocol} \
             (an upgrade is under way, or cluster.protocol pins an older one: docs/operations.md)"
        ),
    };
    if api.versions.mine() < protocol {
        let speaks = format!("this node speaks peer protocol {}", api.versions.mine());
        return Err(needs(&api.node, speaks));
    }
    for member in api.cluster.roster().members().iter() {
        if member.status == Status::Removed || member.id == api.node {
            continue;
        }
        match api.versions.of(&member.id) {
            Some(p) if p >= protocol => {}
            Some(p) => return Err(needs(&member.id, format!("it speaks peer protocol {p}"))),
            None => return Err(needs(&member.id, "it has not been heard from yet".into())),
        }
    }
    Ok(())
}

/// Whether a request is a watch: `GET /kv/{key}?watch=true` (or `watch`
/// with no value).
fn is_watch(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET
        && req.uri().path().starts_with("/kv/")
        && form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .any(|(name, value)| name == "watch" && value != "false")
}

/// A route of one key: `/kv/{key}` or `/crdt/{key}`.
fn is_key_route(path: &str) -> bool {
    path.starts_with("/kv/") || path.starts_with("/crdt/")
}

/// Whether a query asks for the body back: `returnbody` with any value but
/// `false` (a value the route refuses is refused after authorization, so
/// it is counted as asking here).
fn asks_returnbody(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(name, value)| name == "returnbody" && value != "false")
}

/// The answer to a HEAD: the GET's status and headers, its body's length
/// in `Content-Length`, and no body.
fn without_body(response: &mut Response<Body>) {
    use hyper::body::Body as _;
    let length = response.body().size_hint().exact().unwrap_or(0);
    response
        .headers_mut()
        .entry(http::header::CONTENT_LENGTH)
        .or_insert_with(|| http::HeaderValue::from(length));
    *response.body_mut() = Body::new(Bytes::new());
}

/// A route that takes no query parameter refuses one by name, as `/kv`
/// refuses a parameter it does not know.
fn no_parameters(query: Option<&str>) -> Result<()> {
    match form_urlencoded::parse(query.unwrap_or("").as_bytes()).next() {
        Some((name, _)) => Err(Error::bad_parameter(
            &name,
            "unknown parameter; this route takes none",
        )),
        None => Ok(()),
    }
}

/// The `status` label without an allocation for the statuses chorus sends.
fn status_label(status: StatusCode) -> metrics::SharedString {
    let known = match status.as_u16() {
        200 => "200",
        202 => "202",
        204 => "204",
        300 => "300",
        304 => "304",
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        401 => "401",
        403 => "403",
        409 => "409",
        412 => "412",
        413 => "413",
        410 => "410",
        414 => "414",
        415 => "415",
        422 => "422",
        500 => "500",
        503 => "503",
        other => return other.to_string().into(),
    };
    known.into()
}

/// The `quorum` label: what a read asked for as `r`, a write as `w`
/// (`default` when not given), from a small fixed set whatever the client
/// sends; empty for other routes.
fn quorum_label(op: &str, query: Option<&str>) -> &'static str {
    let wanted = match op {
        "get" | "scan" | "crdt_get" | "watch" => "r",
        "put" | "delete" | "crdt_update" => "w",
        _ => return "",
    };
    let value = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, _)| name == wanted)
        .map(|(_, value)| value.into_owned());
    const KNOWN: &[&str] = &[
        "one", "quorum", "all", "default", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    ];
    match value {
        None => "default",
        Some(v) => KNOWN.iter().find(|k| **k == v).copied().unwrap_or("other"),
    }
}

/// The `op` label: a small fixed set, whatever the client sends, from the
/// route the request found (the table's, not a second reading of the path).
fn operation(method: &Method, handler: Option<Handler>) -> &'static str {
    let Some(handler) = handler else {
        return "other";
    };
    match (handler, method) {
        (Handler::Key, &Method::GET) => "get",
        (Handler::Key, &Method::PUT) => "put",
        (Handler::Key, &Method::DELETE) => "delete",
        (Handler::Crdt, &Method::GET) => "crdt_get",
        (Handler::Crdt, &Method::POST) => "crdt_update",
        (Handler::Key | Handler::Crdt, _) => "other",
        (Handler::Batch, _) => "batch",
        (Handler::Changes, _) => "changes",
        (Handler::Scan, _) => "scan",
        (Handler::Health, _) => "health",
        (Handler::Metrics, _) => "metrics",
        (Handler::Peer, _) => "peer",
        (
            Handler::Cluster
            | Handler::Leave
            | Handler::Remove
            | Handler::Rebuild
            | Handler::Replica,
            _,
        ) => "admin",
    }
}
