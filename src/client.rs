//! A small HTTP client for the chorus API: the CLI verbs, the benchmark and
//! the tests use it. Pooled keep-alive connections with TCP_NODELAY, over
//! TLS for `https://` URLs (trusting the CA it is given, else the
//! platform's roots).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::api::CONTEXT_HEADER;
use crate::error::{Error, Result};
use crate::security::tls;

/// How long an idle connection is kept for reuse: under the server's
/// default `limits.header_timeout_ms`, so the client drops it first.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where `chorus dev` serves its first node: the default of every client verb.
pub const DEV_URL: &str = "http://127.0.0.1:7001";

/// Characters left as they are in a key's path segment; all else is escaped.
const KEY_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The path of `key` under `/kv/`, percent-encoded.
pub fn key_path(key: &str) -> String {
    format!("/kv/{}", utf8_percent_encode(key, KEY_SAFE))
}

/// The path of a CRDT key: `/crdt/` and the key, percent-encoded.
pub fn crdt_path(key: &str) -> String {
    format!("/crdt/{}", utf8_percent_encode(key, KEY_SAFE))
}

/// The path of a change feed page: `GET /changes` with `since` (`now` or
/// a cursor), a prefix and how long to wait (ms; 0 answers at once).
pub fn changes_path(prefix: &str, since: &str, timeout_ms: u64) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("prefix", prefix)
        .append_pair("since", since)
        .append_pair("timeout_ms", &timeout_ms.to_string())
        .finish();
    format!("/changes?{query}")
}

/// The path of a scan page (`GET /kv`) with the parameters given.
pub fn scan_path(params: &[(&str, Option<&str>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    format!("/kv?{}", query.finish())
}

/// What a request got back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn context(&self) -> Option<&str> {
        self.headers
            .get(CONTEXT_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The connector of [`Client::new`]: TCP, with TLS for `https://`.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone)]
pub struct Client<C = Connector> {
    pool: Pool<C, Full<Bytes>>,
    base: String,
    /// `Authorization` sent with every request, when the cluster has tokens.
    authorization: Option<String>,
}

/// The environment variable the CLI reads a bearer token from.
pub const TOKEN_ENV: &str = "CHORUS_TOKEN";
/// The environment variable naming the PEM file of the CA the CLI trusts
/// for `https://` URLs (the cluster's `security.tls.ca`).
pub const CA_ENV: &str = "CHORUS_CA";

impl Client {
    /// A client for the node at `base` (for example `http://127.0.0.1:7001`);
    /// an `https://` base is verified against the platform's roots.
    pub fn new(base: &str) -> Client {
        let roots = if base.starts_with("https://") {
            tls::platform_roots()
        } else {
            rustls::RootCertStore::empty()
        };
        Client::trusting(base, roots)
    }

    /// A client that trusts only the CA certificates in the PEM file `ca`.
    pub fn with_ca(base: &str, ca: &Path) -> Result<Client> {
        Ok(Client::trusting(base, tls::roots(CA_ENV, ca)?))
    }

    fn trusting(base: &str, roots: rustls::RootCertStore) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        // Only https:// URLs reach TLS: http:// ones stay plain.
        connector.enforce_http(false);
        let config = tls::client_config(roots);
        Client::with_connector(base, tls::connector(connector, config, false))
    }

    /// A client for the command line: trusting the CA in `CHORUS_CA` when
    /// it is set, with the bearer token in `CHORUS_TOKEN` when that is.
    pub fn cli(base: &str) -> Result<Client> {
        check_url(base)?;
        let client = match std::env::var_os(CA_ENV).filter(|v| !v.is_empty()) {
            Some(ca) => Client::with_ca(base, Path::new(&ca))?,
            None => Client::new(base),
        };
        Ok(client.with_token(std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())))
    }
}

/// A `--url` the CLI can use: `http://` or `https://`, a host and a port
/// (or none), and no path; every refusal says what to write instead.
fn check_url(base: &str) -> Result<()> {
    let bad = |reason: String| Error::BadParameter {
        name: "url".into(),
        reason,
    };
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(bad(format!(
            "`{base}` has no scheme; write http://{base} (https:// for a cluster with [security.tls])"
        )));
    }
    let uri: http::Uri = base.parse().map_err(|e| {
        bad(format!(
            "`{base}` is not a URL ({e}); write http://host:port"
        ))
    })?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad(format!(
            "`{base}` names no host; write http://host:port"
        )));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(format!(
            "`{base}` has a path; --url is the node's address only, http://host:port"
        )));
    }
    Ok(())
}

impl<C> Client<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A client that connects through `connector` (the simulation's).
    pub fn with_connector(base: &str, connector: C) -> Client<C> {
        // A node closes a connection that sits idle longer than
        // `limits.header_timeout_ms` (5 s by default); a request sent on it
        // just then fails ("connection closed before message completed").
        // Idle connections are dropped here first.
        let pool = Pool::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Client {
            pool,
            base: base.trim_end_matches('/').to_string(),
            authorization: None,
        }
    }

    /// The URL the client sends to, such as `http://127.0.0.1:7001`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client<C> {
        self.authorization = token.map(|t| format!("Bearer {t}"));
        self
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            builder = builder.header(http::header::AUTHORIZATION, authorization);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| Error::BadParameter {
                name: "url".into(),
                reason: e.to_string(),
            })?;
        let response = self
            .pool
            .request(request)
            .await
            .map_err(|e| Error::Unreachable {
                url: self.base.clone(),
                reason: crate::error::chain(&e),
            })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Error::BodyRead(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn put(
        &self,
        key: &str,
        json: impl Into<Bytes>,
        context: Option<&str>,
    ) -> Result<Reply> {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(context.map(|c| (CONTEXT_HEADER, c)));
        self.request(Method::PUT, &key_path(key), &headers, json.into())
            .await
    }

    pub async fn get(&self, key: &str) -> Result<Reply> {
        self.request(Method::GET, &key_path(key), &[], Bytes::new())
            .await
    }

    pub async fn delete(&self, key: &str, context: Option<&str>) -> Result<Reply> {
        let headers: Vec<_> = context.map(|c| (CONTEXT_HEADER, c)).into_iter().collect();
        self.request(Method::DELETE, &key_path(key), &headers, Bytes::new())
            .await
    }

    /// `GET /crdt/{key}`: a counter's or a set's state.
    pub async fn crdt(&self, key: &str) -> Result<Reply> {
        self.request(Method::GET, &crdt_path(key), &[], Bytes::new())
            .await
    }

    /// `GET /changes`: the changes under `prefix` after `since` (`now`, or
    /// the `next` of an earlier page), waiting up to `timeout_ms` for one.
    pub async fn changes(&self, prefix: &str, since: &str, timeout_ms: u64) -> Result<Reply> {
        let path = changes_path(prefix, since, timeout_ms);
        self.request(Method::GET, &path, &[], Bytes::new()).await
    }

    /// `POST /crdt/{key}` with one update (`{"type":"counter","increment":1}`),
    /// and the context of a read for a set's remove.
    pub async fn crdt_update(
        &self,
        key: &str,
        update: &serde_json::Value,
        context: Option<&str>,
    ) -> Result<Reply> {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(context.map(|c| (CONTEXT_HEADER, c)));
        let body = Bytes::from(update.to_string());
        self.request(Method::POST, &crdt_path(key), &headers, body)
            .await
    }
}
