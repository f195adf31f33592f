//! Calls to replicas whose answers arrive on one channel as they come.
//!
//! More calls can be started while waiting (a write adds fallbacks as
//! primaries fail); [`Calls::seal`] says none will be, so the channel ends
//! once every call answered. Calls outlive their receiver: a write's
//! remaining merges finish after the client has its answer.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::peer::{Call, Rpc, Transport};

/// Who answered, and what: a reply of type `T`, or why none came.
pub(super) type Answer<T> = (String, Result<T>);

/// Calls whose replies are all of type `T` (the reads of a read, the
/// merges and hints of a write).
pub(super) struct Calls<T> {
    transport: Arc<dyn Transport>,
    tx: Option<mpsc::UnboundedSender<Answer<T>>>,
    rx: mpsc::UnboundedReceiver<Answer<T>>,
    /// Calls started whose answer [`Calls::recv`] has not returned yet.
    outstanding: usize,
}

impl<T: Send + 'static> Calls<T> {
    pub(super) fn new(transport: Arc<dyn Transport>) -> Calls<T> {
        let (tx, rx) = mpsc::unbounded_channel();
        Calls {
            transport,
            tx: Some(tx),
            rx,
            outstanding: 0,
        }
    }

    /// Sends `request` to `to` in the background.
    pub(super) fn start<R: Rpc<Reply = T>>(&mut self, to: String, request: R) {
        let reply = self.transport.rpc(&to, request);
        self.add(to, reply);
    }

    /// Waits for `reply`, the answer of `to`, in the background.
    pub(super) fn add(&mut self, to: String, reply: Call<T>) {
        let Some(tx) = self.tx.clone() else {
            return;
        };
        self.outstanding += 1;
        tokio::spawn(async move {
            let _ = tx.send((to, reply.await));
        });
    }

    /// No call will be added: [`Calls::recv`] ends after the last answer.
    pub(super) fn seal(&mut self) {
        self.tx = None;
    }

    pub(super) async fn recv(&mut self) -> Option<Answer<T>> {
        let answer = self.rx.recv().await;
        if answer.is_some() {
            self.outstanding -= 1;
        }
        answer
    }

    /// Calls started and not yet answered through [`Calls::recv`].
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding
    }
}
