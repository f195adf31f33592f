//! Peer authentication at the edges: the signer a node's transport stamps
//! its requests with, and the verifier `POST /peer` runs on the headers
//! before it reads a byte of the body ([`Verifier::verify_head`]), and on
//! the body once read ([`Verifier::verify_body`]). The pure rules are in
//! [`super::peer_auth`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::peer_auth::{ANY_RECEIVER, Refusal, Replays, Secret, Stamp};
use crate::clock::Clock;
use crate::metrics as m;

/// How long before a node's start a request may have been signed and still
/// be taken: peers send to a node that is starting (its listener already
/// queues connections, its peers' calls are in flight as it restarts), and
/// those requests are legitimate. A request captured within this time
/// before a restart can be replayed once to the next life; one captured
/// earlier never can.
pub const START_GRACE_MS: u64 = 5_000;

/// Stamps this node's peer requests: its id, its boot (the generation it
/// started in), a sequence number per request, the wall clock.
#[derive(Debug)]
pub struct Signer {
    secret: Secret,
    node: String,
    boot: u64,
    seq: AtomicU64,
    clock: Clock,
}

impl Signer {
    /// Signs as `node`, in the life that started at generation `boot` of
    /// `clock`.
    pub fn new(secret: &[u8], node: &str, boot: u64, clock: Clock) -> Signer {
        Signer {
            secret: Secret::new(secret),
            node: node.to_string(),
            boot,
            seq: AtomicU64::new(0),
            clock,
        }
    }

    /// The header value for a request to node `to` ([`ANY_RECEIVER`] for
    /// a request sent to an address) for service `rpc` (`name/version`)
    /// carrying `body`.
    pub fn sign(&self, to: &str, rpc: &str, body: &[u8]) -> String {
        let (len, digest) = Stamp::body(body);
        let stamp = Stamp {
            node: self.node.clone(),
            to: to.to_string(),
            rpc: rpc.to_string(),
            boot: self.boot,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            ts_ms: self.clock.now_ms(),
            len,
            digest,
        };
        self.secret.sign(&stamp)
    }

    /// The session key of the stream opened with the signed header
    /// `header`, to which the receiver answered with `nonce`
    /// ([`Secret::session_key`]).
    pub fn session_key(&self, header: &str, nonce: &[u8]) -> [u8; 32] {
        self.secret.session_key(header.as_bytes(), nonce)
    }
}

/// Checks the peer requests a node receives; with no secret configured
/// (a loopback dev node) it lets every request through.
#[derive(Debug)]
pub struct Verifier {
    /// This node's id: the receiver a request must be signed for.
    me: String,
    secret: Option<Secret>,
    replays: Mutex<Replays>,
    log: Mutex<LogLimit>,
    clock: Clock,
    /// This life's start (wall clock, ms) and the streams it accepted:
    /// what makes each stream's nonce new.
    boot: u64,
    streams: AtomicU64,
}

/// What [`Verifier::verify_head`] let through, and the body it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub verified: Verified,
    /// The signed body's length and digest (none when nothing is checked).
    signed: Option<(u64, [u8; 32])>,
}

impl Head {
    /// The signed length of the body: exactly what may be read.
    pub fn signed_len(&self) -> Option<u64> {
        self.signed.map(|(len, _)| len)
    }
}

/// What [`Verifier::verify_head`] let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// No secret is configured: nothing was checked.
    Open,
    /// Signed for this node.
    ToMe,
    /// Signed for any receiver: sent to an address, as a join is.
    ToAny,
}

#[derive(Debug)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

/// At most one warning per this long; the rest are counted into the next.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Verifier {
    /// The verifier of node `me`, starting now: it refuses requests
    /// signed more than [`START_GRACE_MS`] before this instant, which its
    /// windows never saw.
    pub fn new(me: &str, secret: Option<&[u8]>, skew_ms: u64, clock: Clock) -> Verifier {
        let started = clock.now_ms().saturating_sub(START_GRACE_MS);
        Verifier {
            me: me.to_string(),
            secret: secret.map(Secret::new),
            replays: Mutex::new(Replays::new(skew_ms, started)),
            log: Mutex::new(LogLimit {
                last: None,
                suppressed: 0,
            }),
            boot: clock.generation(),
            streams: AtomicU64::new(0),
            clock,
        }
    }

    /// Lets a request's headers through, or refuses them, before a byte
    /// of its body is read: `header` is its [`AUTH_HEADER`](super::peer_auth::AUTH_HEADER),
    /// `rpc` its service (`name/version`).
    /// A refusal is counted in `chorus_peer_auth_refused_total{reason}`
    /// and logged at most once per 10 s. What it lets through was signed
    /// for this node, or for [`ANY_RECEIVER`] ([`Verified::ToAny`]: only a
    /// service that allows it applies that), and its nonce is spent.
    pub fn verify_head(&self, header: Option<&[u8]>, rpc: &str) -> Result<Head, Refusal> {
        let Some(secret) = &self.secret else {
            return Ok(Head {
                verified: Verified::Open,
                signed: None,
            });
        };
        let checked = header
            .ok_or(Refusal::Missing)
            .and_then(|h| std::str::from_utf8(h).map_err(|_| Refusal::Malformed("not UTF-8")))
            .and_then(|h| secret.check(h))
            .and_then(|stamp| match stamp.to.as_str() {
                to if to == self.me => Ok((stamp, Verified::ToMe)),
                ANY_RECEIVER => Ok((stamp, Verified::ToAny)),
                _ => Err(Refusal::Misdirected),
            })
            .and_then(|(stamp, verified)| {
                if stamp.rpc != rpc {
                    return Err(Refusal::Misrouted);
                }
                let now = self.clock.now_ms();
                self.replays.lock().admit(&stamp, now)?;
                self.clock.heard_from(&stamp.node, stamp.ts_ms);
                Ok(Head {
                    verified,
                    signed: Some((stamp.len, stamp.digest)),
                })
            });
        checked.inspect_err(|refusal| self.refused(refusal))
    }

    /// A fresh nonce for a stream whose opening request's header
    /// [`Verifier::verify_head`] let through, and the stream's session key;
    /// none without a secret.
    pub fn stream_key(&self, header: Option<&[u8]>) -> Option<([u8; 16], [u8; 32])> {
        let secret = self.secret.as_ref()?;
        let n = self.streams.fetch_add(1, Ordering::Relaxed);
        let nonce = secret.stream_nonce(self.boot, n);
        Some((nonce, secret.session_key(header?, &nonce)))
    }

    /// Checks a body's declared length (`Content-Length`) against the
    /// length signed, before reading it.
    pub fn verify_length(&self, head: &Head, declared: u64) -> Result<(), Refusal> {
        match head.signed_len() {
            Some(len) if len != declared => {
                self.refused(&Refusal::BadBody);
                Err(Refusal::BadBody)
            }
            _ => Ok(()),
        }
    }

    /// Checks the body read against the length and digest signed.
    pub fn verify_body(&self, head: &Head, body: &[u8]) -> Result<(), Refusal> {
        match head.signed {
            Some(signed) if Stamp::body(body) != signed => {
                self.refused(&Refusal::BadBody);
                Err(Refusal::BadBody)
            }
            _ => Ok(()),
        }
    }

    fn refused(&self, refusal: &Refusal) {
        metrics::counter!(m::PEER_AUTH_REFUSED_TOTAL, "reason" => refusal.label()).increment(1);
        self.log(refusal);
    }

    fn log(&self, refusal: &Refusal) {
        let mut log = self.log.lock();
        let now = Instant::now();
        if log
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(now);
        drop(log);
        tracing::warn!(%refusal, suppressed, "refused a peer request");
    }
}
