//! `POST /peer`: the node-to-node protocol's server side.
//!
//! The body is a postcard [`PeerRequest`] of at most the peer message limit;
//! the answer a postcard [`WireReply`], always with status 200 once the
//! request decoded (errors travel inside, with their own status and code).
//! A body that does not decode is a 400 JSON error like any other.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::Api;
use super::kv::read_body;
use super::response::{self, Body};
use crate::error::{Error, Result};
use crate::peer::{ClientOp, PEER_CONTENT_TYPE, PeerRequest, PeerResponse, WireError, WireReply};

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed {
            method: req.method().to_string(),
            allowed: "POST",
        });
    }
    let body = read_body(req, api.max_peer_message, api.limits.body_timeout_ms).await?;
    let request = PeerRequest::decode(&body).map_err(|e| Error::BodyRead(e.to_string()))?;
    let reply: WireReply = dispatch(api, request)
        .await
        .map_err(|e| WireError::from_error(&e));
    let bytes = crate::peer::encode(&reply)?;
    let mut response = response::empty(StatusCode::OK);
    *response.body_mut() = Body::new(Bytes::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(PEER_CONTENT_TYPE),
    );
    Ok(response)
}

async fn dispatch(api: &Api, request: PeerRequest) -> Result<PeerResponse> {
    match request {
        r if r.is_for_replica() => api.replica.handle(r).await,
        PeerRequest::Chord(r) => Ok(PeerResponse::Chord(api.cluster.chord_answer(r))),
        PeerRequest::Forward(ClientOp::Read { key }) => {
            Ok(PeerResponse::Value(api.coordinator.read(&key, true).await?))
        }
        PeerRequest::Forward(ClientOp::Write {
            key,
            context,
            content,
        }) => {
            let written = api.coordinator.write(&key, context, content, true).await?;
            Ok(PeerResponse::Coordinated {
                dot: written.dot,
                set: written.set,
            })
        }
        PeerRequest::Join {
            id,
            addr,
            zone,
            weight,
        } => {
            let members = api.cluster.admit(&id, &addr, zone.as_deref(), weight)?;
            tracing::info!(node = %id, %addr, "admitted to the ring");
            Ok(PeerResponse::Members(members))
        }
        PeerRequest::Gossip(members) => {
            api.cluster.apply(&members)?;
            Ok(PeerResponse::Members(api.cluster.members()))
        }
        other => Err(Error::Protocol(format!(
            "no handler for {}",
            format!("{other:?}").chars().take(40).collect::<String>()
        ))),
    }
}
