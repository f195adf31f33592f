//! `POST /peer`: the node-to-node protocol's server side.
//!
//! The body is a postcard [`PeerRequest`] of at most the peer message limit;
//! the answer a postcard [`WireReply`], always with status 200 once the
//! request decoded (errors travel inside, with their own status and code).
//! A body that does not decode is a 400 JSON error like any other.
//!
//! Before the body is decoded, its authentication is checked
//! ([`crate::security::peer`]): a request without a valid MAC under the
//! cluster secret, signed for another node, with a stale timestamp or a
//! nonce seen before is a 401 `peer_unauthenticated`, and nothing of it is
//! applied. A request signed for any receiver is applied only as a join.

use bytes::Bytes;
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
use crate::version::MAX_REQUEST_ID;

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed {
            method: req.method().to_string(),
            allowed: "POST",
        });
    }
    let auth = req
        .headers()
        .get(crate::security::peer_auth::AUTH_HEADER)
        .map(|v| v.as_bytes().to_vec());
    let rpc = req
        .headers()
        .get(RPC_HEADER)
        .map(|v| rpc::parse_header(v.as_bytes()))
        .transpose()?;
    let body = read_body(req, api.max_peer_message, api.limits.body_timeout_ms).await?;
    // Nothing of the body is believed, not even decoded, before this.
    let verified = api
        .peer_auth
        .verify(auth.as_deref(), &body)
        .map_err(|refusal| Error::PeerUnauthenticated(refusal.to_string()))?;
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
