//! The receiving side of a stream: reads calls, runs them at once (so a
//! burst of merges shares one group commit), and writes every reply ready
//! since its last write as one write.
//!
//! One task per stream, which never stops reading while the stream is
//! open, so pings are answered and a sender's close is seen however busy
//! the calls are. What bounds it is the stream's window, which the sender
//! keeps ([`super::link`]): at most [`MAX_STREAM_CALLS`] calls and the
//! peer message limit in bytes running at once. A call beyond the window,
//! or beyond the node's `limits.max_peer_inflight_bytes` (shared with
//! `POST /peer`), is answered `overloaded` at once and its bytes dropped. A
//! frame that does not decode or fails its MAC closes the stream; nothing
//! of it was applied. When the node stops, the stream reads no more,
//! finishes the calls it runs and writes their replies, then closes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};

use super::codec::{self, ACCEPTER, Message, OPENER, Seal};
use super::{Io, MAX_STREAM_CALLS, RECEIVER_IDLE};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::peer::WireError;
use crate::peer::rpc::{Services, Via};

/// What a receiver's streams share: the node's handlers and its limits.
#[derive(Clone)]
pub struct Receiver {
    pub services: Arc<Services>,
    /// `limits.max_peer_inflight_bytes` permits, shared with `POST /peer`.
    pub bytes: Arc<Semaphore>,
    pub max_bytes: u64,
    /// The peer message limit: the most a frame carries, and the most the
    /// calls running on one stream carry together.
    pub max_message: usize,
    /// How long a reply may take to leave.
    pub timeout: Duration,
    /// Turns true (or closes) when the node stops: its streams close.
    pub stopped: watch::Receiver<bool>,
}

/// Serves one accepted stream until it closes, breaks, idles out or the
/// node stops.
pub async fn serve(io: Box<dyn Io>, key: Option<[u8; 32]>, receiver: Receiver) {
    metrics::counter!(m::PEER_STREAMS_OPENED_TOTAL, "side" => "accepter").increment(1);
    let (label, reason) = run(io, key, &receiver).await;
    metrics::counter!(m::PEER_STREAMS_ENDED_TOTAL, "side" => "accepter", "reason" => label)
        .increment(1);
    if label == "refused" {
        tracing::warn!(%reason, "closed a peer stream");
    } else {
        tracing::debug!(%reason, "peer stream ended");
    }
}

/// Why a stream ended: the metric's `reason`, and the whole story.
type End = (&'static str, String);

/// The calls a stream runs, and the bytes they carry.
struct Window {
    calls: usize,
    bytes: usize,
}

async fn run(io: Box<dyn Io>, key: Option<[u8; 32]>, at: &Receiver) -> End {
    let (mut rd, mut wr) = tokio::io::split(io);
    let (mut seal_in, mut seal_out) = (Seal::new(key, OPENER), Seal::new(key, ACCEPTER));
    let mut stopped = at.stopped.clone();
    let mut running = FuturesUnordered::new();
    let mut window = Window { calls: 0, bytes: 0 };
    let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
    let mut stopping = false;
    loop {
        loop {
            match codec::decode(&mut buf, at.max_message, &mut seal_in) {
                Ok(Some(Message::Call {
                    id,
                    service,
                    version,
                    body,
                })) => {
                    let size = body.len();
                    match admit(at, &window, &service, version, body) {
                        Ok(call) => {
                            window.calls += 1;
                            window.bytes += size;
                            running.push(call.map(move |reply| (id, size, reply)));
                        }
                        Err(e) => reply(id, Err(e), &mut seal_out, &mut out),
                    }
                }
                Ok(Some(Message::Ping { id })) => {
                    codec::encode(&Message::Pong { id }, &mut seal_out, &mut out);
                }
                Ok(Some(Message::Reply { .. } | Message::Pong { .. })) => {
                    return ("refused", "the opener sent a reply".into());
                }
                Ok(None) => break,
                Err(e) => return ("refused", e.to_string()),
            }
        }
        if !out.is_empty()
            && let Err(reason) = super::write(&mut wr, &mut out, at.timeout).await
        {
            return ("broken", reason);
        }
        if stopping && running.is_empty() {
            return ("stopped", "the node stops".into());
        }
        super::reserve(&mut buf, at.max_message);
        // Biased, so a seeded simulation replays exactly; replies before
        // reads, and every branch but the stop waits on the other end.
        tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop), if !stopping => stopping = true,
            Some((id, size, result)) = running.next(), if !running.is_empty() => {
                window.calls -= 1;
                window.bytes -= size;
                reply(id, result, &mut seal_out, &mut out);
                // Every other reply ready now leaves in the same write.
                while let Some(Some((id, size, result))) = running.next().now_or_never() {
                    window.calls -= 1;
                    window.bytes -= size;
                    reply(id, result, &mut seal_out, &mut out);
                }
            },
            read = rd.read_buf(&mut buf), if !stopping => match read {
                Ok(0) => return ("closed", "closed by the opener".into()),
                Ok(_) => {}
                Err(e) => return ("broken", format!("reading: {e}")),
            },
            () = tokio::time::sleep(RECEIVER_IDLE), if running.is_empty() && !stopping => {
                return ("idle", format!("nothing read for {RECEIVER_IDLE:?}"));
            },
        }
    }
}

/// A call taken, its bytes' permits held until it ends; refused at once
/// beyond the stream's window or the node's bytes, or when the node has no
/// such batchable service.
fn admit(
    at: &Receiver,
    window: &Window,
    service: &str,
    version: u16,
    body: Bytes,
) -> Result<impl std::future::Future<Output = Result<Bytes>> + use<>> {
    let size = body.len();
    if window.calls >= MAX_STREAM_CALLS
        || (window.calls > 0 && window.bytes + size > at.max_message)
    {
        return Err(Error::Protocol(format!(
            "a call beyond the stream's window ({} calls and {} bytes running; at most \
             {MAX_STREAM_CALLS} calls and {} bytes)",
            window.calls, window.bytes, at.max_message
        )));
    }
    let permit = Arc::clone(&at.bytes)
        .try_acquire_many_owned(size.min(u32::MAX as usize) as u32)
        .map_err(|_| Error::Overloaded {
            what: "bytes of peer requests",
            key: "max_peer_inflight_bytes",
            limit: at.max_bytes as usize,
        })?;
    let call = at
        .services
        .dispatch_batched(service, version, Via::Stream, body)?;
    Ok(async move {
        let reply = call.await;
        drop(permit);
        reply
    })
}

fn reply(id: u64, result: Result<Bytes>, seal: &mut Seal, out: &mut BytesMut) {
    let reply = result.map_err(|e| WireError::from_error(&e));
    codec::encode(&Message::Reply { id, reply }, seal, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(bytes: usize, max_message: usize) -> Receiver {
        Receiver {
            services: Services::speaking(crate::peer::versions::PROTOCOL),
            bytes: Arc::new(Semaphore::new(bytes)),
            max_bytes: bytes as u64,
            max_message,
            timeout: Duration::from_secs(1),
            stopped: watch::channel(false).1,
        }
    }

    fn code<T>(result: Result<T>) -> String {
        match result {
            Ok(_) => "taken".into(),
            Err(e) => e.code().to_string(),
        }
    }

    /// A call beyond the window the sender keeps, or beyond the node's
    /// bytes, is refused alone; one call always fits the window. (No
    /// service is registered here: a call the window takes is then refused
    /// as unknown.)
    #[test]
    fn calls_beyond_the_window_or_the_nodes_bytes_are_refused() {
        let at = receiver(100, 10);
        let body = |n| Bytes::from(vec![0; n]);
        let window = |calls, bytes| Window { calls, bytes };
        let admit = |w: &Window, n| code(admit(&at, w, "replica.read", 1, body(n)));
        assert_eq!(admit(&window(0, 0), 6), "unknown_service");
        assert_eq!(admit(&window(1, 4), 6), "unknown_service");
        assert_eq!(admit(&window(1, 5), 6), "protocol_error");
        assert_eq!(admit(&window(MAX_STREAM_CALLS, 0), 1), "protocol_error");
        // One call over the peer message limit fits an empty window (the
        // codec refused larger frames already); not the node's bytes.
        assert_eq!(admit(&window(0, 0), 50), "unknown_service");
        assert_eq!(admit(&window(0, 0), 101), "overloaded");
    }
}
