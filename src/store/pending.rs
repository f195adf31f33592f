//! The result of an update, in two steps: the new sibling set as soon as it
//! is in the local store (committed, not yet fsynced), and the word that it
//! is durable.
//!
//! Most callers only [`Pending::wait`] for both. A coordinator that mints a
//! write takes the set at once ([`Pending::applied`]) to send it to the
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

    /// The new set once computed (possibly before it is durable), and what
    /// resolves once it is. An update that failed fails here.
    pub async fn applied(self) -> Result<(SiblingSet, Durable)> {
        Ok((self.applied.wait().await?.0, self.durable))
    }

    /// [`Pending::applied`], with the bytes the store wrote when it hands
    /// them back: a coordinator sends them to the other replicas instead
    /// of encoding the set again.
    pub async fn applied_with_bytes(self) -> Result<(SiblingSet, Option<Bytes>, Durable)> {
        let (set, bytes) = self.applied.wait().await?;
        Ok((set, bytes, self.durable))
    }

    /// The new set once it is durable.
    ///
    /// Waits on durability alone: the store sends the set before it says
    /// the update is durable, so the set is there by then and the waiting
    /// task is woken once per update, not twice. A failed update has no
    /// durability to send; its own error comes from the set's step.
    pub async fn wait(self) -> Result<SiblingSet> {
        let durable = self.durable.wait().await;
        let (set, _) = self.applied.wait().await?;
        durable?;
        Ok(set)
    }
}

impl Durable {
    pub async fn wait(self) -> Result<()> {
        self.0.wait().await
    }
}
