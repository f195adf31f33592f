//! The client context: a version vector, opaque to clients.
//!
//! On the wire it is base64url (no padding) of a one-byte format tag, a
//! four-byte fingerprint of the cluster name and the postcard encoding of the
//! version vector. The fingerprint makes a context from another cluster an
//! error instead of a silent, meaningless comparison.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::actor::VersionVector;

const FORMAT: u8 = 1;
const HEADER_LEN: usize = 5;
/// Longest encoded context accepted: a few hundred actors, far above any
/// real cluster, small enough that a hostile header cannot cost much.
pub const MAX_ENCODED_LEN: usize = 16 * 1024;

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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(pub VersionVector);

/// The fingerprint of a cluster name carried in every context.
pub fn cluster_fingerprint(cluster: &str) -> [u8; 4] {
    let hash = blake3::hash(cluster.as_bytes());
    let mut out = [0; 4];
    out.copy_from_slice(&hash.as_bytes()[..4]);
    out
}

impl Context {
    pub fn encode(&self, fingerprint: [u8; 4]) -> String {
        let mut raw = Vec::with_capacity(HEADER_LEN + 16 * self.0.dots.len());
        raw.push(FORMAT);
        raw.extend_from_slice(&fingerprint);
        // Serializing a BTreeMap of strings and integers into a Vec cannot fail.
        let body = postcard::to_allocvec(&self.0).unwrap_or_default();
        raw.extend_from_slice(&body);
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
        let (vv, trailing): (VersionVector, _) =
            postcard::take_from_bytes(body).map_err(|_| ContextError::Corrupt)?;
        if !trailing.is_empty() || vv.dots.values().any(|&c| c == 0) {
            return Err(ContextError::Corrupt);
        }
        Ok(Context(vv))
    }
}
