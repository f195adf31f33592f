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
//! four-byte fingerprint of the cluster name, a four-byte fingerprint of
//! the key, the postcard encoding of the version vector and the dots, and
//! a 16-byte seal. The cluster fingerprint makes a context from another
//! cluster an error instead of a silent, meaningless comparison. The seal
//! is a keyed BLAKE3 MAC under a key derived from the cluster's peer secret
//! ([`Seal`]), over those bytes *and the whole key*, so a client can hand
//! back only contexts the cluster issued, and only to the key it read:
//!
//! - a forged context could claim dots of another node that do not exist
//!   yet, and every later write that node minted under them would look
//!   already seen and be dropped, acknowledged or not;
//! - a context of another key would cover siblings of this key that the
//!   client never saw (a node's counter is shared by all its keys, so the
//!   vector of key X says nothing of which dots of key Y were seen) and a
//!   write with it would delete them.
//!
//! The key fingerprint only tells the two refusals apart
//! ([`ContextError::KeyMismatch`] from [`ContextError::Forged`]); the seal
//! is what decides. A node without a secret (loopback only) seals under
//! the cluster name alone, which catches corruption and mistakes, not
//! forgery.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use serde::{Deserialize, Serialize};

use super::actor::{Actor, Dot, VersionVector, covers};

/// Format 3 is sealed and bound to its key; formats 1 (unsealed) and 2
/// (sealed, not bound to a key) are refused.
const FORMAT: u8 = 3;
/// A CRDT key's context ([`CrdtContext`]), sealed and bound as format 3.
const CRDT_FORMAT: u8 = 4;
/// A change feed's cursor (`crate::feed`), sealed like a context under the
/// feed's own name instead of a key.
pub(crate) const CURSOR_FORMAT: u8 = 5;
/// Format byte, cluster fingerprint, key fingerprint.
const HEADER_LEN: usize = 9;
/// Bytes of the seal: 128 bits.
const TAG_LEN: usize = 16;
/// Longest encoded context accepted: about 700 actors, small enough that a
/// hostile header cannot cost much. Every life of a node is an actor, so a
/// key written through many lives grows toward it (docs/consistency.md,
/// "The price").
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
    #[error(
        "the context's seal does not match: it was changed, or issued under another peer secret; read the key again for a fresh one"
    )]
    Forged,
    #[error(
        "the context was issued for another key; a context only ever applies to the key it was read from or written to"
    )]
    KeyMismatch,
    #[error("the context is corrupt")]
    Corrupt,
    #[error("the context is a plain key's (from /kv); a CRDT key takes the context of a GET /crdt")]
    PlainKey,
    #[error("the context is a CRDT key's (from /crdt); a plain key takes the context of a GET /kv")]
    CrdtKey,
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

/// What a node seals and checks contexts with: the cluster's fingerprint
/// and a MAC key derived from the cluster name and peer secret, the same on
/// every node, so any node accepts a context another issued.
#[derive(Clone)]
pub struct Seal {
    fingerprint: [u8; 4],
    key: [u8; 32],
}

impl Seal {
    pub fn new(cluster: &str, secret: Option<&[u8]>) -> Seal {
        // Domain and key are unchanged from format 2: the key binding is in
        // what is sealed, not in the MAC key.
        let mut key = blake3::Hasher::new_derive_key("chorus client context seal v1");
        key.update(&(cluster.len() as u64).to_le_bytes());
        key.update(cluster.as_bytes());
        key.update(secret.unwrap_or_default());
        Seal {
            fingerprint: cluster_fingerprint(cluster),
            key: *key.finalize().as_bytes(),
        }
    }

    /// The seal of the bytes before it, for the context of `key`.
    pub(crate) fn tag(&self, sealed: &[u8], key: &str) -> [u8; TAG_LEN] {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(sealed);
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&mac.finalize().as_bytes()[..TAG_LEN]);
        tag
    }

    /// Whether `tag` seals `sealed` for `key`, in time independent of
    /// where they differ.
    fn check(&self, sealed: &[u8], key: &str, tag: &[u8]) -> bool {
        <&[u8; TAG_LEN]>::try_from(tag)
            .is_ok_and(|tag| constant_time_eq::constant_time_eq_16(&self.tag(sealed, key), tag))
    }
}

/// The key's fingerprint carried in its contexts: it tells which key a
/// refused context was for and authenticates nothing. Unkeyed, so that a
/// context sealed under another secret is still reported as forged, not
/// as another key's.
fn key_fingerprint(key: &str) -> [u8; 4] {
    let mut hasher = blake3::Hasher::new_derive_key("chorus context key fingerprint v1");
    hasher.update(key.as_bytes());
    let mut out = [0; 4];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..4]);
    out
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
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

    /// The context as the client holds it: sealed, and good for `key` only.
    pub fn encode(&self, seal: &Seal, key: &str) -> String {
        let capacity = HEADER_LEN + TAG_LEN + 16 * (self.vv.dots.len() + self.dots.len());
        sealed(FORMAT, self, capacity, seal, key)
    }

    /// A context a client sent with a request on `key`: refused unless this
    /// cluster sealed it for that key.
    pub fn decode(text: &str, seal: &Seal, key: &str) -> Result<Context, ContextError> {
        let body = unsealed(text, FORMAT, seal, key)?;
        let (ctx, trailing): (Context, _) =
            postcard::take_from_bytes(&body).map_err(|_| ContextError::Corrupt)?;
        let zero = ctx.vv.dots.values().any(|&c| c == 0) || ctx.dots.iter().any(|d| d.counter == 0);
        if !trailing.is_empty() || zero || ctx.dots.len() > MAX_DOTS {
            return Err(ContextError::Corrupt);
        }
        Ok(ctx)
    }
}

/// The context of a CRDT key (`/crdt`): the clock of the state a client
/// read ([`Crdt::clock`](super::Crdt::clock)), which a set's remove sends
/// back so that it removes only what the client saw. Sealed and bound to
/// its key like a [`Context`], under its own format byte, so a context of
/// a plain key given to `/crdt`, or the reverse, is refused by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtContext {
    pub clock: VersionVector,
}

impl CrdtContext {
    pub fn encode(&self, seal: &Seal, key: &str) -> String {
        let capacity = HEADER_LEN + TAG_LEN + 16 * self.clock.dots.len();
        sealed(CRDT_FORMAT, self, capacity, seal, key)
    }

    pub fn decode(text: &str, seal: &Seal, key: &str) -> Result<CrdtContext, ContextError> {
        let body = unsealed(text, CRDT_FORMAT, seal, key)?;
        let (ctx, trailing): (CrdtContext, _) =
            postcard::take_from_bytes(&body).map_err(|_| ContextError::Corrupt)?;
        if !trailing.is_empty() || ctx.clock.dots.values().any(|&c| c == 0) {
            return Err(ContextError::Corrupt);
        }
        Ok(ctx)
    }
}

/// `payload` sealed for `key` under `format`, in base64url.
pub(crate) fn sealed(
    format: u8,
    payload: &impl Serialize,
    capacity: usize,
    seal: &Seal,
    key: &str,
) -> String {
    let mut raw = Vec::with_capacity(capacity);
    raw.push(format);
    raw.extend_from_slice(&seal.fingerprint);
    raw.extend_from_slice(&key_fingerprint(key));
    // Serializing strings and integers into a Vec cannot fail.
    let mut raw = postcard::to_extend(payload, raw).unwrap_or_default();
    let tag = seal.tag(&raw, key);
    raw.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The payload of a context sealed for `key` under `format`.
pub(crate) fn unsealed(
    text: &str,
    format: u8,
    seal: &Seal,
    key: &str,
) -> Result<Vec<u8>, ContextError> {
    if text.len() > MAX_ENCODED_LEN {
        return Err(ContextError::TooLong);
    }
    let mut raw = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| ContextError::NotBase64)?;
    match raw.first() {
        Some(&f) if f == format => {}
        Some(&FORMAT) => return Err(ContextError::PlainKey),
        Some(&CRDT_FORMAT) => return Err(ContextError::CrdtKey),
        _ => return Err(ContextError::UnknownFormat),
    }
    let rest = &raw[1..];
    let (theirs, rest) = rest.split_at_checked(4).ok_or(ContextError::Corrupt)?;
    if theirs != seal.fingerprint {
        return Err(ContextError::Foreign);
    }
    let for_key = rest.get(..4).ok_or(ContextError::Corrupt)?;
    let sealed_len = raw
        .len()
        .checked_sub(TAG_LEN)
        .filter(|&n| n >= HEADER_LEN)
        .ok_or(ContextError::Corrupt)?;
    let (sealed, tag) = raw.split_at(sealed_len);
    if !seal.check(sealed, key, tag) {
        // Sealed by this cluster for another key, or not by this cluster.
        return Err(if for_key != key_fingerprint(key) {
            ContextError::KeyMismatch
        } else {
            ContextError::Forged
        });
    }
    raw.truncate(sealed_len);
    raw.drain(..HEADER_LEN);
    Ok(raw)
}
