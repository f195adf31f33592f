//! Protocol versions: which encoding of each message two nodes use, so a
//! cluster can be upgraded one node at a time.
//!
//! A *protocol* is one number for the whole peer protocol of a build
//! ([`PROTOCOL`]); each version of a service belongs to the protocol that
//! introduced it ([`Service::since`](super::Service)). A build speaks
//! every protocol from [`OLDEST_PROTOCOL`] to its own: it keeps the older
//! versions of a changed message, their handlers registered beside the new
//! one, and can turn a request into its older form
//! ([`Rpc::frame_for`](super::Rpc::frame_for)).
//!
//! How two nodes agree, as Riak's capability negotiation does, without a
//! message of its own:
//! - every `POST /peer` answer (refusals too) carries the receiver's
//!   protocol in [`PROTOCOL_HEADER`]; a sender records it per peer
//!   ([`Versions::heard`]). A node of a build older than this header
//!   sends none, which reads as protocol 1;
//! - a sender talks to a peer at the lower of the two protocols, and at
//!   [`OLDEST_PROTOCOL`] to a peer it has not heard from yet: the first
//!   calls are always understood, and the heartbeats teach the real
//!   protocol within a second;
//! - a receiver refuses a version newer than the protocol it speaks with
//!   a typed 501 `unsupported_version` (and its header), never a panic or
//!   a silent drop: a peer that was rolled back is learned from that
//!   answer, and the call fails as any refused call does (a write is
//!   hinted, a read asks another replica).
//!
//! `cluster.protocol` caps what a node speaks (its default is this
//! build's): a node pinned to the older protocol advertises it, sends only
//! its versions and refuses newer ones, as a node of the older build
//! would. That is how the upgrade test runs a mixed cluster in one process,
//! and how an operator keeps the way back to the older build open until
//! every node runs the new one (docs/operations.md, Upgrading).

use std::collections::HashMap;

use parking_lot::RwLock;

/// The protocol this build speaks. 2: `replica.merge` carries the set as
/// it is encoded once per write. 3: the batchable calls travel on one
/// stream per peer (`super::stream`). 4: a sibling may hold a value with a
/// TTL (`Content::Expiring`); no message changed its encoding, but a node
/// of protocol 3 cannot decode a set that holds one, so a node takes TTL
/// writes only while every member speaks 4 ([`EXPIRING_PROTOCOL`]). 5: a
/// replica answers its part of a client scan (`replica.scan`); a node of
/// protocol 4 refuses it, and the scan asks another replica of the range.
/// 6: a client batch's merges, and its reads, go to each replica in one
/// message (`replica.merges`, `replica.reads`); to a node of protocol 5
/// they go one by one. 7: a sibling may hold the state of a CRDT key
/// (`Content::Crdt`), and a write may carry an update of one
/// (`Content::Update`); as with 4, no message changed, but a node of
/// protocol 6 cannot decode either, so a node takes CRDT updates only
/// while every member speaks 7 ([`CRDT_PROTOCOL`]). 8: a CRDT state may
/// be a map (`Crdt::Map`), which a node of protocol 7 cannot decode: map
/// updates wait for every member to speak 8 ([`MAP_PROTOCOL`]). 9: a
/// request id may carry a digest of its request (`version::Request`), up
/// to 145 bytes where a node of protocol 8 refuses over 128: writes carry
/// digests only while every member speaks 9 ([`DIGEST_PROTOCOL`]), and
/// before that a reused `Idempotency-Key` is not told from a retry.
pub const PROTOCOL: u16 = 9;
/// The first protocol whose nodes decode values with a TTL.
pub const EXPIRING_PROTOCOL: u16 = 4;
/// The first protocol whose nodes answer `replica.scan`.
pub const SCAN_PROTOCOL: u16 = 5;
/// The first protocol whose nodes take a batch's merges, and its reads,
/// in one message.
pub const OUTBOX_PROTOCOL: u16 = 6;
/// The first protocol whose nodes decode CRDT states and updates.
pub const CRDT_PROTOCOL: u16 = 7;
/// The first protocol whose nodes decode CRDT maps.
pub const MAP_PROTOCOL: u16 = 8;
/// The first protocol whose nodes take request ids with digests.
pub const DIGEST_PROTOCOL: u16 = 9;
/// The oldest protocol this build still speaks.
pub const OLDEST_PROTOCOL: u16 = 1;
/// The header of every `POST /peer` answer: the receiver's protocol.
pub const PROTOCOL_HEADER: &str = "x-chorus-protocol";

/// The protocol a node configured with `cluster.protocol` speaks: this
/// build's when absent; one this build does not speak is refused with the
/// key's name.
pub fn configured(protocol: Option<u16>) -> crate::error::Result<u16> {
    match protocol {
        None => Ok(PROTOCOL),
        Some(p) if (OLDEST_PROTOCOL..=PROTOCOL).contains(&p) => Ok(p),
        Some(p) => Err(crate::error::Error::config(
            "cluster.protocol",
            format!(
                "is {p}; this build speaks protocols {OLDEST_PROTOCOL} to {PROTOCOL} \
                 (leave it out to speak {PROTOCOL})"
            ),
        )),
    }
}

/// The protocol a peer's answer advertised: its header, or 1 for a node
/// of a build that sent none; `None` for a header that does not parse.
pub fn advertised(header: Option<&[u8]>) -> Option<u16> {
    match header {
        None => Some(1),
        Some(value) => std::str::from_utf8(value).ok()?.parse().ok(),
    }
}

/// This node's protocol and what it learned of its peers'.
#[derive(Debug)]
pub struct Versions {
    mine: u16,
    peers: RwLock<HashMap<String, u16>>,
}

impl Versions {
    /// A node that speaks up to `mine`.
    pub fn new(mine: u16) -> Versions {
        Versions {
            mine,
            peers: RwLock::new(HashMap::new()),
        }
    }

    /// The protocol this node speaks.
    pub fn mine(&self) -> u16 {
        self.mine
    }

    /// The protocol to talk to `node` at: the lower of the two, and the
    /// oldest until `node` was heard from.
    pub fn with(&self, node: &str) -> u16 {
        let theirs = self.peers.read().get(node).copied();
        theirs.unwrap_or(OLDEST_PROTOCOL).min(self.mine)
    }

    /// What `node` said it speaks, if it was heard from.
    pub fn of(&self, node: &str) -> Option<u16> {
        self.peers.read().get(node).copied()
    }

    /// Records what `node` advertised in an answer. The newest word wins:
    /// a peer that restarted on an older build is learned as such.
    pub fn heard(&self, node: &str, protocol: u16) {
        if self.peers.read().get(node) == Some(&protocol) {
            return;
        }
        let mut peers = self.peers.write();
        // One entry per member ever heard from; ids are the cluster's own.
        peers.insert(node.to_string(), protocol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_spoken_to_at_the_lower_protocol_and_the_oldest_until_heard() {
        let versions = Versions::new(2);
        assert_eq!(versions.with("n2"), OLDEST_PROTOCOL);
        versions.heard("n2", 2);
        assert_eq!(versions.with("n2"), 2);
        versions.heard("n3", 7);
        assert_eq!(versions.with("n3"), 2, "never above this node's own");
        versions.heard("n2", 1);
        assert_eq!(versions.with("n2"), 1, "a rolled-back peer is learned");
        let pinned = Versions::new(1);
        pinned.heard("n2", 2);
        assert_eq!(pinned.with("n2"), 1);
    }

    #[test]
    fn the_configured_protocol_is_one_this_build_speaks() {
        assert_eq!(configured(None).expect("default"), PROTOCOL);
        assert_eq!(configured(Some(1)).expect("the older one"), 1);
        let e = configured(Some(PROTOCOL + 1)).expect_err("a newer one");
        assert!(e.to_string().contains("cluster.protocol"), "{e}");
        assert!(configured(Some(0)).is_err());
    }

    #[test]
    fn an_absent_header_is_protocol_one_and_garbage_is_nothing() {
        assert_eq!(advertised(None), Some(1));
        assert_eq!(advertised(Some(b"2")), Some(2));
        assert_eq!(advertised(Some(b"two")), None);
        assert_eq!(advertised(Some(b"\xff")), None);
        assert_eq!(advertised(Some(b"70000")), None);
    }
}
