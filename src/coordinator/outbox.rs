//! A client batch's outbox: the merges of its writes, sent to each replica
//! in one message.
//!
//! The ops of a `POST /batch` run concurrently in the request's own task.
//! Each write mints its dot on this node and merges its set into the other
//! replicas. Sent one by one, every merge costs a call at both ends (a
//! frame, a dispatch, an answer, a wake-up), although a batch's merges go
//! to the same few nodes at nearly the same moment: the mints of a batch
//! share a group commit and come back together. So a batch's writes post
//! their merges here ([`Outbox::merge`]: a call like any other, counted in
//! the write's tally). After each pass over its running ops the batch
//! handler flushes the outbox if no write is still minting
//! ([`Outbox::flush_if_settled`]): the merges posted by then leave as one
//! [`Merges`] per replica, whose one answer is each merge's answer. Held
//! back until the last of the batch's mints, a merge waits for at most the
//! group commits that the batch's mints were split into; the batch's
//! answer waits for its last write anyway, and the replicas take the
//! batch's merges in one group commit too.
//!
//! Invariants:
//! - a posted merge is sent once the writes minting beside it have posted
//!   theirs, or fails. A mint never waits for a merge, so that comes: a
//!   write is counted from before its mint until its merges are posted
//!   (or it gave up, [`Minting`] dropped), both happen while the handler
//!   polls its ops, and it checks after every poll. An outbox dropped
//!   with merges in it fails them (each write then hints that replica, as
//!   for any failed merge);
//! - a replica that does not speak [`MERGES_PROTOCOL`], and this node
//!   itself, get their merges one by one (`replica.merge`), at once;
//! - one message carries at most [`MAX_HANDOFF_BATCH`] merges and
//!   [`MAX_BYTES`] bytes of keys and sets; more makes more messages, and a
//!   larger set goes alone.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::MAX_HANDOFF_BATCH;
use crate::error::{Error, Result};
use crate::peer::versions::MERGES_PROTOCOL;
use crate::peer::{Call, Transport};
use crate::replica::rpc::{Merge, Merged, Merges};

/// The most bytes of keys and sets in one [`Merges`]: well under the
/// smallest peer message limit (`limits::MIN_PEER_MESSAGE_BYTES`), and
/// small enough that one message does not hold a lane for long.
pub const MAX_BYTES: usize = 1 << 20;

pub struct Outbox {
    transport: Arc<dyn Transport>,
    posted: Mutex<Posts>,
}

#[derive(Default)]
struct Posts {
    posted: Vec<Posted>,
    /// The batch's writes between the start of their mint and the posting
    /// of their merges ([`Minting`]).
    minting: usize,
}

/// A write of the batch that is minting: held from before its mint until
/// it has posted its merges (or given up), so that the outbox waits for
/// its merges before it flushes.
pub struct Minting(Arc<Outbox>);

impl Drop for Minting {
    fn drop(&mut self) {
        self.0.posted.lock().minting -= 1;
    }
}

/// A merge waiting for the next flush, and where its answer goes.
struct Posted {
    to: String,
    merge: Merge,
    answer: oneshot::Sender<Result<Merged>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("posted", &self.posted.lock().posted.len())
            .finish()
    }
}

impl Outbox {
    pub fn new(transport: Arc<dyn Transport>) -> Outbox {
        Outbox {
            transport,
            posted: Mutex::new(Posts::default()),
        }
    }

    /// Merges `merge` into replica `to`: sent with the batch's other merges
    /// to `to` at the next [`Outbox::flush`], or at once when `to` is this
    /// node or does not take [`Merges`].
    pub fn merge(&self, to: String, merge: Merge) -> Call<Merged> {
        if self.transport.local(&to).is_some()
            || self.transport.protocol_with(&to) < MERGES_PROTOCOL
        {
            return self.transport.rpc(&to, merge);
        }
        let (answer, answered) = oneshot::channel();
        let node = to.clone();
        self.posted.lock().posted.push(Posted { to, merge, answer });
        Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    node,
                    reason: "the batch ended before its merge was sent".into(),
                })
            })
        })
    }

    /// A write of the batch begins to mint: no flush until it has posted
    /// its merges, or dropped what this returns.
    pub fn minting(self: &Arc<Self>) -> Minting {
        self.posted.lock().minting += 1;
        Minting(Arc::clone(self))
    }

    /// Flushes once no write of the batch is minting: every merge of the
    /// writes begun so far is then posted, and they leave together.
    pub fn flush_if_settled(&self) {
        if self.posted.lock().minting == 0 {
            self.flush();
        }
    }

    /// Sends every merge posted since the last flush: one message per
    /// replica (more past the bounds), each awaited by a task of its own.
    pub fn flush(&self) {
        let mut posted = std::mem::take(&mut self.posted.lock().posted);
        posted.sort_by(|a, b| a.to.cmp(&b.to));
        for message in messages(posted, |p| &p.to, |p| size(&p.merge)) {
            self.send(message);
        }
    }

    fn send(&self, message: Vec<Posted>) {
        let Some(to) = message.first().map(|p| p.to.clone()) else {
            return;
        };
        let (merges, answers): (Vec<Merge>, Vec<_>) =
            message.into_iter().map(|p| (p.merge, p.answer)).unzip();
        let call = self.transport.rpc(&to, Merges(merges));
        tokio::spawn(async move {
            match call.await {
                Ok(merged) => answers.into_iter().for_each(|a| drop(a.send(Ok(merged)))),
                Err(e) => {
                    let reason = e.to_string();
                    for answer in answers {
                        let _ = answer.send(Err(Error::Unavailable {
                            node: to.clone(),
                            reason: reason.clone(),
                        }));
                    }
                }
            }
        });
    }
}

/// `items`, sorted by destination, cut into messages: each to one
/// destination, in the order given, of at most [`MAX_HANDOFF_BATCH`] items
/// and [`MAX_BYTES`] bytes (an item larger than that alone).
fn messages<T>(items: Vec<T>, to: impl Fn(&T) -> &str, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let more = size(&item);
        match out.last_mut() {
            Some(last)
                if to(&last[0]) == to(&item)
                    && last.len() < MAX_HANDOFF_BATCH
                    && bytes + more <= MAX_BYTES =>
            {
                bytes += more;
                last.push(item);
            }
            _ => {
                bytes = more;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// What a merge adds to a message: its key and its set's bytes.
fn size(merge: &Merge) -> usize {
    merge.key.len() + merge.set.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every item goes out once, in order, each message to one
        /// destination and within the bounds, and no two messages in a row
        /// to one destination could have been one.
        #[test]
        fn messages_keep_every_item_within_the_bounds(
            mut items in prop::collection::vec((0u8..3, 0usize..(MAX_BYTES / 3)), 0..3000),
        ) {
            items.sort_by_key(|(to, _)| *to);
            let numbered: Vec<(String, usize, usize)> = items
                .iter()
                .enumerate()
                .map(|(i, (to, size))| (format!("n{to}"), *size, i))
                .collect();
            let out = messages(numbered, |m| &m.0, |m| m.1);
            let flat: Vec<usize> = out.iter().flatten().map(|m| m.2).collect();
            prop_assert_eq!(flat, (0..items.len()).collect::<Vec<_>>());
            for (i, message) in out.iter().enumerate() {
                prop_assert!(!message.is_empty());
                prop_assert!(message.iter().all(|m| m.0 == message[0].0));
                prop_assert!(message.len() <= MAX_HANDOFF_BATCH);
                let bytes: usize = message.iter().map(|m| m.1).sum();
                prop_assert!(bytes <= MAX_BYTES || message.len() == 1);
                if let Some(next) = out.get(i + 1)
                    && next[0].0 == message[0].0
                {
                    let room = bytes + next[0].1 > MAX_BYTES || message.len() == MAX_HANDOFF_BATCH;
                    prop_assert!(room, "message {} could have taken the next item", i);
                }
            }
        }
    }

    #[test]
    fn a_set_larger_than_a_message_goes_alone() {
        let items = vec![("a", 10), ("a", MAX_BYTES + 1), ("a", 10), ("b", 10)];
        let out = messages(items, |m| m.0, |m| m.1);
        let sizes: Vec<Vec<usize>> = out
            .iter()
            .map(|m| m.iter().map(|x| x.1).collect())
            .collect();
        assert_eq!(sizes, [vec![10], vec![MAX_BYTES + 1], vec![10], vec![10]]);
    }
}
