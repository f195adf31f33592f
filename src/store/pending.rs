//! The result of an update, in two steps: the new sibling set as soon as it
//! is in the local store (committed, not yet fsynced), and the word that it
//! is durable.
//!
//! Most callers only [`Pending::wait`] for both. A coordinator that mints a
//! write takes the set at once ([`Pending::applied_with_bytes`]) to send it to the
//! other replicas while its own copy is still being fsynced, so the fsyncs
//! of the replicas overlap instead of following one another; it counts its
//! own acknowledgement only once [`Durable::wait`] says so.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::version::SiblingSet;

/// Resolves to an update's new sibling set, then to its durability.
#[must_use = "an update is not acknowledged until it is durable"]
pub struct Pending {
    applied: Step<Applied>,
    durable: Durable,
}

/// Resolves once an applied update is durable.
#[must_use = "an update is not acknowledged until it is durable"]
pub struct Durable(Step<()>);

enum Step<T> {
    Ready(Result<T>),
    Waiting(oneshot::Receiver<Result<T>>),
}

impl<T> Step<T> {
    async fn wait(self) -> Result<T> {
        match self {
            Step::Ready(result) => result,
            Step::Waiting(rx) => rx.await.map_err(|_| {
                Error::Storage("the store closed before the write was durable".into())
            })?,
        }
    }
}

/// An update's new set, and its bytes as the store wrote them when the
/// store hands them back (the fjall store does; an empty set has none).
pub(crate) type Applied = (SiblingSet, Option<Bytes>);

impl Pending {
    /// An update that is already applied (and as durable as it will be).
    pub fn ready(result: Result<SiblingSet>) -> Pending {
        Pending {
            applied: Step::Ready(result.map(|set| (set, None))),
            durable: Durable(Step::Ready(Ok(()))),
        }
    }

    /// An update applied at once whose durability arrives on `durable`.
    pub(crate) fn applied_then(
        applied: Result<SiblingSet>,
        durable: oneshot::Receiver<Result<()>>,
    ) -> Pending {
        Pending {
            applied: Step::Ready(applied.map(|set| (set, None))),
            durable: Durable(Step::Waiting(durable)),
        }
    }

    /// An update whose new set arrives on `applied` and whose durability
    /// on `durable`.
    pub(crate) fn waiting(
        applied: oneshot::Receiver<Result<Applied>>,
        durable: oneshot::Receiver<Result<()>>,
    ) -> Pending {
        Pending {
            applied: Step::Waiting(applied),
            durable: Durable(Step::Waiting(durable)),
        }
    }

    /// The new set once computed (possibly before it is durable), the
    /// bytes the store wrote when it hands them back (a coordinator sends
    /// them to the other replicas instead of encoding the set again), and
    /// what resolves once it is durable. An update that failed fails here.
    pub async fn applied_with_bytes(self) -> Result<(SiblingSet, Option<Bytes>, Durable)> {
        let (set, bytes) = self.applied.wait().await?;
        Ok((set, bytes, self.durable))
    }

    /// As [`Pending::applied_with_bytes`], once the store has also said
    /// whether the set is durable (the [`Durable`] is then ready): one
    /// wake-up of the waiting task instead of two, for a caller that has
    /// nothing to do with the set before then.
    pub async fn settled_with_bytes(self) -> Result<(SiblingSet, Option<Bytes>, Durable)> {
        let durable = self.durable.wait().await;
        let (set, bytes) = self.applied.wait().await?;
        Ok((set, bytes, Durable(Step::Ready(durable))))
    }

    /// The new set, and whether it became durable: both once the store
    /// has said the second, so the waiting task is woken once per update,
    /// not twice ([`Pending::wait`]). An update that failed fails here.
    pub async fn settled(self) -> Result<(SiblingSet, Result<()>)> {
        let durable = self.durable.wait().await;
        let (set, _) = self.applied.wait().await?;
        Ok((set, durable))
    }

    /// The new set once it is durable.
    ///
    /// Waits on durability alone: the store sends the set before it says
    /// the update is durable, so the set is there by then and the waiting
    /// task is woken once per update, not twice. A failed update has no
    /// durability to send; its own error comes from the set's step.
    pub async fn wait(self) -> Result<SiblingSet> {
        let (set, durable) = self.settled().await?;
        durable?;
        Ok(set)
    }
}

impl Durable {
    pub async fn wait(self) -> Result<()> {
        self.0.wait().await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    /// Counts the times a task would be woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A write with no replica to send its set to (a mint alone, or one
    /// a peer asked for and answers once durable) wakes its task once,
    /// and its durability is then known without waiting.
    #[test]
    fn settling_with_the_bytes_wakes_once_and_leaves_durable_ready() {
        let (applied_tx, applied) = oneshot::channel();
        let (durable_tx, durable) = oneshot::channel();
        let mut settled = Box::pin(Pending::waiting(applied, durable).settled_with_bytes());
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        assert!(settled.as_mut().poll(&mut cx).is_pending());
        let bytes = Bytes::from_static(b"set");
        applied_tx
            .send(Ok((SiblingSet::new(), Some(bytes.clone()))))
            .expect("the receiver is alive");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken by the set alone");
        durable_tx
            .send(Err(Error::Storage("fsync failed".into())))
            .expect("the receiver is alive");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        let Poll::Ready(Ok((set, kept, durable))) = settled.as_mut().poll(&mut cx) else {
            panic!("not settled");
        };
        assert_eq!((set, kept), (SiblingSet::new(), Some(bytes)));
        let mut durable = Box::pin(durable.wait());
        match durable.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => assert!(e.to_string().contains("fsync failed"), "{e}"),
            other => panic!("durability not ready or lost: {other:?}"),
        }
    }

    #[test]
    fn settling_wakes_the_waiting_task_once_per_update() {
        let (applied_tx, applied) = oneshot::channel();
        let (durable_tx, durable) = oneshot::channel();
        let mut settled = Box::pin(Pending::waiting(applied, durable).settled());
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        assert!(settled.as_mut().poll(&mut cx).is_pending());
        // The store sends the set first: nobody waits on it yet.
        applied_tx
            .send(Ok((SiblingSet::new(), None)))
            .expect("the receiver is alive");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken by the set alone");
        durable_tx.send(Ok(())).expect("the receiver is alive");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        match settled.as_mut().poll(&mut cx) {
            Poll::Ready(Ok((set, Ok(())))) => assert_eq!(set, SiblingSet::new()),
            other => panic!("not settled: {:?}", other.map(|r| r.map(|(_, d)| d))),
        }
    }

    #[test]
    fn a_failed_fsync_still_hands_over_the_set_it_failed_to_make_durable() {
        let (applied_tx, applied) = oneshot::channel();
        let (durable_tx, durable) = oneshot::channel();
        applied_tx
            .send(Ok((SiblingSet::new(), None)))
            .expect("the receiver is alive");
        durable_tx
            .send(Err(Error::Storage("fsync failed".into())))
            .expect("the receiver is alive");
        let settled =
            futures_util::FutureExt::now_or_never(Pending::waiting(applied, durable).settled());
        match settled {
            Some(Ok((_, Err(Error::Storage(message))))) => assert_eq!(message, "fsync failed"),
            other => panic!(
                "expected the set and the fsync's error: {:?}",
                other.is_some()
            ),
        }
    }
}
