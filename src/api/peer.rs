//! `POST /peer`: the node-to-node protocol's server side.
//!
//! The body is a postcard [`PeerRequest`] of at most the peer message limit;
//! the answer a postcard [`WireReply`], always with status 200 once the
//! request decoded (errors travel inside, with their own status and code).
//! A body that does not decode is a 400 JSON error like any other.
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
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use std::time::Duration;

use tokio::time::Instant;

use super::Api;
use super::kv::{MAX_TIMEOUT_MS, read_body};
use super::response::{self, Body};
use crate::coordinator::Write;
use crate::coordinator::quorum::Quorum;
use crate::error::{Error, Result};
use crate::peer::rpc::{self, RPC_HEADER};
use crate::peer::{ClientOp, PEER_CONTENT_TYPE, PeerRequest, PeerResponse, WireError, WireReply};
use crate::security::peer::Verified;
use crate::security::peer_auth::AUTH_HEADER;
use crate::version::MAX_REQUEST_ID;

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed {
            method: req.method().to_string(),
            allowed: "POST",
        });
    }
    let headers = req.headers();
    let auth = headers.get(AUTH_HEADER).map(|v| v.as_bytes());
    let rpc_header = headers.get(RPC_HEADER).map(|v| v.as_bytes());
    let rpc = rpc_header.map(rpc::parse_header).transpose()?;
    // The credentials are checked from the headers alone, before a byte of
    // the body is read: a stranger's body is never read.
    let rpc_text = rpc_header.and_then(|v| std::str::from_utf8(v).ok());
    let head = api
        .peer_auth
        .verify_head(auth, rpc_text)
        .map_err(|refusal| Error::PeerUnauthenticated(refusal.to_string()))?;
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
        api.peer_auth
            .verify_length(&head, declared)
            .map_err(|refusal| Error::PeerUnauthenticated(refusal.to_string()))?;
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
    let _bytes = match tokio::time::timeout(wait, api.peer_bytes.acquire_many(bytes)).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(Error::Overloaded {
                what: "bytes of peer requests",
                key: "max_peer_inflight_bytes",
                limit: api.limits.max_peer_inflight_bytes as usize,
            });
        }
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
    api.peer_auth
        .verify_body(&head, &body)
        .map_err(|refusal| Error::PeerUnauthenticated(refusal.to_string()))?;
    let verified = head.verified;
    if let Some((service, version)) = rpc {
        let to_any = verified == Verified::ToAny;
        let bytes = api
            .services
            .dispatch(&service, version, to_any, body)?
            .await?;
        return Ok(peer_reply(bytes));
    }
    let request = PeerRequest::decode(&body).map_err(|e| Error::BodyRead(e.to_string()))?;
    if verified == Verified::ToAny {
        // Only a join goes to an address; anything else signed for any
        // receiver could be replayed to every node.
        return Err(Error::PeerUnauthenticated(format!(
            "a {} request signed for any receiver; only a join may be",
            request.kind()
        )));
    }
    let reply: WireReply = dispatch(api, request)
        .await
        .map_err(|e| WireError::from_error(&e));
    let bytes = crate::peer::encode(&reply)?;
    Ok(peer_reply(Bytes::from(bytes)))
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

async fn dispatch(api: &Api, request: PeerRequest) -> Result<PeerResponse> {
    match request {
        r if r.is_for_replica() => api.replica.handle(r).await,
        PeerRequest::Forward(ClientOp::Read {
            key,
            quorum,
            timeout_ms,
            session,
        }) => {
            let deadline = forwarded_deadline(api, &quorum, timeout_ms)?;
            let set = api
                .coordinator
                .read(&key, quorum, deadline, session, true)
                .await?;
            Ok(PeerResponse::Value(set))
        }
        PeerRequest::Forward(ClientOp::Write {
            key,
            context,
            content,
            quorum,
            timeout_ms,
            request_id,
        }) => {
            let deadline = forwarded_deadline(api, &quorum, timeout_ms)?;
            if request_id
                .as_ref()
                .is_some_and(|id| id.len() > MAX_REQUEST_ID)
            {
                return Err(Error::Protocol("a request id over 128 bytes".into()));
            }
            let write = Write {
                context,
                content,
                request_id,
            };
            let written = api
                .coordinator
                .write(&key, write, quorum, deadline, true)
                .await?;
            // The forwarding node only relays the outcome: the quorum
            // counted here, so `kept` says nothing about this node.
            Ok(PeerResponse::Coordinated {
                dot: written.dot,
                set: written.set,
                kept: Ok(true),
            })
        }
        other => Err(Error::Protocol(format!(
            "no handler for {}",
            format!("{other:?}").chars().take(40).collect::<String>()
        ))),
    }
}

/// The deadline of a forwarded request, after checking what the peer sent.
fn forwarded_deadline(api: &Api, quorum: &Quorum, timeout_ms: u64) -> Result<Instant> {
    quorum.check(api.cluster.n())?;
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(Error::Protocol(format!(
            "a forwarded timeout of {timeout_ms} ms"
        )));
    }
    Ok(Instant::now() + Duration::from_millis(timeout_ms))
}
