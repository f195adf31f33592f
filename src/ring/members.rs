//! The members document: who is in the ring, with which tokens.
//!
//! Ownership changes only by intent: a join, a graceful leave, an operator's
//! removal. A node that stops answering stays a member and keeps its ranges
//! (routing goes around it). So the members are a small replicated document
//! that every node holds, not something inferred from who answers.
//!
//! Each entry carries a `version` that its change bumps. Two copies of the
//! document merge entry by entry, keeping the higher version (ties broken by
//! a fixed order over the whole entry), so the merge is commutative,
//! associative and idempotent and gossip converges whatever the order in
//! which changes arrive. A removed member stays as a tombstone so that an
//! old copy cannot bring it back; a later rejoin bumps its version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Position;
use super::placement::{Owner, Ring};
use super::tokens::Allocator;
use crate::error::{Error, Result};

/// Bounds on a members document received from a peer.
pub const MAX_MEMBERS: usize = 10_000;
pub const MAX_TOKENS: usize = 4096;
const MAX_NAME: usize = 256;

/// Where a member is in its life; later states win ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Owns its ranges.
    Active,
    /// Leaving gracefully: owns nothing any more, still answers and hands its
    /// data to the new owners.
    Leaving,
    /// Gone: left, or removed by an operator.
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// `host:port` of the node's HTTP server (client API and peer protocol).
    pub addr: String,
    pub zone: Option<String>,
    pub weight: u32,
    pub tokens: Vec<Position>,
    pub status: Status,
    /// Bumped by every change of this entry.
    pub version: u64,
}

impl Member {
    /// The total order merge uses: newer version first, then later status,
    /// then the content, so that equal versions still agree everywhere.
    fn rank(&self) -> impl Ord + '_ {
        (
            self.version,
            self.status,
            &self.tokens,
            &self.addr,
            &self.zone,
            self.weight,
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    by_id: BTreeMap<String, Member>,
}

impl Members {
    /// The first members of a cluster, tokens allocated in the given order so
    /// that every node computes the same document from the same config.
    pub fn initial<'a>(
        nodes: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>, u32)>,
        tokens_per_weight: usize,
    ) -> Members {
        let mut members = Members::default();
        for (id, addr, zone, weight) in nodes {
            members.admit(id, addr, zone, weight, tokens_per_weight);
        }
        members
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.by_id.values()
    }

    /// Members that own ranges.
    pub fn active(&self) -> impl Iterator<Item = &Member> {
        self.iter().filter(|m| m.status == Status::Active)
    }

    /// Adds `id` with balanced tokens, or returns it unchanged when it is
    /// already an owner at the same address (a retried join). A removed
    /// member comes back with a higher version.
    pub fn admit(
        &mut self,
        id: &str,
        addr: &str,
        zone: Option<&str>,
        weight: u32,
        tokens_per_weight: usize,
    ) -> &Member {
        let previous = self
            .by_id
            .get(id)
            .map(|m| (m.version, m.status, m.addr == addr));
        if let Some((_, Status::Active, true)) = previous {
            return &self.by_id[id];
        }
        let mut alloc = Allocator::new();
        for m in self.active().filter(|m| m.id != id) {
            alloc.insert(m.weight, &m.tokens);
        }
        let seed = super::position(id.as_bytes());
        let count = tokens_per_weight * weight as usize;
        let (_, tokens) = alloc.join(weight, count, seed);
        let member = Member {
            id: id.to_string(),
            addr: addr.to_string(),
            zone: zone.map(str::to_string),
            weight,
            tokens,
            status: Status::Active,
            version: previous.map_or(1, |(v, _, _)| v + 1),
        };
        self.by_id.insert(id.to_string(), member);
        &self.by_id[id]
    }

    /// Moves `id` to `status`; false if it is unknown or already there (or past it).
    pub fn set_status(&mut self, id: &str, status: Status) -> bool {
        match self.by_id.get_mut(id) {
            Some(m) if m.status < status => {
                m.status = status;
                m.version += 1;
                true
            }
            _ => false,
        }
    }

    /// Records that member `id` now listens at `addr`; false if unknown or unchanged.
    pub fn set_addr(&mut self, id: &str, addr: &str) -> bool {
        match self.by_id.get_mut(id) {
            Some(m) if m.addr != addr => {
                m.addr = addr.to_string();
                m.version += 1;
                true
            }
            _ => false,
        }
    }

    /// Merges another copy in; true if this copy changed.
    pub fn merge(&mut self, other: &Members) -> bool {
        let mut changed = false;
        for (id, theirs) in &other.by_id {
            match self.by_id.get(id) {
                Some(ours) if ours.rank() >= theirs.rank() => {}
                _ => {
                    self.by_id.insert(id.clone(), theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Placement over the active members.
    pub fn ring(&self) -> Ring {
        Ring::new(self.active().map(|m| {
            let owner = Owner {
                id: m.id.clone(),
                zone: m.zone.clone(),
            };
            (owner, m.tokens.clone())
        }))
    }

    /// A short fingerprint of the whole document, to compare copies cheaply.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = crate::encoding::to_exact_vec(self).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }

    /// Refuses a document from a peer that is too large or malformed.
    pub fn check(&self) -> Result<()> {
        if self.by_id.len() > MAX_MEMBERS {
            return Err(Error::Protocol(format!(
                "a members document lists {} members; at most {MAX_MEMBERS}",
                self.by_id.len()
            )));
        }
        for (id, m) in &self.by_id {
            if *id != m.id
                || id.is_empty()
                || id.len() > MAX_NAME
                || m.addr.len() > MAX_NAME
                || m.zone.as_ref().is_some_and(|z| z.len() > MAX_NAME)
                || m.tokens.len() > MAX_TOKENS
                || m.weight == 0
            {
                return Err(Error::Protocol(format!(
                    "the members document's entry for `{}` is malformed",
                    id.chars().take(64).collect::<String>()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn three() -> Members {
        Members::initial(
            [
                ("n1", "127.0.0.1:1", Some("a"), 1),
                ("n2", "127.0.0.1:2", Some("b"), 1),
                ("n3", "127.0.0.1:3", Some("c"), 1),
            ],
            16,
        )
    }

    #[test]
    fn initial_members_are_deterministic_and_own_the_ring() {
        assert_eq!(three(), three());
        let ring = three().ring();
        assert_eq!(ring.owners().len(), 3);
        assert_eq!(ring.preference_list(42, 3).len(), 3);
    }

    #[test]
    fn a_retried_join_changes_nothing_and_a_rejoin_bumps_the_version() {
        let mut m = three();
        let before = m.clone();
        m.admit("n2", "127.0.0.1:2", Some("b"), 1, 16);
        assert_eq!(m, before);
        assert!(m.set_status("n2", Status::Removed));
        assert!(
            !m.set_status("n2", Status::Leaving),
            "no way back but a rejoin"
        );
        let v = m.get("n2").map(|x| x.version);
        let again = m.admit("n2", "127.0.0.1:2", Some("b"), 1, 16).clone();
        assert_eq!(again.status, Status::Active);
        assert_eq!(Some(again.version), v.map(|v| v + 1));
    }

    /// A sequence of changes, each made on one of three replicas of the document.
    fn changes() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        prop::collection::vec((0usize..3, 0u8..6, 0u8..3), 0..12)
    }

    fn apply(copy: &mut Members, (node, action): (u8, u8)) {
        let id = format!("m{node}");
        match action {
            0 => {
                copy.admit(&id, "127.0.0.1:9", None, 1, 4);
            }
            1 => {
                copy.set_status(&id, Status::Leaving);
            }
            _ => {
                copy.set_status(&id, Status::Removed);
            }
        }
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(ops in changes()) {
            let mut copies = [three(), three(), three()];
            for (at, node, action) in ops {
                apply(&mut copies[at], (node, action));
            }
            let (a, b, c) = (&copies[0], &copies[1], &copies[2]);
            let merged = |x: &Members, y: &Members| { let mut m = x.clone(); m.merge(y); m };
            prop_assert_eq!(merged(a, b), merged(b, a));
            prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
            prop_assert_eq!(merged(a, a), a.clone());
            let all = merged(&merged(a, b), c);
            prop_assert!(all.check().is_ok());
            prop_assert_eq!(all.digest(), merged(&merged(c, b), a).digest());
        }
    }
}
