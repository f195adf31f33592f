//! Coalescing calls per peer over HTTP/2, for a peer that does not speak
//! streams (`super::stream`, protocol 3; the lane's queue and deadlines
//! serve the streams too, `Lane::with`), as Cassandra coalesces its
//! messages: under
//! load, many writes and reads go to the same few peers at once, and each
//! HTTP/2 request costs both ends far more CPU (stream state, HPACK, a task
//! per stream, wake-ups) than the few hundred bytes it carries. A [`Lane`]
//! per peer queues the frames of batchable services
//! ([`Service::batchable`](super::Service)) and sends whatever is queued
//! as one [`Batch`], with at most [`MAX_IN_FLIGHT`] batches on the wire per
//! peer.
//!
//! Nothing waits to fill a batch: a frame that finds a free slot goes at
//! once, alone, so an idle cluster sees no added latency. Only when every
//! slot is busy do frames pile up, and the next free slot takes them, up to
//! [`MAX_BATCH`] frames and the lane's byte budget (a frame larger than the
//! budget goes alone). The receiver runs a batch's frames concurrently
//! ([`dispatch`]), so its merges share one group commit, and answers each
//! in order.
//!
//! Bounds: the queue per peer holds [`MAX_QUEUED`] frames, beyond which a
//! call fails at once as unavailable (a dead peer cannot grow memory); a
//! frame whose caller gave up is dropped before it is sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::WireError;
use super::rpc::{self, Call, Frame, Rpc, Service, Services, Via};
use crate::budget::Budget;
use crate::error::{Error, Result};

/// The most frames in one batch. A receiver refuses larger batches.
pub const MAX_BATCH: usize = 128;
/// Batches on the wire to one peer at a time.
pub const MAX_IN_FLIGHT: usize = 4;
/// Frames queued for one peer before calls fail as unavailable.
pub const MAX_QUEUED: usize = 8192;
/// The slowest a peer may move bytes before a call to it counts as
/// unanswered: a call's deadline is the peer timeout plus its bytes, and
/// the bytes queued ahead of it, at this rate. A 1 MiB write behind 20
/// others to the same peer then has 10 s more, not the 2 s of a small one.
/// Low on purpose: a node takes merges from every coordinator at once and
/// fsyncs them, and at 8 MiB/s a test build on two busy cores gave up on
/// healthy peers. A client's own deadline (`timeout_ms`) still bounds what
/// it waits for.
pub const MIN_BYTES_PER_SEC: u64 = 2 << 20;

/// The time `bytes` take at [`MIN_BYTES_PER_SEC`].
pub fn allowance(bytes: usize) -> Duration {
    Duration::from_millis((bytes as u64).saturating_mul(1000) / MIN_BYTES_PER_SEC)
}

/// Peer timeouts a call on a lane may wait, besides its bytes' allowance.
/// A lane carries the calls of every client request at once, and a
/// receiver takes them from every coordinator and fsyncs them together, so
/// a healthy peer under a burst of large writes answers late; what ends a
/// call to a silent peer first is the connection's keep-alive ping (one
/// peer timeout), and a client's own `timeout_ms` bounds what it waits
/// for. With 2 s, the 3.5 s this used to be failed 1 MiB writes to healthy
/// peers in about one run in ten of the 1 MiB test.
pub const LANE_PATIENCE: u32 = 5;

/// How long a message of `bytes` on a lane may take.
pub fn patience(timeout: Duration, bytes: usize) -> Duration {
    timeout * LANE_PATIENCE + allowance(bytes)
}

/// A frame inside a batch, as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Framed {
    pub service: String,
    pub version: u16,
    pub body: Bytes,
}

/// Several frames of batchable services to one node, answered in order:
/// each with its reply's bytes, or the error that refused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Framed>);

impl Rpc for Batch {
    const SERVICE: Service = Service::new("peer.batch", 1);
    type Reply = Vec<std::result::Result<Bytes, WireError>>;
}

/// Runs a batch that arrived: every frame through `services`, at once, so
/// that their writes share one group commit; a frame refused (unknown, not
/// batchable, undecodable) fails alone.
pub fn dispatch(services: &Services, body: &[u8]) -> Result<Call<Bytes>> {
    let Batch(frames) = super::decode(body, "batch").map_err(|e| Error::BodyRead(e.to_string()))?;
    if frames.len() > MAX_BATCH {
        return Err(Error::Protocol(format!(
            "a batch of {} frames; at most {MAX_BATCH} are taken",
            frames.len()
        )));
    }
    let calls: Vec<Result<Call<Bytes>>> = frames
        .into_iter()
        .map(|f| services.dispatch_batched(&f.service, f.version, Via::Batch, f.body))
        .collect();
    Ok(Box::pin(async move {
        let replies = join_all(calls.into_iter().map(|call| async move {
            match call {
                Ok(call) => call.await,
                Err(e) => Err(e),
            }
        }))
        .await;
        let reply: <Batch as Rpc>::Reply = replies
            .into_iter()
            .map(|r| r.map_err(|e| WireError::from_error(&e)))
            .collect();
        Ok(Bytes::from(super::encode(&Ok::<_, WireError>(reply))?))
    }))
}

/// A call waiting on a lane: its frame, and where its answer goes.
pub(crate) type Queued = (Frame, oneshot::Sender<Result<Bytes>>);

/// Bytes of frames queued or in flight on a lane, released when answered.
#[derive(Clone, Default)]
struct Backlog(Arc<std::sync::atomic::AtomicUsize>);

impl Backlog {
    /// Adds `bytes`; the backlog ahead of them, theirs included.
    fn add(&self, bytes: usize) -> usize {
        self.0
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            + bytes
    }

    fn remove(&self, bytes: usize) {
        self.0
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends one frame (single or batch) to the lane's peer.
pub type Send = Arc<dyn Fn(Frame) -> Call<Bytes> + std::marker::Send + Sync>;

/// The queue of batchable calls to one peer.
#[derive(Clone)]
pub struct Lane {
    node: String,
    queue: mpsc::Sender<Queued>,
    timeout: Duration,
    backlog: Backlog,
}

impl Lane {
    /// A lane to `node`, sending through `send` batches of at most
    /// `budget` bytes of frames; a call that has no answer within its
    /// [`patience`] (from `timeout` and its bytes and those queued ahead of
    /// it) fails as unavailable. Its task ends when the last clone of the
    /// lane is dropped.
    pub fn start(node: &str, send: Send, timeout: Duration, budget: usize) -> Lane {
        let to = node.to_string();
        Lane::with(node, timeout, move |rx| run(to, rx, send, budget))
    }

    /// A lane to `node` whose calls `task` takes from its queue and
    /// answers (a peer stream: `super::stream::link::run`).
    pub(crate) fn with<F>(
        node: &str,
        timeout: Duration,
        task: impl FnOnce(mpsc::Receiver<Queued>) -> F,
    ) -> Lane
    where
        F: std::future::Future<Output = ()> + std::marker::Send + 'static,
    {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(task(rx));
        Lane {
            node: node.to_string(),
            queue,
            timeout,
            backlog: Backlog::default(),
        }
    }

    /// Queues `frame`; the reply's bytes come when its batch is answered.
    pub fn call(&self, frame: Frame) -> Call<Bytes> {
        let (tx, rx) = oneshot::channel();
        let bytes = frame.body.len();
        let ahead = self.backlog.add(bytes);
        let queued = self.queue.try_send((frame, tx));
        // Released when the call ends, answered or dropped.
        let done = Release(self.backlog.clone(), bytes);
        let node = self.node.clone();
        let timeout = patience(self.timeout, ahead);
        Box::pin(async move {
            let _done = done;
            let unavailable = |reason: &str| Error::Unavailable {
                node: node.clone(),
                reason: reason.into(),
            };
            if queued.is_err() {
                return Err(unavailable("too many requests queued for this peer"));
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(unavailable("the peer's queue closed")),
                Err(_) => Err(unavailable(&format!("no answer within {timeout:?}"))),
            }
        })
    }
}

/// Takes a call's bytes off its lane's backlog when the call ends.
struct Release(Backlog, usize);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

async fn run(node: String, mut rx: mpsc::Receiver<Queued>, send: Send, budget: usize) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A frame that did not fit the last batch starts the next.
    let mut next: Option<Queued> = None;
    loop {
        let first = match next.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Waiting for a slot is what lets a batch gather.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut room = Budget::new(budget);
        room.admit(first.0.body.len());
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(queued) if !room.admit(queued.0.body.len()) => {
                    next = Some(queued);
                    break;
                }
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        // Callers that stopped waiting (their deadline passed) need no answer.
        batch.retain(|(_, tx)| !tx.is_closed());
        let (send, node) = (Arc::clone(&send), node.clone());
        tokio::spawn(async move {
            deliver(&node, batch, &send).await;
            drop(slot);
        });
    }
}

async fn deliver(node: &str, mut batch: Vec<Queued>, send: &Send) {
    if batch.len() <= 1 {
        if let Some((frame, tx)) = batch.pop() {
            let _ = tx.send(send(frame).await);
        }
        return;
    }
    let (frames, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let count = frames.len();
    let framed = frames
        .into_iter()
        .map(|f| Framed {
            service: f.service.to_string(),
            version: f.version,
            body: f.body,
        })
        .collect();
    let sent = match Frame::of(&Batch(framed)) {
        Ok(frame) => send(frame).await,
        Err(e) => Err(e),
    };
    match sent.and_then(|bytes| rpc::reply::<Batch>(node, &bytes)) {
        Ok(replies) if replies.len() == count => {
            for (tx, reply) in waiters.into_iter().zip(replies) {
                let _ = tx.send(reply.map_err(|e| e.into_error(node)));
            }
        }
        other => {
            let reason = match other {
                Err(e) => e.to_string(),
                Ok(replies) => format!(
                    "a batch of {count} was answered with {} replies",
                    replies.len()
                ),
            };
            for tx in waiters {
                let _ = tx.send(Err(Error::Unavailable {
                    node: node.to_string(),
                    reason: reason.clone(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use parking_lot::Mutex;
    use tokio::sync::Semaphore;

    use super::*;

    /// What a fake peer saw: one entry per message, the keys it carried.
    type Log = Arc<Mutex<Vec<Vec<String>>>>;

    fn refusal(key: &str) -> WireError {
        WireError {
            status: 503,
            code: "unavailable".into(),
            message: key.to_string(),
            retryable: true,
        }
    }

    /// Answers each frame with an error carrying its own key, once `gate`
    /// lets a message through; a batch gets one such reply per frame.
    fn fake_peer(log: &Log, gate: &Arc<Semaphore>) -> Send {
        let (log, gate) = (Arc::clone(log), Arc::clone(gate));
        Arc::new(move |frame: Frame| {
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            Box::pin(async move {
                let keys: Vec<String> = if frame.service == Batch::SERVICE.name {
                    let Batch(frames) = super::super::decode(&frame.body, "batch")?;
                    frames
                        .iter()
                        .map(|f| String::from_utf8_lossy(&f.body).into_owned())
                        .collect()
                } else {
                    vec![String::from_utf8_lossy(&frame.body).into_owned()]
                };
                log.lock().push(keys.clone());
                gate.acquire().await.expect("gate").forget();
                match keys.as_slice() {
                    [one] if frame.service != Batch::SERVICE.name => {
                        Err(refusal(one).into_error("p"))
                    }
                    many => {
                        let replies: <Batch as Rpc>::Reply =
                            many.iter().map(|k| Err(refusal(k))).collect();
                        Ok(Bytes::from(super::super::encode(&Ok::<_, WireError>(
                            replies,
                        ))?))
                    }
                }
            })
        })
    }

    fn read(key: &str) -> Frame {
        Frame {
            service: "test.read",
            version: 1,
            body: Bytes::from(key.to_string()),
            batchable: true,
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("never happened: {what}");
    }

    /// Fills every slot with a request sent alone, one after the other.
    async fn busy(lane: &Lane, log: &Log, prefix: &str) -> Vec<Call<Bytes>> {
        let mut calls = Vec::new();
        for i in 0..MAX_IN_FLIGHT {
            calls.push(lane.call(read(&format!("{prefix}{i}"))));
            until("the request is sent", || log.lock().len() == i + 1).await;
        }
        calls
    }

    #[tokio::test]
    async fn requests_with_a_free_slot_go_alone_and_the_rest_go_together_each_with_its_reply() {
        let (log, gate): (Log, _) = (Log::default(), Arc::new(Semaphore::new(0)));
        let lane = Lane::start(
            "p",
            fake_peer(&log, &gate),
            Duration::from_secs(10),
            1 << 20,
        );
        let first = busy(&lane, &log, "a").await;
        let queued: Vec<_> = (0..10).map(|i| lane.call(read(&format!("b{i}")))).collect();
        gate.add_permits(1000);
        for (i, reply) in first.into_iter().chain(queued).enumerate() {
            let expected = if i < MAX_IN_FLIGHT {
                format!("a{i}")
            } else {
                format!("b{}", i - MAX_IN_FLIGHT)
            };
            match reply.await {
                Err(Error::Remote { message, .. }) => assert_eq!(message, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
        let log = log.lock();
        assert!(log[..MAX_IN_FLIGHT].iter().all(|m| m.len() == 1), "{log:?}");
        // The ten waited for one slot: the lane sent them as one batch.
        let batched: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
        assert_eq!(log[MAX_IN_FLIGHT..], [batched], "{log:?}");
    }

    #[tokio::test]
    async fn a_batch_that_fails_fails_each_request_and_a_dropped_caller_is_not_sent() {
        let (log, gate): (Log, _) = (Log::default(), Arc::new(Semaphore::new(0)));
        let failing: Send = {
            let inner = fake_peer(&log, &gate);
            Arc::new(move |request| {
                let reply = inner(request);
                Box::pin(async move {
                    reply.await?;
                    Err(Error::Unavailable {
                        node: "p".into(),
                        reason: "connection reset".into(),
                    })
                })
            })
        };
        let lane = Lane::start("p", failing, Duration::from_secs(10), 1 << 20);
        let busy = busy(&lane, &log, "busy").await;
        let kept: Vec<_> = (0..3).map(|i| lane.call(read(&format!("k{i}")))).collect();
        drop(lane.call(read("given-up")));
        gate.add_permits(1000);
        drop(busy);
        for reply in kept {
            match reply.await {
                Err(Error::Unavailable { reason, .. }) => {
                    assert!(reason.contains("connection reset"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        let log = log.lock();
        assert_eq!(log.last().expect("a batch"), &["k0", "k1", "k2"], "{log:?}");
    }

    #[tokio::test]
    async fn a_full_queue_and_a_silent_peer_fail_as_unavailable_without_waiting_forever() {
        let (log, gate): (Log, _) = (Log::default(), Arc::new(Semaphore::new(0)));
        let lane = Lane::start(
            "p",
            fake_peer(&log, &gate),
            Duration::from_millis(50),
            1 << 20,
        );
        let calls: Vec<_> = (0..MAX_QUEUED + MAX_IN_FLIGHT + 2)
            .map(|i| lane.call(read(&format!("{i}"))))
            .collect();
        let mut calls = calls.into_iter();
        let last = calls.next_back().expect("calls");
        match last.now_or_never() {
            Some(Err(Error::Unavailable { reason, .. })) => {
                assert!(reason.contains("too many requests queued"), "{reason}")
            }
            other => panic!("the call past the bound should fail at once: {other:?}"),
        }
        // The peer never answers: the first call gives up at its timeout.
        match calls.next().expect("first").await {
            Err(Error::Unavailable { reason, .. }) => {
                assert!(reason.contains("no answer within"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A batch closes before its byte budget: the frames queued behind a
    /// busy lane go in as many batches as the budget needs, and a frame
    /// larger than the budget goes alone.
    #[tokio::test]
    async fn a_lane_splits_by_bytes_and_sends_an_oversize_frame_alone() {
        let (log, gate): (Log, _) = (Log::default(), Arc::new(Semaphore::new(0)));
        let lane = Lane::start("p", fake_peer(&log, &gate), Duration::from_secs(10), 1000);
        let first = busy(&lane, &log, "a").await;
        // Ten frames of 300 bytes, then one of 5000, then two small ones.
        let key = |i: usize, len: usize| format!("{i:0>len$}");
        let mut queued: Vec<_> = (0..10).map(|i| lane.call(read(&key(i, 300)))).collect();
        queued.push(lane.call(read(&key(10, 5000))));
        queued.extend((11..13).map(|i| lane.call(read(&key(i, 10)))));
        gate.add_permits(1000);
        for reply in first.into_iter().chain(queued) {
            assert!(matches!(reply.await, Err(Error::Remote { .. })));
        }
        let log = log.lock();
        let sizes: Vec<Vec<usize>> = log[MAX_IN_FLIGHT..]
            .iter()
            .map(|m| m.iter().map(String::len).collect())
            .collect();
        assert_eq!(
            sizes,
            [
                vec![300; 3],
                vec![300; 3],
                vec![300; 3],
                vec![300],
                vec![5000],
                vec![10, 10]
            ],
            "{log:?}"
        );
    }
}
