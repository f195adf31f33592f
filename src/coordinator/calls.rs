//! Calls to replicas whose answers arrive as they come.
//!
//! More calls can be started while waiting (a write adds fallbacks as
//! primaries fail); [`Calls::seal`] says none will be, so [`Calls::recv`]
//! ends once every call answered. The calls run inside the request's own
//! task, polled by `recv` (no task and no channel per call: about a µs of a
//! read's CPU, issue 21). They outlive their receiver all the same: calls
//! still running when a `Calls` is dropped (a write's remaining merges
//! after the client has its answer, a request whose client hung up) are
//! handed to a task of their own and finish there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::error::Result;
use crate::peer::{Call, Rpc, Transport};

/// Who answered, and what: a reply of type `T`, or why none came.
pub(super) type Answer<T> = (String, Result<T>);

/// Calls whose replies are all of type `T` (the reads of a read, the
/// merges and hints of a write).
pub(super) struct Calls<T: Send + 'static> {
    transport: Arc<dyn Transport>,
    running: FuturesUnordered<Named<T>>,
    sealed: bool,
}

/// A call and the node it went to.
struct Named<T> {
    to: String,
    reply: Call<T>,
}

impl<T> Future for Named<T> {
    type Output = Answer<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer<T>> {
        let reply = std::task::ready!(self.reply.as_mut().poll(cx));
        // Never polled again after Ready: FuturesUnordered drops it.
        Poll::Ready((std::mem::take(&mut self.to), reply))
    }
}

impl<T: Send + 'static> Calls<T> {
    pub(super) fn new(transport: Arc<dyn Transport>) -> Calls<T> {
        Calls {
            transport,
            running: FuturesUnordered::new(),
            sealed: false,
        }
    }

    /// Calls to which none will be added: a read whose answers are all in.
    pub(super) fn sealed(transport: Arc<dyn Transport>) -> Calls<T> {
        let mut calls = Calls::new(transport);
        calls.seal();
        calls
    }

    /// Sends `request` to `to`.
    pub(super) fn start<R: Rpc<Reply = T>>(&mut self, to: String, request: R) {
        let reply = self.transport.rpc(&to, request);
        self.add(to, reply);
    }

    /// Waits for `reply`, the answer of `to`, with the others.
    pub(super) fn add(&mut self, to: String, reply: Call<T>) {
        if self.sealed {
            return;
        }
        self.running.push(Named { to, reply });
    }

    /// No call will be added: [`Calls::recv`] ends after the last answer.
    pub(super) fn seal(&mut self) {
        self.sealed = true;
    }

    /// The next answer; `None` once sealed and every call answered. Until
    /// sealed, it waits while no call runs (only its owner adds calls).
    pub(super) async fn recv(&mut self) -> Option<Answer<T>> {
        if self.running.is_empty() {
            if self.sealed {
                return None;
            }
            std::future::pending::<()>().await;
        }
        self.running.next().await
    }

    /// Calls started and not yet answered through [`Calls::recv`].
    pub(super) fn outstanding(&self) -> usize {
        self.running.len()
    }
}

impl<T: Send + 'static> Drop for Calls<T> {
    fn drop(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let running = std::mem::take(&mut self.running);
        // Outside a runtime (a node's runtime shutting down) nothing can
        // poll them any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(running.for_each(|_| async {}));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::peer::{Dest, Frame, Services};

    /// The tests add their calls by hand; nothing is sent.
    struct NoTransport;

    impl Transport for NoTransport {
        fn local(&self, _: &str) -> Option<Arc<Services>> {
            None
        }

        fn send(&self, _: Dest<'_>, _: Frame) -> Call<bytes::Bytes> {
            unreachable!("the tests send nothing")
        }

        fn protocol_with(&self, _: &str) -> u16 {
            crate::peer::versions::PROTOCOL
        }
    }

    fn calls() -> Calls<u32> {
        Calls::new(Arc::new(NoTransport))
    }

    #[tokio::test]
    async fn answers_come_as_they_arrive_and_end_once_sealed() {
        let mut calls = calls();
        let (first, first_rx) = oneshot::channel();
        let (second, second_rx) = oneshot::channel::<u32>();
        calls.add(
            "n1".into(),
            Box::pin(async { Ok(first_rx.await.unwrap_or(0)) }),
        );
        calls.add(
            "n2".into(),
            Box::pin(async { Ok(second_rx.await.unwrap_or(0)) }),
        );
        assert_eq!(calls.outstanding(), 2);
        second.send(2).expect("waiting");
        let (to, reply) = calls.recv().await.expect("an answer");
        assert_eq!((to.as_str(), reply.ok()), ("n2", Some(2)));
        calls.seal();
        calls.add("n3".into(), Box::pin(async { Ok(3) }));
        assert_eq!(calls.outstanding(), 1, "sealed: nothing more is added");
        first.send(1).expect("waiting");
        let (to, reply) = calls.recv().await.expect("an answer");
        assert_eq!((to.as_str(), reply.ok()), ("n1", Some(1)));
        assert!(calls.recv().await.is_none());
    }

    #[tokio::test]
    async fn an_unsealed_set_with_no_call_waits() {
        let mut calls = calls();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), calls.recv()).await;
        assert!(waited.is_err(), "more calls may still be added");
    }

    #[tokio::test]
    async fn calls_still_running_when_dropped_finish_on_their_own() {
        static FINISHED: AtomicUsize = AtomicUsize::new(0);
        let mut calls = calls();
        let (go, go_rx) = oneshot::channel::<()>();
        calls.add(
            "n1".into(),
            Box::pin(async move {
                let _ = go_rx.await;
                FINISHED.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            }),
        );
        drop(calls);
        go.send(()).expect("the call still waits");
        for _ in 0..100 {
            if FINISHED.load(Ordering::SeqCst) == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the dropped call never finished");
    }
}
