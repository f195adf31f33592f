//! The client context: what a client has seen, opaque to clients.
//!
//! A context is a version vector (everything the client read) plus a few
//! exact dots (the writes the client made since, which it knows without
//! having read the set they landed in). A GET returns the set's version
//! vector; a PUT returns the context it was given plus the dot it minted.
//! A plain version vector could not say "my write `a:57`" without also
//! claiming `a:1..56`, writes the client never saw.
//!
//! On the wire it is base64url (no padding) of a one-byte format tag, a
//! four-byte fingerprint of the cluster name and the postcard encoding of the
//! version vector and the dots. The fingerprint makes a context from another cluster an
//! error instead of a silent, meaningless comparison.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use serde::{Deserialize, Serialize};

use super::actor::{Actor, Dot, VersionVector, covers};

const FORMAT: u8 = 1;
const HEADER_LEN: usize = 5;
/// Longest encoded context accepted: a few hundred actors, far above any
/// real cluster, small enough that a hostile header cannot cost much.
pub const MAX_ENCODED_LEN: usize = 16 * 1024;
/// Exact dots kept in a context. A client chaining more blind writes than
/// this without a read forgets the oldest; at worst that leaves a sibling
/// it could have removed, never removes one it did not see.
pub const MAX_DOTS: usize = 16;

/// Why a context from a client could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    #[error("the context is longer than {MAX_ENCODED_LEN} characters")]
    TooLong,
    #[error("the context is not base64url")]
    NotBase64,
    #[error("the context is not in a format this node knows")]
    UnknownFormat,
    #[error("the context was issued by another cluster")]
    Foreign,
    #[error("the context is corrupt")]
    Corrupt,
}

/// A causal context as handed to and taken back from clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Everything the client read.
    pub vv: VersionVector,
    /// The client's own writes since, each known exactly.
    pub dots: Vec<Dot>,
}

/// The fingerprint of a cluster name carried in every context.
pub fn cluster_fingerprint(cluster: &str) -> [u8; 4] {
    let hash = blake3::hash(cluster.as_bytes());
    let mut out = [0; 4];
    out.copy_from_slice(&hash.as_bytes()[..4]);
    out
}

impl Context {
    /// The context of a read: the set's version vector.
    pub fn read(vv: VersionVector) -> Context {
        Context {
            vv,
            dots: Vec::new(),
        }
    }

    /// The context after this client's write under `dot`.
    pub fn after_write(mut self, dot: Dot) -> Context {
        self.dots.retain(|d| !covers(&self.vv, d) && d != &dot);
        if self.dots.len() >= MAX_DOTS {
            self.dots.remove(0);
        }
        self.dots.push(dot);
        self
    }

    /// Whether the client has seen the write `dot`.
    pub fn covers(&self, dot: &Dot) -> bool {
        covers(&self.vv, dot) || self.dots.contains(dot)
    }

    /// Whether a set whose version vector is `vv` has seen everything this
    /// context has: the session guarantee of a read (read-your-writes,
    /// monotonic reads).
    pub fn is_seen_by(&self, vv: &VersionVector) -> bool {
        self.vv.iter().all(|d| vv.get(d.actor) >= d.counter)
            && self.dots.iter().all(|d| covers(vv, d))
    }

    /// Whether the context says nothing (a client that has seen nothing).
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.dots.is_empty()
    }

    /// The highest counter of `actor` the context mentions.
    pub fn max_counter(&self, actor: &Actor) -> u64 {
        self.dots
            .iter()
            .filter(|d| &d.actor == actor)
            .map(|d| d.counter)
            .fold(self.vv.get(actor), u64::max)
    }

    pub fn encode(&self, fingerprint: [u8; 4]) -> String {
        let mut raw = Vec::with_capacity(HEADER_LEN + 16 * (self.vv.dots.len() + self.dots.len()));
        raw.push(FORMAT);
        raw.extend_from_slice(&fingerprint);
        // Serializing strings and integers into a Vec cannot fail.
        let raw = postcard::to_extend(self, raw).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(text: &str, fingerprint: [u8; 4]) -> Result<Context, ContextError> {
        if text.len() > MAX_ENCODED_LEN {
            return Err(ContextError::TooLong);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| ContextError::NotBase64)?;
        let Some((&format, rest)) = raw.split_first() else {
            return Err(ContextError::UnknownFormat);
        };
        if format != FORMAT {
            return Err(ContextError::UnknownFormat);
        }
        let (theirs, body) = rest.split_at_checked(4).ok_or(ContextError::Corrupt)?;
        if theirs != fingerprint {
            return Err(ContextError::Foreign);
        }
        let (ctx, trailing): (Context, _) =
            postcard::take_from_bytes(body).map_err(|_| ContextError::Corrupt)?;
        let zero = ctx.vv.dots.values().any(|&c| c == 0) || ctx.dots.iter().any(|d| d.counter == 0);
        if !trailing.is_empty() || zero || ctx.dots.len() > MAX_DOTS {
            return Err(ContextError::Corrupt);
        }
        Ok(ctx)
    }
}
