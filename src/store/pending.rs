//! The result of an update, delivered once it is durable.

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::version::SiblingSet;

/// Resolves to an update's new sibling set once the update is durable.
#[must_use = "an update is not acknowledged until it is durable"]
pub struct Pending(Inner);

enum Inner {
    Ready(Result<SiblingSet>),
    Waiting(oneshot::Receiver<Result<SiblingSet>>),
}

impl Pending {
    /// An update that is already applied (and as durable as it will be).
    pub fn ready(result: Result<SiblingSet>) -> Pending {
        Pending(Inner::Ready(result))
    }

    /// An update whose result will arrive on `rx`.
    pub(crate) fn waiting(rx: oneshot::Receiver<Result<SiblingSet>>) -> Pending {
        Pending(Inner::Waiting(rx))
    }

    pub async fn wait(self) -> Result<SiblingSet> {
        match self.0 {
            Inner::Ready(result) => result,
            Inner::Waiting(rx) => rx.await.map_err(|_| {
                Error::Storage("the store closed before the write was durable".into())
            })?,
        }
    }
}
