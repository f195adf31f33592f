//! Opening a stream: the upgraded `POST /peer`, its authentication, and
//! the session key from the receiver's nonce (`super`, the module doc).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::{Dial, Io, NONCE_HEADER, SERVICE, UPGRADE};
use crate::error::{Error, Result};
use crate::peer::rpc::RPC_HEADER;
use crate::peer::versions::{self, PROTOCOL_HEADER, Versions};
use crate::peer::{PEER_PATH, connect_timeout, refused};
use crate::security::peer::Signer;
use crate::security::peer_auth::{AUTH_HEADER, unhex};

/// What opening a stream needs: how to dial, the scheme, what signs the
/// opening request, where peers' protocols are kept, the peer timeout and
/// the peer message limit.
pub struct Opener {
    pub dial: Dial,
    pub scheme: &'static str,
    pub signer: Option<Arc<Signer>>,
    pub versions: Arc<Versions>,
    pub timeout: Duration,
    pub max_message: usize,
}

/// A refusal of the opening request is read up to this many bytes.
const MAX_REFUSAL: usize = 64 << 10;

impl Opener {
    /// Opens a stream to `node` at `addr`: its connection and its session
    /// key (none without a cluster secret).
    pub(super) async fn open(
        &self,
        node: &str,
        addr: &str,
    ) -> Result<(Box<dyn Io>, Option<[u8; 32]>)> {
        let unavailable = |reason: String| Error::Unavailable {
            node: node.to_string(),
            reason: format!("opening a stream: {reason}"),
        };
        let uri: http::Uri = format!("{}://{addr}{PEER_PATH}", self.scheme)
            .parse()
            .map_err(|e| unavailable(format!("bad address `{addr}`: {e}")))?;
        let dialled = tokio::time::timeout(connect_timeout(self.timeout), (self.dial)(uri))
            .await
            .map_err(|_| unavailable("no connection within the connect timeout".into()))?
            .map_err(|e| unavailable(crate::error::chain(&*e)))?;
        let opening = async {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(dialled)
                .await
                .map_err(|e| unavailable(crate::error::chain(&e)))?;
            tokio::spawn(async move {
                let _ = connection.with_upgrades().await;
            });
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(PEER_PATH)
                .header(header::HOST, addr)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, UPGRADE)
                .header(header::CONTENT_LENGTH, 0)
                .header(RPC_HEADER, SERVICE);
            let mut auth = None;
            if let Some(signer) = &self.signer {
                let signed = signer.sign(node, SERVICE, b"");
                req = req.header(AUTH_HEADER, &signed);
                auth = Some((signer, signed));
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| unavailable(e.to_string()))?;
            let response = sender
                .send_request(req)
                .await
                .map_err(|e| unavailable(crate::error::chain(&e)))?;
            if let Some(protocol) = versions::advertised(
                response
                    .headers()
                    .get(PROTOCOL_HEADER)
                    .map(|v| v.as_bytes()),
            ) {
                self.versions.heard(node, protocol);
            }
            let status = response.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                let nonce = response
                    .headers()
                    .get(NONCE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(unhex);
                let key = match (auth, nonce) {
                    (None, _) => None,
                    (Some((signer, signed)), Some(nonce)) => {
                        Some(signer.session_key(&signed, &nonce))
                    }
                    // It took the stream unsigned: it has no secret, and
                    // would read the frames' MACs as their bytes.
                    (Some(_), None) => {
                        return Err(unavailable(
                            "it accepted without a nonce: it has no security.peer_secret".into(),
                        ));
                    }
                };
                let upgraded = hyper::upgrade::on(response)
                    .await
                    .map_err(|e| unavailable(crate::error::chain(&e)))?;
                return Ok((Box::new(TokioIo::new(upgraded)) as Box<dyn Io>, key));
            }
            let body = Limited::new(response.into_body(), MAX_REFUSAL)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Err(match refused(node, status, &body) {
                Error::Remote { message, .. } => unavailable(message),
                e => e,
            })
        };
        tokio::time::timeout(self.timeout, opening)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
    }
}
