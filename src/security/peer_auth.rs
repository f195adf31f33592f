//! Peer authentication: every node-to-node request carries an HMAC-SHA256
//! over its stamp, keyed by the cluster's shared secret, with a timestamp
//! and a nonce the receiver will accept only once.
//!
//! The signed text is [`DOMAIN`], then the sender's node id, the
//! receiver's node id, the service and version the request is for (the
//! `x-chorus-rpc` header), the sender's boot
//! (the generation it started in: milliseconds since the epoch at start,
//! larger after every restart), a sequence number counting up from 1
//! within the boot, the sender's wall clock in milliseconds, and the body's
//! length and BLAKE3 digest. The header carries all of it but the secret,
//! so the receiver checks the MAC from the headers alone, before it reads a
//! byte of the body: a stranger's body is never read, however large it
//! claims to be. The body read then must have exactly the signed length
//! and digest.
//!
//! The receiver is in the MAC so that a request captured on its way to one
//! node cannot be replayed to another, whose replay window never saw it;
//! the service is in it so that a body cannot be replayed to another
//! service. A request sent to an address rather than a member (a join, to
//! the seed the operator named) is signed for [`ANY_RECEIVER`]; the
//! receiver then accepts it only as a join, which admits the sender's own
//! id and address wherever it lands.
//!
//! A receiver refuses, in this order and before it reads the body:
//! - a header that does not parse;
//! - a MAC that does not match (wrong secret, or changed fields);
//! - a request signed for another node, or another service;
//! - a timestamp further than the skew window from its own clock;
//! - a timestamp from before the receiver started (this life's windows
//!   never saw what was sent to its last life);
//! - a nonce seen before: it keeps, per sender, the newest boot and a
//!   sliding window of the last [`WINDOW`] sequence numbers (as IPsec does
//!   against replays), so an HTTP/2 request overtaken by a later one is
//!   still accepted once, and an older boot (a replay of a message from
//!   before the sender restarted) never is.
//!
//! Only a request whose MAC matched can touch the window state, so a
//! stranger cannot fill it; the state is one entry per sender, at most
//! [`MAX_SENDERS`], the least recently heard evicted first.
//!
//! The windows live in memory and die with the receiver; what guards a
//! restarted receiver is its start: it refuses every stamp older than the
//! instant it started, by its own clock, less a grace for the requests
//! peers had in flight as it started (`security::peer::START_GRACE_MS`,
//! 5 s). So a message captured more than the grace before a receiver
//! restarts is never accepted after, unless the sender's clock ran ahead
//! of the receiver's by more than that. The price is the converse: a
//! sender whose clock lags the receiver's by L ms beyond the grace is
//! refused (`before_start`; it retries) for the first L ms of the
//! receiver's life. Clocks kept by NTP are milliseconds apart.
//!
//! What it does not do: hide the bytes (TLS does that, `security.tls`).
//!
//! Pure: the caller passes the clock.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a peer request's authentication travels in.
pub const AUTH_HEADER: &str = "x-chorus-peer-auth";
/// What the MAC covers first, so a MAC made for anything else never matches.
pub const DOMAIN: &[u8] = b"chorus peer request v3\n";
/// The receiver of a request sent to an address, not to a member.
pub const ANY_RECEIVER: &str = "*";
/// Sequence numbers each sender may arrive out of order within.
pub const WINDOW: u64 = 1024;
/// Senders a receiver keeps replay windows for.
pub const MAX_SENDERS: usize = 4096;
pub use crate::config::MIN_SECRET_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// What a sender writes into [`AUTH_HEADER`], besides the MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub node: String,
    /// The node the request is for, or [`ANY_RECEIVER`].
    pub to: String,
    /// The service and version (`name/version`).
    pub rpc: String,
    pub boot: u64,
    pub seq: u64,
    pub ts_ms: u64,
    /// The body's length and BLAKE3 digest.
    pub len: u64,
    pub digest: [u8; 32],
}

impl Stamp {
    /// The length and digest of `body`, as a stamp records them.
    pub fn body(body: &[u8]) -> (u64, [u8; 32]) {
        (body.len() as u64, *blake3::hash(body).as_bytes())
    }
}

/// Why a request was refused; `label()` is the metric's `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No authentication header at all.
    Missing,
    /// A header that does not parse.
    Malformed(&'static str),
    /// The MAC does not match: a wrong secret or changed bytes.
    BadMac,
    /// Signed for another node: a replay of what was sent there.
    Misdirected,
    /// Signed for another service than the request names.
    Misrouted,
    /// The body is not the one signed: another length or digest.
    BadBody,
    /// The timestamp is outside the skew window.
    Stale { skew_ms: u64 },
    /// The timestamp is from before this node started.
    BeforeStart,
    /// The nonce was seen before, or belongs to an older boot.
    Replayed,
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed(_) => "malformed",
            Refusal::BadMac => "bad_mac",
            Refusal::Misdirected => "misdirected",
            Refusal::Misrouted => "misrouted",
            Refusal::BadBody => "bad_body",
            Refusal::Stale { .. } => "stale",
            Refusal::BeforeStart => "before_start",
            Refusal::Replayed => "replayed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => write!(f, "no {AUTH_HEADER} header"),
            Refusal::Malformed(what) => write!(f, "the {AUTH_HEADER} header is malformed: {what}"),
            Refusal::BadMac => write!(f, "the MAC does not match (a different cluster secret?)"),
            Refusal::Misdirected => write!(
                f,
                "the request was signed for another node (a replay of a request to it?)"
            ),
            Refusal::Misrouted => write!(f, "the request was signed for another service"),
            Refusal::BadBody => write!(
                f,
                "the body is not the one signed (another length or digest)"
            ),
            Refusal::Stale { skew_ms } => write!(
                f,
                "the timestamp is more than {skew_ms} ms from this node's clock (clocks apart?)"
            ),
            Refusal::BeforeStart => write!(
                f,
                "the request was signed before this node started (a replay of a request \
                 to its last life, or the sender's clock is behind)"
            ),
            Refusal::Replayed => write!(f, "this request was seen before (a replay)"),
        }
    }
}

impl From<Refusal> for crate::error::Error {
    /// A refused peer request: a 401 that says why.
    fn from(refusal: Refusal) -> Self {
        crate::error::Error::PeerUnauthenticated(refusal.to_string())
    }
}

/// The cluster's shared secret, keyed once.
#[derive(Clone)]
pub struct Secret(HmacSha256);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(bytes: &[u8]) -> Secret {
        // HMAC takes a key of any length.
        Secret(HmacSha256::new_from_slice(bytes).expect("HMAC accepts any key length"))
    }

    fn mac(&self, stamp: &Stamp) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        for name in [&stamp.node, &stamp.to, &stamp.rpc] {
            mac.update(name.as_bytes());
            mac.update(b"\n");
        }
        for n in [stamp.boot, stamp.seq, stamp.ts_ms, stamp.len] {
            mac.update(&n.to_be_bytes());
        }
        mac.update(&stamp.digest);
        mac
    }

    /// The header value for a request with this stamp.
    pub fn sign(&self, stamp: &Stamp) -> String {
        let tag = self.mac(stamp).finalize().into_bytes();
        format!(
            "node={} to={} rpc={} boot={} seq={} ts={} len={} digest={} mac={}",
            stamp.node,
            stamp.to,
            stamp.rpc,
            stamp.boot,
            stamp.seq,
            stamp.ts_ms,
            stamp.len,
            hex(&stamp.digest),
            hex(&tag)
        )
    }

    /// The stamp of a header whose MAC matches; nothing else is believed
    /// of a header before this says yes. The body is checked against the
    /// stamp once read ([`Stamp::body`]).
    pub fn check(&self, header: &str) -> Result<Stamp, Refusal> {
        let (stamp, tag) = parse(header)?;
        self.mac(&stamp)
            .verify_slice(&tag)
            .map_err(|_| Refusal::BadMac)?;
        Ok(stamp)
    }
}

/// What a stream's session key derives from first ([`Secret::session_key`]).
pub const STREAM_DOMAIN: &[u8] = b"chorus peer stream v1\n";

impl Secret {
    /// The key of the stream opened by the request whose
    /// [`AUTH_HEADER`] is `header`: secret to whoever lacks the cluster
    /// secret, and never the same twice, since a receiver accepts each
    /// signed header once (`peer::stream`).
    ///
    /// `nonce` is the receiver's, sent back in its `101`
    /// ([`Secret::stream_nonce`]): so a stream's key is fresh even when its
    /// opening was replayed to a receiver that restarted within the start
    /// grace, and a stranger who answers the `101` in the receiver's place
    /// cannot make the sender key frames the receiver will take later.
    pub fn session_key(&self, header: &[u8], nonce: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(STREAM_DOMAIN);
        mac.update(&(header.len() as u64).to_be_bytes());
        mac.update(header);
        mac.update(nonce);
        mac.finalize().into_bytes().into()
    }

    /// The receiver's nonce for the `n`th stream it accepts in the life
    /// that started at `boot`: never the same twice, and unpredictable to
    /// whoever lacks the secret.
    pub fn stream_nonce(&self, boot: u64, n: u64) -> [u8; 16] {
        let mut mac = self.0.clone();
        mac.update(b"chorus peer stream nonce v1\n");
        mac.update(&boot.to_be_bytes());
        mac.update(&n.to_be_bytes());
        let mut nonce = [0; 16];
        nonce.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        nonce
    }
}

/// Lower-case hex, into one allocation (this runs twice per peer request).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn parse(header: &str) -> Result<(Stamp, Vec<u8>), Refusal> {
    if header.len() > 768 {
        return Err(Refusal::Malformed("longer than 768 bytes"));
    }
    let mut fields = header.split(' ');
    let mut next = |name: &'static str| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('='))
            .ok_or(Refusal::Malformed(name))
    };
    let node = next("node")?.to_string();
    let to = next("to")?.to_string();
    let rpc = next("rpc")?.to_string();
    let number = |text: &str, name| text.parse::<u64>().map_err(|_| Refusal::Malformed(name));
    let boot = number(next("boot")?, "boot")?;
    let seq = number(next("seq")?, "seq")?;
    let ts_ms = number(next("ts")?, "ts")?;
    let len = number(next("len")?, "len")?;
    let digest = unhex(next("digest")?)
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or(Refusal::Malformed("digest"))?;
    let tag = unhex(next("mac")?).ok_or(Refusal::Malformed("mac"))?;
    if node.is_empty() || to.is_empty() || rpc.is_empty() || seq == 0 {
        return Err(Refusal::Malformed("node, to, rpc or seq"));
    }
    Ok((
        Stamp {
            node,
            to,
            rpc,
            boot,
            seq,
            ts_ms,
            len,
            digest,
        },
        tag,
    ))
}

/// One sender's replay window: its newest boot, the highest sequence
/// number seen in it, and which of the [`WINDOW`] numbers up to it were
/// seen (bit `seq % WINDOW`).
#[derive(Clone, Debug)]
struct Window {
    boot: u64,
    top: u64,
    seen: [u64; (WINDOW / 64) as usize],
    heard: u64,
}

fn slot(seq: u64) -> (usize, u64) {
    let i = seq % WINDOW;
    ((i / 64) as usize, 1 << (i % 64))
}

impl Window {
    fn new(boot: u64) -> Window {
        Window {
            boot,
            top: 0,
            seen: [0; (WINDOW / 64) as usize],
            heard: 0,
        }
    }

    /// Accepts `seq` once, sliding the window up when it is the newest.
    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.top {
            if seq - self.top >= WINDOW {
                self.seen = [0; (WINDOW / 64) as usize];
            } else {
                for passed in self.top + 1..=seq {
                    let (word, bit) = slot(passed);
                    self.seen[word] &= !bit;
                }
            }
            self.top = seq;
        } else if self.top - seq >= WINDOW {
            return false;
        }
        let (word, bit) = slot(seq);
        if self.seen[word] & bit != 0 {
            return false;
        }
        self.seen[word] |= bit;
        true
    }
}

/// What a receiver remembers of its senders, to accept each nonce once.
#[derive(Debug)]
pub struct Replays {
    skew_ms: u64,
    /// When this receiver started, by its own clock.
    started_ms: u64,
    senders: HashMap<String, Window>,
    clock: u64,
}

impl Replays {
    /// A receiver that started at `started_ms` (its wall clock).
    pub fn new(skew_ms: u64, started_ms: u64) -> Replays {
        Replays {
            skew_ms,
            started_ms,
            senders: HashMap::new(),
            clock: 0,
        }
    }

    /// Accepts an authenticated stamp at `now_ms` (this node's wall clock)
    /// once; refuses it when stale, older than this receiver, or seen
    /// before.
    pub fn admit(&mut self, stamp: &Stamp, now_ms: u64) -> Result<(), Refusal> {
        if stamp.ts_ms.abs_diff(now_ms) > self.skew_ms {
            return Err(Refusal::Stale {
                skew_ms: self.skew_ms,
            });
        }
        if stamp.ts_ms < self.started_ms {
            return Err(Refusal::BeforeStart);
        }
        self.clock += 1;
        // The sender's id is copied only when it is new, not per request.
        if !self.senders.contains_key(&stamp.node) {
            if self.senders.len() >= MAX_SENDERS {
                let oldest = self
                    .senders
                    .iter()
                    .min_by_key(|(_, w)| w.heard)
                    .map(|(node, _)| node.clone());
                if let Some(oldest) = oldest {
                    self.senders.remove(&oldest);
                }
            }
            self.senders
                .insert(stamp.node.clone(), Window::new(stamp.boot));
        }
        let Some(window) = self.senders.get_mut(&stamp.node) else {
            return Err(Refusal::Replayed); // inserted just above
        };
        if stamp.boot < window.boot {
            return Err(Refusal::Replayed);
        }
        if stamp.boot > window.boot {
            *window = Window::new(stamp.boot);
        }
        window.heard = self.clock;
        if window.accept(stamp.seq) {
            Ok(())
        } else {
            Err(Refusal::Replayed)
        }
    }

    /// Senders remembered (bounded by [`MAX_SENDERS`]).
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}
