//! The feed's peer message: read a member's change log.
//!
//! | request | reply | what for |
//! |---|---|---|
//! | [`ReadChanges`] | [`Entries`] | the node serving a feed reads each member's log past the reader's mark |
//!
//! A member answers at once when its log holds settled entries past the
//! mark, or waits for one up to `wait_ms` (at most [`MAX_WAIT_MS`], well
//! within the peer timeout), so a feed that long-polls costs each member
//! one message a second, not a poll loop. The answer is bounded in bytes
//! by the asker's budget and by [`MAX_READ_BYTES`].

use serde::{Deserialize, Serialize};

use crate::peer::versions::CRDT_PROTOCOL;
use crate::peer::{Rpc, Service};
use crate::store::changes::{Logged, Mark};

/// The longest a member holds a read open.
pub const MAX_WAIT_MS: u32 = 1_000;
/// The most bytes of entries one answer carries.
pub const MAX_READ_BYTES: u32 = 4 * 1024 * 1024;

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum From {
    /// Nothing to read: where the log ends now (a cursor at `since=now`).
    Now,
    /// Past this mark.
    Mark(Mark),
}

/// Read this node's change log from `from`, keys under `prefix` only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadChanges {
    pub from: From,
    pub prefix: String,
    pub max_bytes: u32,
    /// How long to wait for an entry when there is none yet.
    pub wait_ms: u32,
}

impl Rpc for ReadChanges {
    const SERVICE: Service = Service::new("changes.read", 1).since(CRDT_PROTOCOL);
    type Reply = Entries;
}

/// What a member's log holds past the mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    pub entries: Vec<Logged>,
    /// The reader's mark in this log now.
    pub next: Mark,
    /// The mark was behind this log's retention: nothing was read, and
    /// `next` is the log's end.
    pub expired: bool,
    /// Entries past `next` were too young to read: a read in a moment
    /// (a settle time) finds them.
    pub unsettled: bool,
}
