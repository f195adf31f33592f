//! The coordinator's peer messages: a client request that reached a node
//! outside the key's preference list, forwarded once to a replica, which
//! coordinates it and never forwards it again.
//!
//! | request | reply |
//! |---|---|
//! | [`ForwardRead`] | `Option<SiblingSet>`: the merged set over the replicas |
//! | [`ForwardWrite`] | [`Written`]: the write's dot and set |
//!
//! The receiver checks what the forwarding node sent (the quorum against
//! its N, the time left, the request id's length) before it runs it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::quorum::Quorum;
use super::{Coordinator, Write, Written};
use crate::config::MAX_TIMEOUT_MS;
use crate::error::{Error, Result};
use crate::peer::{Rpc, Service, Services};
use crate::version::{Content, Context, MAX_REQUEST_RECORD, SiblingSet};

/// A client read, with the quorum the client asked for and the time left
/// of its deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRead {
    pub key: String,
    pub quorum: Quorum,
    pub timeout_ms: u64,
    /// The client's context: the answer must have seen all of it.
    pub session: Option<Context>,
}

impl Rpc for ForwardRead {
    const SERVICE: Service = Service::new("coordinator.read", 1);
    type Reply = Option<SiblingSet>;
}

/// A client write, with the quorum the client asked for and the time left
/// of its deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardWrite {
    pub key: String,
    pub context: Context,
    pub content: Content,
    pub quorum: Quorum,
    pub timeout_ms: u64,
    pub request_id: Option<String>,
}

impl Rpc for ForwardWrite {
    const SERVICE: Service = Service::new("coordinator.write", 1);
    type Reply = Written;
}

impl Coordinator {
    /// Registers the coordinator's handlers in `services`.
    pub fn serve(self: &Arc<Self>, services: &Services) {
        let coordinator = Arc::clone(self);
        services.register(move |r: ForwardRead| {
            let coordinator = Arc::clone(&coordinator);
            async move {
                let deadline = coordinator.forwarded_deadline(&r.quorum, r.timeout_ms)?;
                coordinator
                    .read(&r.key, r.quorum, deadline, r.session, true, None)
                    .await
            }
        });
        let coordinator = Arc::clone(self);
        services.register(move |w: ForwardWrite| {
            let coordinator = Arc::clone(&coordinator);
            async move {
                let deadline = coordinator.forwarded_deadline(&w.quorum, w.timeout_ms)?;
                if w.request_id
                    .as_ref()
                    .is_some_and(|id| id.len() > MAX_REQUEST_RECORD)
                {
                    return Err(Error::Protocol("a request id over 145 bytes".into()));
                }
                let write = Write {
                    context: w.context,
                    content: w.content,
                    request_id: w.request_id,
                    outbox: None,
                };
                coordinator
                    .write(&w.key, write, w.quorum, deadline, true)
                    .await
            }
        });
    }

    /// The deadline of a forwarded request, after checking what the peer
    /// sent.
    fn forwarded_deadline(&self, quorum: &Quorum, timeout_ms: u64) -> Result<Instant> {
        quorum.check(self.cluster.n())?;
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(Error::Protocol(format!(
                "a forwarded timeout of {timeout_ms} ms"
            )));
        }
        Ok(Instant::now() + Duration::from_millis(timeout_ms))
    }
}
