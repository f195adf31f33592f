//! The members and their states: the members document as this node knows
//! it, where it is persisted, and who follows its changes.
//!
//! The document ([`Members`]) is a CRDT: every change is a member entry
//! with a higher version, and merging keeps the higher of each entry, so
//! nodes that gossip converge on one document whatever the order. The
//! roster only holds it; [`Cluster`](super::Cluster) decides what a change
//! means for routing and liveness, and then calls [`Roster::committed`].

use std::path::PathBuf;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ring::{Members, Status};

pub struct Roster {
    me: String,
    tokens: usize,
    members: RwLock<Members>,
    /// `data_dir/members.json`; none in memory-only tests.
    persist: Option<PathBuf>,
    /// Bumped on every change of the members document.
    changes: watch::Sender<u64>,
    /// The members document as last logged, to log what each change changed.
    logged: Mutex<Members>,
}

impl Roster {
    /// The members this node starts with: its saved document, else the
    /// config's initial nodes.
    pub fn load(config: &Config, persist: Option<&PathBuf>) -> Result<Members> {
        if let Some(path) = persist
            && path.exists()
        {
            let text = std::fs::read_to_string(path)?;
            let members: Members = serde_json::from_str(&text)
                .map_err(|e| Error::Storage(format!("{} is corrupt: {e}", path.display())))?;
            return Ok(members);
        }
        let initial = config.nodes.iter().filter(|n| n.initial);
        Ok(Members::initial(
            initial.map(|n| {
                (
                    n.id.as_str(),
                    n.listen.as_str(),
                    n.zone.as_deref(),
                    n.weight,
                )
            }),
            config.ring.tokens,
        ))
    }

    pub fn new(me: &str, tokens: usize, members: Members, persist: Option<PathBuf>) -> Roster {
        Roster {
            me: me.to_string(),
            tokens,
            logged: Mutex::new(members.clone()),
            members: RwLock::new(members),
            persist,
            changes: watch::channel(0).0,
        }
    }

    /// A copy of the document.
    pub fn members(&self) -> Members {
        self.members.read().clone()
    }

    /// Every member other than this node that is still in the ring.
    pub fn peers(&self) -> Vec<String> {
        self.members
            .read()
            .iter()
            .filter(|m| m.id != self.me && m.status != Status::Removed)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Changes of the members document, for the tasks that follow them.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Merges a document from a peer; true if ours changed.
    pub fn merge(&self, incoming: &Members) -> Result<bool> {
        incoming.check()?;
        Ok(self.members.write().merge(incoming))
    }

    /// Admits a node joining through this one; true if the document changed.
    pub fn admit(&self, id: &str, addr: &str, zone: Option<&str>, weight: u32) -> Result<bool> {
        validate_join(id, addr, weight)?;
        let mut members = self.members.write();
        let before = members.get(id).map(|m| (m.version, m.status));
        if let Some((_, Status::Leaving)) = before {
            return Err(Error::Membership(format!(
                "`{id}` is leaving; let it finish, then join again"
            )));
        }
        let after = members.admit(id, addr, zone, weight, self.tokens);
        Ok(before != Some((after.version, after.status)))
    }

    /// Moves a member to `status`; true if the document changed.
    pub fn set_status(&self, id: &str, status: Status) -> Result<bool> {
        let mut members = self.members.write();
        if members.get(id).is_none() {
            return Err(Error::UnknownNode(id.to_string()));
        }
        Ok(members.set_status(id, status))
    }

    /// Records this node's own address; true if it moved.
    pub fn set_own_addr(&self, addr: &str) -> bool {
        self.members.write().set_addr(&self.me, addr)
    }

    /// Writes the document to disk.
    pub fn save(&self) -> Result<()> {
        if let Some(path) = &self.persist {
            crate::store::write_json_synced(path, &self.members())?;
        }
        Ok(())
    }

    /// After a change the rest of the node has taken in: persist it, log
    /// it, tell the followers.
    pub fn committed(&self) -> Result<()> {
        self.save()?;
        self.log_changes();
        metrics::counter!(crate::metrics::RING_CHANGES_TOTAL).increment(1);
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Logs one line per member whose entry changed since the last call.
    fn log_changes(&self) {
        let now = self.members();
        let mut logged = self.logged.lock();
        for member in now.iter() {
            let before = logged.get(&member.id);
            if before == Some(member) {
                continue;
            }
            tracing::info!(
                node = %self.me,
                member = %member.id,
                status = ?member.status,
                was = ?before.map(|b| b.status),
                addr = %member.addr,
                tokens = member.tokens.len(),
                version = member.version,
                "membership change"
            );
        }
        *logged = now;
    }
}

fn validate_join(id: &str, addr: &str, weight: u32) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Membership(
            "a node id must be 1-64 ASCII letters, digits, - or _".into(),
        ));
    }
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(Error::Membership(format!(
            "`{}` is not a host:port address",
            addr.chars().take(64).collect::<String>()
        )));
    }
    if !(1..=100).contains(&weight) {
        return Err(Error::Membership("weight must be between 1 and 100".into()));
    }
    Ok(())
}
