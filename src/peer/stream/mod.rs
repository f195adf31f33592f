//! One stream per peer for the small, frequent calls of client reads and
//! writes (the batchable services: `replica.read`, `replica.merge`,
//! `replica.hint`), and the replicas' parts of client scans (`replica.scan`).
//!
//! Why: over HTTP/2 each of those calls was a request of its own, and the
//! stream state, HPACK, the task per stream and the wake-ups cost both
//! ends more CPU than the few hundred bytes the call carries (about 32 µs
//! of a three-node PUT's 165 at the peak, 99 at half of it;
//! docs/benchmarks.md). Cassandra and Scylla carry their verbs the same
//! way: length-prefixed frames with a call id on a long-lived connection,
//! whatever is queued written with one syscall.
//!
//! How a stream opens: the sender posts an authenticated `POST /peer` for
//! service [`SERVICE`] with an empty body and `Upgrade: chorus-peer/1`
//! (HTTP/1.1, inside TLS when the cluster has it, over the simulated
//! network in the simulation). The receiver checks the request as it
//! checks every peer request (MAC, receiver, skew, replay window), and
//! answers `101 Switching Protocols`; from then on the connection carries
//! [`codec`] frames in both directions. A peer that does not speak
//! [`STREAM_PROTOCOL`] is never asked (`versions`); its calls stay on HTTP/2
//! ([`super::batch`]).
//!
//! Integrity without TLS: with a cluster secret, both ends derive a session
//! key from it, the opening request's signed header (accepted once) and a
//! nonce the receiver sends back in its `101` ([`NONCE_HEADER`]), and every
//! frame carries a MAC over its bytes, its direction and its implicit
//! sequence number. A frame changed, dropped, replayed or moved to another
//! stream fails its MAC and closes the stream. A sender with a secret closes
//! a stream accepted without a nonce (a receiver with no secret would read
//! the MACs as the calls' bytes). With TLS, TLS hides the bytes too.
//!
//! Bounds: a frame carries at most the peer message limit (refused from its
//! length, before it is buffered). The sender keeps a window per stream:
//! at most [`MAX_STREAM_CALLS`] calls and the peer message limit in bytes
//! unanswered (one call always goes); the rest wait in the lane's queue of
//! at most [`super::batch::MAX_QUEUED`] calls per peer. The receiver never
//! stops reading, so it answers pings however busy its calls are, and it
//! answers a call beyond the window, or beyond the node's
//! `limits.max_peer_inflight_bytes`, with an error at once. A node serves
//! at most `limits.max_connections` streams, each holding its permit for
//! its life; when the node stops, its streams read no more, finish their
//! calls and close, and its shutdown waits for them (within its drain).
//! A sender with calls in flight pings a silent stream every
//! [`KEEP_ALIVE_INTERVAL`] and closes it when nothing came back within the
//! peer timeout more (silence counts from the later of the last byte
//! heard and the moment calls began after a quiet spell); an idle stream
//! closes after [`IDLE_CLOSE`], and the next call opens another. A call's
//! own deadline is the lane's ([`super::batch::patience`]). A lane that is
//! dropped (the node stops, the peer moved) sends nothing more but waits
//! for the answers of the calls it sent.

pub mod codec;
pub mod link;
pub mod open;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use super::KEEP_ALIVE_INTERVAL;

/// The service a stream's opening request names.
pub const SERVICE: &str = "peer.stream/1";
/// The `Upgrade` token of a stream.
pub const UPGRADE: &str = "chorus-peer/1";
/// The header of a `101` that carries the receiver's nonce (hex), which
/// the stream's session key covers; absent when the receiver has no
/// cluster secret, and then a sender that has one closes the stream.
pub const NONCE_HEADER: &str = "x-chorus-stream-nonce";
/// The protocol that introduced streams: a peer that speaks an older one
/// gets its calls over HTTP/2.
pub const STREAM_PROTOCOL: u16 = 3;
/// Calls a sender keeps unanswered on one stream; a receiver refuses a
/// call beyond them.
pub const MAX_STREAM_CALLS: usize = 1024;
/// A sender closes a stream that carried no call for this long.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// A receiver closes a stream it read nothing from for this long (a
/// sender that vanished without a reset).
pub const RECEIVER_IDLE: Duration = Duration::from_secs(120);
/// How much a reader asks the socket for at a time, at least.
const READ_CHUNK: usize = 64 << 10;

/// A connection a stream runs on, once upgraded.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection as dialled, before HTTP speaks on it.
pub trait Dialled: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static {}

impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static> Dialled for T {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens a connection to a URI (`http://host:port/peer`, or `https://`
/// through TLS offering HTTP/1.1).
pub type Dial =
    Arc<dyn Fn(http::Uri) -> BoxFuture<'static, Result<Box<dyn Dialled>, BoxError>> + Send + Sync>;

/// A [`Dial`] through a `tower` connector: the node's network, wrapped in
/// TLS (`security::tls::connector`, without HTTP/2).
pub fn dialer<S>(connector: S) -> Dial
where
    S: tower_service::Service<
            http::Uri,
            Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    Arc::new(move |uri| {
        let mut connector = connector.clone();
        Box::pin(async move {
            futures_util::future::poll_fn(|cx| connector.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let io = connector.call(uri).await.map_err(Into::into)?;
            Ok(Box::new(io) as Box<dyn Dialled>)
        })
    })
}

/// Grows `buf` for the next read: room for the whole frame at its front
/// when its length is known (at most the limit), else [`READ_CHUNK`].
fn reserve(buf: &mut bytes::BytesMut, max: usize) {
    let frame = codec::needs(buf, max).ok().flatten().unwrap_or(0);
    let want = frame.saturating_sub(buf.len()).max(READ_CHUNK);
    buf.reserve(want);
}

/// Writes `out` in one go and clears it; fails when the other end does not
/// take the bytes within `timeout` and their allowance.
async fn write(
    wr: &mut tokio::io::WriteHalf<Box<dyn Io>>,
    out: &mut bytes::BytesMut,
    timeout: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let patience = timeout + super::batch::allowance(out.len());
    let written = tokio::time::timeout(patience, async {
        wr.write_all(out).await?;
        wr.flush().await
    })
    .await;
    out.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("writing: {e}")),
        Err(_) => Err(format!("the other end took no bytes within {patience:?}")),
    }
}
