//! Coalescing replica requests per peer, as Cassandra coalesces its
//! messages: under load, many writes and reads go to the same few peers at
//! once, and each HTTP/2 request costs both ends far more CPU (stream state,
//! HPACK, a task per stream, wake-ups) than the few hundred bytes it
//! carries. A [`Lane`] per peer queues [`PeerRequest::is_batchable`]
//! requests and sends whatever is queued as one [`PeerRequest::Batch`],
//! with at most [`MAX_IN_FLIGHT`] batches on the wire per peer.
//!
//! Nothing waits to fill a batch: a request that finds a free slot goes at
//! once, alone, so an idle cluster sees no added latency. Only when every
//! slot is busy do requests pile up, and the next free slot takes them all
//! (up to [`MAX_BATCH`]). The receiver runs a batch's requests concurrently,
//! so its merges share one group commit, and answers each in order.
//!
//! Bounds: the queue per peer holds [`MAX_QUEUED`] requests, beyond which a
//! call fails at once as unavailable (a dead peer cannot grow memory); a
//! request whose caller gave up is dropped before it is sent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{PeerRequest, PeerResponse, Reply};
use crate::error::{Error, Result};

/// The most requests in one batch. A receiver refuses larger batches.
pub const MAX_BATCH: usize = 128;
/// Batches on the wire to one peer at a time.
pub const MAX_IN_FLIGHT: usize = 4;
/// Requests queued for one peer before calls fail as unavailable.
pub const MAX_QUEUED: usize = 8192;

type Queued = (PeerRequest, oneshot::Sender<Result<PeerResponse>>);

/// Sends one request (single or batch) to the lane's peer.
pub type Send = Arc<dyn Fn(PeerRequest) -> Reply + std::marker::Send + Sync>;

/// The queue of batchable requests to one peer.
#[derive(Clone)]
pub struct Lane {
    node: String,
    queue: mpsc::Sender<Queued>,
    timeout: Duration,
}

impl Lane {
    /// A lane to `node`, sending through `send`; a call that has no answer
    /// within `timeout`, queueing included, fails as unavailable. Its task
    /// ends when the last clone of the lane is dropped.
    pub fn start(node: &str, send: Send, timeout: Duration) -> Lane {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(run(node.to_string(), rx, send));
        Lane {
            node: node.to_string(),
            queue,
            timeout,
        }
    }

    /// Queues `request`; the reply comes when its batch is answered.
    pub fn call(&self, request: PeerRequest) -> Reply {
        let (tx, rx) = oneshot::channel();
        let queued = self.queue.try_send((request, tx));
        let (node, timeout) = (self.node.clone(), self.timeout);
        Box::pin(async move {
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

async fn run(node: String, mut rx: mpsc::Receiver<Queued>, send: Send) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets a batch gather.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
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
        if let Some((request, tx)) = batch.pop() {
            let _ = tx.send(send(request).await);
        }
        return;
    }
    let (requests, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let count = requests.len();
    match send(PeerRequest::Batch(requests)).await {
        Ok(PeerResponse::Batch(replies)) if replies.len() == count => {
            for (tx, reply) in waiters.into_iter().zip(replies) {
                let _ = tx.send(reply.map_err(|e| e.into_error(node)));
            }
        }
        other => {
            let reason = match other {
                Err(e) => e.to_string(),
                Ok(reply) => format!("a batch of {count} was answered with {reply:?}"),
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
    use crate::peer::WireError;

    /// What a fake peer saw: one entry per message, the keys it carried.
    type Log = Arc<Mutex<Vec<Vec<String>>>>;

    fn key_of(request: &PeerRequest) -> String {
        match request {
            PeerRequest::Read { key } => key.clone(),
            other => format!("{other:?}"),
        }
    }

    /// Answers each request with an error carrying its own key, once `gate`
    /// lets a message through; a batch gets one such reply per request.
    fn fake_peer(log: &Log, gate: &Arc<Semaphore>) -> Send {
        let (log, gate) = (Arc::clone(log), Arc::clone(gate));
        Arc::new(move |request| {
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            Box::pin(async move {
                let requests = match request {
                    PeerRequest::Batch(requests) => requests,
                    single => vec![single],
                };
                log.lock().push(requests.iter().map(key_of).collect());
                gate.acquire().await.expect("gate").forget();
                let reply = |r: &PeerRequest| {
                    Err(WireError {
                        status: 503,
                        code: "unavailable".into(),
                        message: key_of(r),
                        retryable: true,
                    })
                };
                match requests.as_slice() {
                    [one] => Err(reply(one).unwrap_err().into_error("p")),
                    many => Ok(PeerResponse::Batch(many.iter().map(reply).collect())),
                }
            })
        })
    }

    fn read(key: &str) -> PeerRequest {
        PeerRequest::Read { key: key.into() }
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
    async fn busy(lane: &Lane, log: &Log, prefix: &str) -> Vec<Reply> {
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
        let lane = Lane::start("p", fake_peer(&log, &gate), Duration::from_secs(10));
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
        let lane = Lane::start("p", failing, Duration::from_secs(10));
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
        let lane = Lane::start("p", fake_peer(&log, &gate), Duration::from_millis(50));
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
}
