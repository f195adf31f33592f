//! The change feed: `GET /changes?prefix=P&since=<cursor>`, the writes
//! made under a prefix after a cursor, from any node, resumable and at
//! least once (DynamoDB Streams, Cassandra's CDC, Garage K2V's PollRange).
//!
//! # The idea
//!
//! Every replica already logs each write it takes part in
//! (`store::changes`): its own mints, the sets coordinators send, read
//! repairs and hints. The feed reads those logs. A cursor is, per member,
//! the position in that member's log up to which the reader has seen
//! ([`Cursor`]); a page is every member's entries after its position,
//! merged, the duplicates the replicas of one write make dropped
//! ([`Page`]); `next` is the cursor past them.
//!
//! # Why nothing acknowledged is missed
//!
//! A write acknowledged by W replicas is in each one's log, in the batch
//! that stored it. A reader that resumes from `next` reads every member's
//! log past the position it saw, so it finds the write in the log of any
//! acknowledging replica that survives:
//!
//! - a member that does not answer keeps its position: its entries are
//!   read once it answers again;
//! - a member that restarted continues its log in a new life after the old
//!   one (`store::changes`, Positions); one whose disk was wiped or rolled
//!   back does not know the cursor's life and gives its whole retained log
//!   (duplicates, never a gap);
//! - a member the cursor does not name (it joined since) gives its whole
//!   retained log; a member that left is dropped from `next`, its writes
//!   being in its fellow replicas' logs;
//! - a position older than a member's retention answers 410
//!   `cursor_expired` with a fresh cursor: the reader must rescan.
//!
//! It does not depend on the anti-entropy mode: the logs are the store's,
//! not operation transfer's.
//!
//! # Duplicates
//!
//! The N replicas of a write log it within milliseconds of each other.
//! A log serves an entry only once it has *settled* ([`SETTLE_MS`] old),
//! and a page whose members held entries too young waits for them
//! (`service.rs`, `round`), so a page usually holds every replica's entry
//! of a write, and keeps one change per set of dots ([`Page::add`]). A
//! page cut between two replicas' entries or a read repair shows a change
//! twice: the feed is at least once, and a reader treats a change as "read
//! this key", which is idempotent.

use std::collections::{BTreeMap, HashMap};

pub mod rpc;
pub mod service;

pub use service::FeedService;

use serde::{Deserialize, Serialize};

use crate::store::changes::{Logged, Mark};
use crate::version::context::{CURSOR_FORMAT, Seal, sealed, unsealed};
use crate::version::{Dot, VersionVector};

/// How old a log entry must be before a reader takes it.
pub const SETTLE_MS: u64 = 100;

/// How far the clocks of two nodes may disagree: a log read from a time
/// (a member that joined, or did not answer when the cursor was made) is
/// read from this much earlier, which costs duplicates, never a gap.
pub const CLOCK_MARGIN_MS: u64 = 60_000;

/// What a cursor is sealed for, in place of a key.
const SEALED_FOR: &str = "\u{0}chorus change feed";

/// Where a reader of the feed stands: per member, where in its log
/// ([`Mark`]); for a member it does not name, a time to read its log from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// A member the cursor does not name (it joined since) is read from
    /// here: [`CLOCK_MARGIN_MS`] before the page that made the cursor.
    pub since_ms: u64,
    pub marks: BTreeMap<String, Mark>,
}

impl Cursor {
    /// The cursor as a client holds it: sealed like a context.
    pub fn encode(&self, seal: &Seal) -> String {
        sealed(
            CURSOR_FORMAT,
            self,
            32 * self.marks.len() + 48,
            seal,
            SEALED_FOR,
        )
    }

    /// A cursor a client sent: refused (with why) unless this cluster
    /// sealed it.
    pub fn decode(text: &str, seal: &Seal) -> Result<Cursor, String> {
        let body = unsealed(text, CURSOR_FORMAT, seal, SEALED_FOR).map_err(|e| {
            use crate::version::ContextError::*;
            match e {
                PlainKey | CrdtKey | UnknownFormat => {
                    "it is not a cursor of the change feed (a key's context?)".to_string()
                }
                Foreign => "it was issued by another cluster".to_string(),
                Forged => "its seal does not match: it was changed".to_string(),
                other => other.to_string().replace("context", "cursor"),
            }
        })?;
        match postcard::take_from_bytes::<Cursor>(&body) {
            Ok((cursor, [])) => Ok(cursor),
            _ => Err("it is corrupt".to_string()),
        }
    }
}

/// One change a page reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The key's version vector after the change, as the replicas that
    /// logged it hold it (joined).
    pub context: VersionVector,
    pub deleted: bool,
    /// When the first replica logged it, by that node's clock.
    pub at_ms: u64,
}

/// The changes of one page, in the order they were logged (by the logging
/// nodes' clocks), each write once however many replicas logged it.
#[derive(Debug, Default)]
pub struct Page {
    changes: Vec<Change>,
    /// Each (key, dot) reported so far, and the change that reported it.
    seen: HashMap<(String, Dot), usize>,
}

impl Page {
    /// Adds an entry of some member's log, unless the page holds every dot
    /// it brought: another replica's entry of the same write, whose context
    /// it then joins.
    pub fn add(&mut self, entry: Logged) {
        let key = entry.key;
        let earlier = entry
            .dots
            .iter()
            .map(|dot| self.seen.get(&(key.clone(), dot.clone())).copied())
            .collect::<Option<Vec<usize>>>();
        if let Some(earlier) = earlier
            && let Some(&at) = earlier.first()
        {
            crdts::CvRDT::merge(&mut self.changes[at].context, entry.context);
            return;
        }
        let at = self.changes.len();
        for dot in entry.dots {
            self.seen.entry((key.clone(), dot)).or_insert(at);
        }
        self.changes.push(Change {
            key,
            context: entry.context,
            deleted: entry.deleted,
            at_ms: entry.at_ms,
        });
    }

    /// The changes, oldest first.
    pub fn into_changes(self) -> Vec<Change> {
        let mut changes = self.changes;
        changes.sort_by_key(|c| c.at_ms);
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests;
