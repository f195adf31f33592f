//! The sending side of a stream: one per peer, opened on the first call and
//! again after it broke or idled out.
//!
//! The lane's task ([`run`]) takes calls from the peer's queue, opens the
//! stream ([`super::open`]), and writes every call queued since its last write as one write,
//! after yielding once so that the requests ready on its core queue theirs first.
//! A reader task hands each reply to its caller by call id. When the
//! stream breaks, every call in flight on it fails as unavailable (the
//! services on streams are idempotent merges, reads and hints, so the
//! coordinator may hint or ask another replica), and the next call opens
//! a new one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::codec::{self, ACCEPTER, Message, OPENER, Seal};
use super::open::Opener;
use super::{IDLE_CLOSE, Io, KEEP_ALIVE_INTERVAL, MAX_STREAM_CALLS};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::peer::batch::Queued;

/// Calls sent and not yet answered, by call id, with the bytes each
/// carries: the stream's window.
#[derive(Default)]
struct InFlight {
    calls: BTreeMap<u64, (oneshot::Sender<Result<Bytes>>, usize)>,
    bytes: usize,
}

impl InFlight {
    /// Whether a call of `size` bytes fits the window the receiver keeps
    /// ([`MAX_STREAM_CALLS`] calls, `max` bytes; one call always fits).
    fn fits(&self, size: usize, max: usize) -> bool {
        self.calls.is_empty() || (self.calls.len() < MAX_STREAM_CALLS && self.bytes + size <= max)
    }

    fn take(&mut self, id: u64) -> Option<oneshot::Sender<Result<Bytes>>> {
        let (tx, size) = self.calls.remove(&id)?;
        self.bytes -= size;
        Some(tx)
    }

    /// Forgets the calls whose callers stopped waiting; whether any are
    /// left.
    fn prune(&mut self) -> bool {
        let bytes = &mut self.bytes;
        self.calls.retain(|_, (tx, size)| {
            let keep = !tx.is_closed();
            if !keep {
                *bytes -= *size;
            }
            keep
        });
        !self.calls.is_empty()
    }
}

type Pending = Arc<Mutex<InFlight>>;

/// The task of the lane to `node` at `addr`: opens a stream when a call
/// comes, and ends when the lane is dropped.
pub async fn run(opener: Arc<Opener>, node: String, addr: String, mut rx: mpsc::Receiver<Queued>) {
    while let Some((frame, tx)) = rx.recv().await {
        if tx.is_closed() {
            continue;
        }
        match opener.open(&node, &addr).await {
            Ok((io, key)) => {
                metrics::counter!(m::PEER_STREAMS_OPENED_TOTAL, "side" => "opener").increment(1);
                let ended = connected(&opener, &node, io, key, (frame, tx), &mut rx).await;
                let label = match &ended {
                    Ended::Dropped => "stopped",
                    Ended::Idle => "idle",
                    Ended::Broken(reason) => {
                        tracing::debug!(%node, %reason, "peer stream broke");
                        "broken"
                    }
                };
                metrics::counter!(m::PEER_STREAMS_ENDED_TOTAL, "side" => "opener", "reason" => label)
                    .increment(1);
                if matches!(ended, Ended::Dropped) {
                    return;
                }
            }
            Err(e) => {
                // Everything queued meanwhile fails alike, at once; the
                // next call dials again.
                let reason = e.to_string();
                let _ = tx.send(Err(e));
                while let Ok((_, tx)) = rx.try_recv() {
                    let _ = tx.send(Err(Error::Unavailable {
                        node: node.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }
}

enum Ended {
    /// The lane was dropped.
    Dropped,
    /// No call for [`IDLE_CLOSE`].
    Idle,
    Broken(String),
}

/// Bytes of calls written in one go, at most (more wait for the next write).
const WRITE_BUDGET: usize = 1 << 20;

async fn connected(
    opener: &Opener,
    node: &str,
    io: Box<dyn Io>,
    key: Option<[u8; 32]>,
    first: Queued,
    rx: &mut mpsc::Receiver<Queued>,
) -> Ended {
    let (rd, mut wr) = tokio::io::split(io);
    let pending: Pending = Arc::default();
    let freed = Arc::new(Notify::new());
    let born = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let max = opener.max_message;
    let mut reader = tokio::spawn(read_replies(
        rd,
        Seal::new(key, ACCEPTER),
        max,
        Replies {
            pending: Arc::clone(&pending),
            freed: Arc::clone(&freed),
            heard: Arc::clone(&heard),
            born,
            node: node.to_string(),
        },
    ));
    let mut seal = Seal::new(key, OPENER);
    let mut out = BytesMut::new();
    let mut batch = VecDeque::from([first]);
    let mut next_id = 0u64;
    let mut last_call = Instant::now();
    // The lane was dropped (the node stops, or the peer moved): no more
    // calls come, the ones sent are still answered.
    let mut closing = false;
    let mut ticker = tokio::time::interval(KEEP_ALIVE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        if !closing {
            if !batch.is_empty() {
                // The first call to come woke this task, and a task woken
                // by another runs right after it (tokio's LIFO slot), before
                // the other requests ready on this core could queue theirs:
                // most calls left in a write of their own. Yielding once lets
                // them queue first, so they leave together (issue 21:
                // peer writes per GET 1.34 -> 0.54, docs/benchmarks.md).
                tokio::task::yield_now().await;
            }
            while batch.len() < MAX_STREAM_CALLS
                && let Ok(call) = rx.try_recv()
            {
                batch.push_back(call);
            }
        }
        {
            let mut pending = pending.lock();
            if pending.calls.is_empty() && !batch.is_empty() {
                // Silence counts from now: a stream that was idle is not
                // dead for it.
                heard.store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            while out.len() < WRITE_BUDGET
                && let Some((frame, tx)) = batch.pop_front()
            {
                let size = frame.body.len();
                // Callers that stopped waiting need no answer.
                if tx.is_closed() {
                    continue;
                }
                if size > max {
                    // The receiver would close the stream for it.
                    let _ = tx.send(Err(Error::PeerMessageTooLarge {
                        len: size as u64,
                        max,
                    }));
                    continue;
                }
                if !pending.fits(size, max) {
                    batch.push_front((frame, tx));
                    break;
                }
                next_id += 1;
                pending.calls.insert(next_id, (tx, size));
                pending.bytes += size;
                let call = Message::Call {
                    id: next_id,
                    service: frame.service.into(),
                    version: frame.version,
                    body: frame.body,
                };
                codec::encode(&call, &mut seal, &mut out);
            }
        }
        if !out.is_empty() {
            if let Err(reason) = super::write(&mut wr, &mut out, opener.timeout).await {
                break Ended::Broken(reason);
            }
            last_call = Instant::now();
        }
        if closing && batch.is_empty() && pending.lock().calls.is_empty() {
            break Ended::Dropped;
        }
        // Biased, in this order, so a seeded simulation replays exactly:
        // the stream's end, then the once-a-second tick (which nothing may
        // starve), then room in the window, then new calls.
        tokio::select! {
            biased;
            read = &mut reader => {
                break Ended::Broken(read.unwrap_or_else(|e| format!("the reader failed: {e}")));
            },
            _ = ticker.tick() => {
                let waiting = pending.lock().prune();
                // Since the peer last sent a byte, or since the calls in
                // flight began, when it had nothing to say before them.
                let silent = born.elapsed().saturating_sub(Duration::from_millis(heard.load(Ordering::Relaxed)));
                if !waiting {
                    if batch.is_empty() && last_call.elapsed() >= IDLE_CLOSE {
                        break Ended::Idle;
                    }
                } else if silent >= KEEP_ALIVE_INTERVAL + opener.timeout {
                    break Ended::Broken(format!("nothing came back within {silent:?}, not even a pong"));
                } else if silent >= KEEP_ALIVE_INTERVAL {
                    next_id += 1;
                    codec::encode(&Message::Ping { id: next_id }, &mut seal, &mut out);
                    if let Err(reason) = super::write(&mut wr, &mut out, opener.timeout).await {
                        break Ended::Broken(reason);
                    }
                }
            },
            () = freed.notified(), if !batch.is_empty() || closing => {},
            call = rx.recv(), if batch.is_empty() && !closing => match call {
                Some(call) => batch.push_back(call),
                None => closing = true,
            },
        }
    };
    reader.abort();
    let reason = match &ended {
        Ended::Broken(reason) => reason.clone(),
        _ => "the stream closed".to_string(),
    };
    for (_, (tx, _)) in std::mem::take(&mut pending.lock().calls) {
        let _ = tx.send(Err(Error::Unavailable {
            node: node.to_string(),
            reason: format!("the stream broke with the call in flight: {reason}"),
        }));
    }
    for (_, tx) in batch {
        let _ = tx.send(Err(Error::Unavailable {
            node: node.to_string(),
            reason: reason.clone(),
        }));
    }
    ended
}

/// What the reader of a stream hands replies to.
struct Replies {
    pending: Pending,
    /// Woken when a reply makes room in the window.
    freed: Arc<Notify>,
    /// When the peer last sent a byte (ms since `born`).
    heard: Arc<AtomicU64>,
    born: Instant,
    node: String,
}

/// Hands every reply to its caller; ends with why the stream can no longer
/// be read.
async fn read_replies(
    mut rd: tokio::io::ReadHalf<Box<dyn Io>>,
    mut seal: Seal,
    max: usize,
    to: Replies,
) -> String {
    let mut buf = BytesMut::new();
    loop {
        loop {
            match codec::decode(&mut buf, max, &mut seal) {
                Ok(Some(Message::Reply { id, reply })) => {
                    let tx = to.pending.lock().take(id);
                    if let Some(tx) = tx {
                        let _ = tx.send(reply.map_err(|e| e.into_error(&to.node)));
                        to.freed.notify_one();
                    }
                }
                Ok(Some(Message::Pong { .. })) => {}
                Ok(Some(Message::Call { .. } | Message::Ping { .. })) => {
                    return "the peer sent a call on a stream it accepted".into();
                }
                Ok(None) => break,
                Err(e) => return e.to_string(),
            }
        }
        super::reserve(&mut buf, max);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return "closed by the peer".into(),
            Ok(_) => to
                .heard
                .store(to.born.elapsed().as_millis() as u64, Ordering::Relaxed),
            Err(e) => return format!("reading: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
