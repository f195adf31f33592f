//! `POST /peer`: the node-to-node protocol's server side.
//!
//! A request names its service and version in `x-chorus-rpc`; its body is
//! the postcard request, of at most the peer message limit. The answer is
//! the postcard reply, always with status 200 once the request decoded (a
//! handler's error travels inside, with its own status and code). A body
//! that does not decode, a service or version this node does not speak, or
//! a request refused for load is a JSON error like any other.
//!
//! Before a byte of the body is read, its authentication is checked from
//! the headers ([`crate::security::peer`]): a request without a valid MAC
//! under the cluster secret, signed for another node or service, with a
//! stale timestamp or a nonce seen before is a 401 `peer_unauthenticated`,
//! and its body is never read. Then the request takes room among
//! `limits.max_peer_inflight` requests and `limits.max_peer_inflight_bytes`
//! bytes (its signed length), or is a 503 `overloaded`; the body read must
//! have exactly the signed length and digest. A request signed for any
//! receiver is applied only as a join.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;

use super::Api;
use super::kv::read_body;
use super::response::{self, Body};
use crate::error::{Error, Result};
use crate::peer::PEER_CONTENT_TYPE;
use crate::peer::rpc::{self, RPC_HEADER};
use crate::peer::stream;
use crate::security::peer::Verified;
use crate::security::peer_auth::{AUTH_HEADER, hex};

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    if req.headers().contains_key(header::UPGRADE) {
        return accept_stream(api, req);
    }
    let headers = req.headers();
    let auth = headers.get(AUTH_HEADER).map(|v| v.as_bytes());
    let Some(rpc_header) = headers.get(RPC_HEADER) else {
        return Err(Error::BodyRead(format!(
            "no {RPC_HEADER} header: a peer request names its service (a node of an older build?)"
        )));
    };
    let (service, version) = rpc::parse_header(rpc_header.as_bytes())?;
    // Parsed, so ASCII.
    let rpc_text = rpc_header.to_str().unwrap_or_default();
    // The credentials are checked from the headers alone, before a byte of
    // the body is read: a stranger's body is never read.
    let head = api.peer_auth.verify_head(auth, rpc_text)?;
    let max = api.max_peer_message;
    let declared = match headers.get(CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::BodyRead("Content-Length is not a number".into()))?,
        ),
    };
    if let Some(declared) = declared {
        api.peer_auth.verify_length(&head, declared)?;
    }
    let len = head.signed_len().or(declared);
    if let Some(len) = len
        && len > max as u64
    {
        return Err(Error::PeerMessageTooLarge { len, max });
    }
    // Room for the request before its body is read: a count, and its
    // bytes (the whole limit when the length is not known in advance).
    let _request = api
        .peer_inflight
        .try_acquire()
        .map_err(|_| Error::Overloaded {
            what: "peer requests",
            key: "max_peer_inflight",
            limit: api.limits.max_peer_inflight,
        })?;
    let bytes = len.unwrap_or(max as u64).min(u64::from(u32::MAX)) as u32;
    let wait = Duration::from_millis(api.limits.body_timeout_ms);
    let overloaded = || Error::Overloaded {
        what: "bytes of peer requests",
        key: "max_peer_inflight_bytes",
        limit: api.limits.max_peer_inflight_bytes as usize,
    };
    // Room is there almost always: only then wait, with a timer.
    let _bytes = match api.peer_bytes.try_acquire_many(bytes) {
        Ok(permit) => permit,
        Err(_) => match tokio::time::timeout(wait, api.peer_bytes.acquire_many(bytes)).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(overloaded()),
        },
    };
    let limit = len.map_or(max, |len| len as usize);
    let body = read_body(req, limit, api.limits.body_timeout_ms)
        .await
        .map_err(|e| match e {
            Error::ValueTooLarge { .. } => Error::PeerMessageTooLarge {
                len: limit as u64 + 1,
                max,
            },
            e => e,
        })?;
    // Nothing of the body is believed, not even decoded, before this.
    api.peer_auth.verify_body(&head, &body)?;
    let to_any = head.verified == Verified::ToAny;
    let bytes = crate::peer::dispatch(&api.services, &service, version, to_any, body)?.await?;
    Ok(peer_reply(bytes))
}

/// A `POST /peer` that asks to become a peer stream (`peer::stream`):
/// checked as every peer request is, with an empty body, then answered
/// `101 Switching Protocols`; the stream is served on its own task once
/// hyper hands the connection over.
fn accept_stream(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    let headers = req.headers();
    let upgrade = headers.get(header::UPGRADE).map(|v| v.as_bytes());
    if upgrade != Some(stream::UPGRADE.as_bytes()) {
        return Err(Error::BodyRead(format!(
            "a peer request may only upgrade to {}",
            stream::UPGRADE
        )));
    }
    if api.versions.mine() < stream::STREAM_PROTOCOL {
        // Pinned to an older protocol (`cluster.protocol`): as a node of
        // the older build would, it does not know the service.
        return Err(Error::UnknownService(stream::SERVICE.to_string()));
    }
    let rpc_header = headers.get(RPC_HEADER).map(|v| v.as_bytes());
    if rpc_header != Some(stream::SERVICE.as_bytes()) {
        return Err(Error::BodyRead(format!(
            "a stream's opening request names {RPC_HEADER}: {}",
            stream::SERVICE
        )));
    }
    let auth = headers.get(AUTH_HEADER).map(|v| v.as_bytes());
    let head = api.peer_auth.verify_head(auth, stream::SERVICE)?;
    if head.verified == Verified::ToAny {
        return Err(Error::PeerUnauthenticated(
            "a stream opened for any receiver; only a join may be".into(),
        ));
    }
    let empty = |name: header::HeaderName| {
        headers
            .get(&name)
            .is_none_or(|v| name == CONTENT_LENGTH && v.as_bytes() == b"0")
    };
    if head.signed_len().is_some_and(|len| len != 0)
        || !empty(CONTENT_LENGTH)
        || !empty(header::TRANSFER_ENCODING)
    {
        return Err(Error::BodyRead(
            "a stream's opening request has an empty body".into(),
        ));
    }
    // A stream holds its permit for its life: the streams a node serves are
    // bounded like its connections, and its shutdown waits for them.
    let permit = Arc::clone(&api.peer_streams)
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded {
            what: "peer streams",
            key: "max_connections",
            limit: api.limits.max_connections,
        })?;
    let keyed = api.peer_auth.stream_key(auth);
    let receiver = stream::serve::Receiver {
        services: Arc::clone(&api.services),
        bytes: Arc::clone(&api.peer_bytes),
        max_bytes: api.limits.max_peer_inflight_bytes,
        max_message: api.max_peer_message,
        timeout: api.peer_timeout,
        stopped: api.stopped.clone(),
    };
    let upgrading = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _permit = permit;
        match upgrading.await {
            Ok(upgraded) => {
                let io: Box<dyn stream::Io> = Box::new(TokioIo::new(upgraded));
                stream::serve::serve(io, keyed.map(|(_, key)| key), receiver).await;
            }
            Err(e) => tracing::debug!(error = %e, "a peer stream's upgrade failed"),
        }
    });
    let mut response = response::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static(stream::UPGRADE),
    );
    if let Some((nonce, _)) = keyed
        && let Ok(value) = header::HeaderValue::from_str(&hex(&nonce))
    {
        headers.insert(stream::NONCE_HEADER, value);
    }
    Ok(response)
}

/// A 200 carrying a reply's bytes.
fn peer_reply(bytes: Bytes) -> Response<Body> {
    let mut response = response::empty(StatusCode::OK);
    *response.body_mut() = Body::new(bytes);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(PEER_CONTENT_TYPE),
    );
    response
}
