//! The replica: what a node does with a [`PeerRequest`] addressed to it.
//!
//! It owns the node's store and dot minter. Writes are answered only once
//! durable, so an acknowledgement from a replica means the data survives a
//! crash of that replica.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::peer::{PeerRequest, PeerResponse};
use crate::store::{Identity, Store};

pub struct Replica {
    store: Arc<dyn Store>,
    identity: Identity,
    max_siblings: usize,
}

impl Replica {
    /// `max_siblings` bounds what a client write may leave behind; merges
    /// from other replicas are never refused, so no stored write is lost.
    pub fn new(store: Arc<dyn Store>, node: &str, max_siblings: usize) -> Result<Replica> {
        let identity = Identity::load(store.as_ref(), node)?;
        Ok(Replica {
            store,
            identity,
            max_siblings,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub async fn handle(&self, request: PeerRequest) -> Result<PeerResponse> {
        match request {
            PeerRequest::Read { key } => Ok(PeerResponse::Value(self.store.get(&key)?)),
            PeerRequest::Coordinate {
                key,
                context,
                content,
            } => {
                let mut minted = None;
                let (set, durable) = self.store.update(&key, &mut |current| {
                    let mut set = current.unwrap_or_default();
                    let floor = set.min_counter(&context, self.identity.actor());
                    let dot = self.identity.mint(self.store.as_ref(), floor)?;
                    set.write(&context, dot.clone(), content.clone());
                    if set.siblings().len() > self.max_siblings {
                        return Err(Error::TooManySiblings {
                            count: set.siblings().len(),
                            max: self.max_siblings,
                        });
                    }
                    minted = Some(dot);
                    Ok(set)
                })?;
                durable.wait().await?;
                let dot = minted.ok_or_else(|| Error::Storage("the write minted no dot".into()))?;
                Ok(PeerResponse::Coordinated { dot, set })
            }
            PeerRequest::Merge { key, set } => {
                if !set.is_well_formed() {
                    return Err(Error::Protocol(format!(
                        "the sibling set sent for `{key}` breaks its invariants"
                    )));
                }
                let (_, durable) = self.store.update(&key, &mut |current| {
                    let mut local = current.unwrap_or_default();
                    local.merge(&set);
                    Ok(local)
                })?;
                durable.wait().await?;
                Ok(PeerResponse::Merged)
            }
        }
    }
}
