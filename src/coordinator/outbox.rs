//! A client batch's outbox: the merges of its writes, and the reads of its
//! reads, sent to each replica in one message.
//!
//! The ops of a `POST /batch` run concurrently in the request's own task.
//! Each write mints its dot on this node and merges its set into the other
//! replicas; each read asks `r` replicas. Sent one by one, every merge and
//! read costs a call at both ends (a frame, a dispatch, an answer, a
//! wake-up), although a batch's calls go to the same few nodes at nearly
//! the same moment. So a batch's ops post them here ([`Outbox::merge`],
//! [`Outbox::read`]: calls like any other, counted in the op's tally), and
//! after each pass over its running ops the batch handler flushes the
//! outbox ([`Outbox::flush_if_settled`]):
//! - the reads leave once every op has been polled, as one [`Reads`] per
//!   replica;
//! - the merges leave once no write is still minting, as one [`Merges`] per
//!   replica, whose one answer is each merge's answer. The mints of a
//!   batch come back from a few group commits, one by one; held back until
//!   the last of them, a merge waits for at most those group commits, the
//!   batch's answer waits for its last write anyway, and the replicas take
//!   the batch's merges in one group commit too.
//!
//! Invariants:
//! - a posted read is sent once every op of the batch has been polled
//!   (an op posts its first reads in its first poll, and the handler
//!   polls every op it starts); a posted merge once also the writes
//!   minting beside it have posted theirs. A mint never
//!   waits for a merge, so that comes: a write is counted from before its
//!   mint until its merges are posted (or it gave up, its [`Held`]
//!   dropped), both happen while the handler polls its ops, and it checks
//!   after every poll. An outbox dropped with calls in it fails them (a
//!   write then hints that replica, a read asks another, as for any failed
//!   call);
//! - a replica that does not speak [`OUTBOX_PROTOCOL`], and this node
//!   itself, get their calls one by one (`replica.merge`, `replica.read`),
//!   at once;
//! - one message carries at most [`MAX_HANDOFF_BATCH`] calls and
//!   [`MAX_BYTES`] bytes of keys and sets; more makes more messages, and a
//!   larger set goes alone. A replica answers a prefix of a [`Reads`] when
//!   the sets would pass its message budget: the reads it left out fail,
//!   and ask other replicas.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::budget::Budget;
use crate::config::MAX_HANDOFF_BATCH;
use crate::error::{Error, Result};
use crate::peer::versions::OUTBOX_PROTOCOL;
use crate::peer::{Call, Rpc, Transport};
use crate::replica::rpc::{EncodedSet, Merge, Merged, Merges, Read, Reads};
use crate::version::SiblingSet;

/// The most bytes of keys and sets in one message: well under the smallest
/// peer message limit (`limits::MIN_PEER_MESSAGE_BYTES`), and small enough
/// that one message does not hold a lane for long.
pub const MAX_BYTES: usize = 1 << 20;

pub struct Outbox {
    transport: Arc<dyn Transport>,
    posted: Mutex<Posts>,
}

#[derive(Default)]
struct Posts {
    merges: Vec<Posted<Merge, Merged>>,
    reads: Vec<Posted<String, Option<SiblingSet>>>,
    /// The batch's ops not yet polled once ([`Outbox::track`]): an op posts
    /// its first reads in its first poll.
    unpolled: usize,
    /// The batch's writes between the start of their mint and the posting
    /// of their merges ([`Outbox::minting`]).
    minting: usize,
    /// What the batch's writes still await once decided: their replicas'
    /// late answers, to hint those that fail ([`Outbox::finish_later`]).
    later: Vec<BoxFuture<'static, ()>>,
}

/// An op of the batch, counted as unpolled until its first poll has run.
pub struct Tracked<F> {
    op: F,
    unpolled: Option<Held>,
}

impl<F: Future + Unpin> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = Pin::new(&mut self.op).poll(cx);
        self.unpolled = None;
        polled
    }
}

/// One of the outbox's counts held up while it lives: an op not yet
/// polled ([`Outbox::track`]), a write minting ([`Outbox::minting`]: held
/// from before its mint until it has posted its merges or given up).
pub struct Held {
    outbox: Arc<Outbox>,
    count: fn(&mut Posts) -> &mut usize,
}

impl Held {
    fn new(outbox: &Arc<Outbox>, count: fn(&mut Posts) -> &mut usize) -> Held {
        *count(&mut outbox.posted.lock()) += 1;
        Held {
            outbox: Arc::clone(outbox),
            count,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        *(self.count)(&mut self.outbox.posted.lock()) -= 1;
    }
}

/// A call waiting for the next flush: to whom, what, and where its answer
/// goes.
struct Posted<T, A> {
    to: String,
    what: T,
    answer: oneshot::Sender<Result<A>>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // A batch whose client hung up still hints the replicas its
        // decided writes missed.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.finish_in_background();
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let posted = self.posted.lock();
        f.debug_struct("Outbox")
            .field("merges", &posted.merges.len())
            .field("reads", &posted.reads.len())
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

    /// Whether calls to `to` go one by one: to this node, or to a replica
    /// that does not take them together.
    fn one_by_one(&self, to: &str) -> bool {
        self.transport.local(to).is_some() || self.transport.protocol_with(to) < OUTBOX_PROTOCOL
    }

    /// Merges `merge` into replica `to`: sent with the batch's other merges
    /// to `to` once its writes have minted, or at once when `to` is this
    /// node or does not take [`Merges`].
    pub fn merge(&self, to: String, merge: Merge) -> Call<Merged> {
        if self.one_by_one(&to) {
            return self.transport.rpc(&to, merge);
        }
        self.post(to, merge, |posts| &mut posts.merges)
    }

    /// Reads `key` from replica `to`: sent with the batch's other reads of
    /// `to` once every op has been polled, or at once when `to` is this
    /// node or does not take [`Reads`].
    pub fn read(&self, to: String, key: String) -> Call<Option<SiblingSet>> {
        if self.one_by_one(&to) {
            return self.transport.rpc(&to, Read { key });
        }
        self.post(to, key, |posts| &mut posts.reads)
    }

    /// Queues `what` for `to` in the queue `queue` picks; its answer, or
    /// why none came.
    fn post<T, A: Send + 'static>(
        &self,
        to: String,
        what: T,
        queue: impl FnOnce(&mut Posts) -> &mut Vec<Posted<T, A>>,
    ) -> Call<A> {
        let (answer, answered) = oneshot::channel();
        let node = to.clone();
        queue(&mut self.posted.lock()).push(Posted { to, what, answer });
        Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    node,
                    reason: "the batch ended before its call was sent".into(),
                })
            })
        })
    }

    /// Awaits `rest` (a decided write's late answers) with the batch's
    /// others, in one task once the batch has its answer
    /// ([`Outbox::finish_in_background`]), not one task each.
    pub fn finish_later(&self, rest: BoxFuture<'static, ()>) {
        self.posted.lock().later.push(rest);
    }

    /// Awaits what the batch's writes left ([`Outbox::finish_later`]) in
    /// one task of its own. Also done when the outbox is dropped.
    pub fn finish_in_background(&self) {
        let later = std::mem::take(&mut self.posted.lock().later);
        if later.is_empty() {
            return;
        }
        let all: FuturesUnordered<_> = later.into_iter().collect();
        tokio::spawn(all.collect::<()>());
    }

    /// `op`, an op of the batch: no read leaves until it has been polled
    /// once (and posted the reads it asks first).
    pub fn track<F: Future + Unpin>(self: &Arc<Self>, op: F) -> Tracked<F> {
        Tracked {
            op,
            unpolled: Some(Held::new(self, |p| &mut p.unpolled)),
        }
    }

    /// A write of the batch begins to mint: no merge leaves until it has
    /// posted its own, or dropped what this returns.
    pub fn minting(self: &Arc<Self>) -> Held {
        Held::new(self, |p| &mut p.minting)
    }

    /// Sends the reads once every op has been polled once, and the merges
    /// once also no write is minting: one message per replica (more past
    /// the bounds), each awaited by a task of its own. (A pass of the
    /// handler over its ops may end before it has polled them all: a
    /// `FuturesUnordered` yields after two of its futures woke themselves.)
    pub fn flush_if_settled(&self) {
        let (mut merges, mut reads) = {
            let mut posted = self.posted.lock();
            if posted.unpolled > 0 {
                return;
            }
            let merges = match posted.minting {
                0 => std::mem::take(&mut posted.merges),
                _ => Vec::new(),
            };
            (merges, std::mem::take(&mut posted.reads))
        };
        merges.sort_by(|a, b| a.to.cmp(&b.to));
        for message in messages(merges, |p| &p.to, |p| p.what.key.len() + p.what.set.len()) {
            self.send(message, Merges, |merged: Merged| {
                Box::new(std::iter::repeat_with(move || Ok(merged)))
            });
        }
        reads.sort_by(|a, b| a.to.cmp(&b.to));
        for message in messages(reads, |p| &p.to, |p| p.what.len()) {
            self.send(message, Reads, |sets: Vec<Option<EncodedSet>>| {
                Box::new(
                    sets.into_iter()
                        .map(|set| set.map(|s| s.decode()).transpose()),
                )
            });
        }
    }

    /// Sends `message` to its replica as one `R` made of its calls, and
    /// hands each call its answer: `answers` turns the reply into the
    /// answers of the calls in order (those it has none for fail).
    fn send<T, A, R>(
        &self,
        message: Vec<Posted<T, A>>,
        request: impl FnOnce(Vec<T>) -> R,
        answers: impl FnOnce(R::Reply) -> Answers<A> + Send + 'static,
    ) where
        A: Send + 'static,
        R: Rpc,
    {
        let Some(to) = message.first().map(|p| p.to.clone()) else {
            return;
        };
        let (what, waiting): (Vec<T>, Vec<_>) =
            message.into_iter().map(|p| (p.what, p.answer)).unzip();
        let call = self.transport.rpc(&to, request(what));
        tokio::spawn(async move {
            let mut answers = match call.await {
                Ok(reply) => answers(reply),
                Err(e) => {
                    let reason = e.to_string();
                    for answer in waiting {
                        let _ = answer.send(Err(Error::Unavailable {
                            node: to.clone(),
                            reason: reason.clone(),
                        }));
                    }
                    return;
                }
            };
            for answer in waiting {
                let result = answers.next().unwrap_or_else(|| {
                    Err(Error::Unavailable {
                        node: to.clone(),
                        reason: "left out of its answer (the replica's message budget)".into(),
                    })
                });
                let _ = answer.send(result);
            }
        });
    }
}

/// The answers a reply gives the calls of its message, in order.
type Answers<A> = Box<dyn Iterator<Item = Result<A>> + Send>;

/// `items`, sorted by destination, cut into messages: each to one
/// destination, in the order given, of at most [`MAX_HANDOFF_BATCH`] items
/// and [`MAX_BYTES`] bytes (an item larger than that alone).
fn messages<T>(items: Vec<T>, to: impl Fn(&T) -> &str, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut room = Budget::new(MAX_BYTES);
    for item in items {
        let more = size(&item);
        match out.last_mut() {
            Some(last)
                if to(&last[0]) == to(&item)
                    && last.len() < MAX_HANDOFF_BATCH
                    && room.admit(more) =>
            {
                last.push(item);
            }
            _ => {
                room = Budget::new(MAX_BYTES);
                room.admit(more);
                out.push(vec![item]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::peer::{Dest, Frame, Services};
    use proptest::prelude::*;

    /// Counts the messages sent; every one fails, as to a dead replica.
    #[derive(Default)]
    struct Refusing {
        sent: AtomicUsize,
    }

    impl Transport for Refusing {
        fn local(&self, _: &str) -> Option<Arc<Services>> {
            None
        }

        fn send(&self, to: Dest<'_>, _: Frame) -> Call<bytes::Bytes> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            let node = to.name().to_string();
            Box::pin(async move {
                Err(Error::Unavailable {
                    node,
                    reason: "refused".into(),
                })
            })
        }

        fn protocol_with(&self, _: &str) -> u16 {
            crate::peer::versions::PROTOCOL
        }
    }

    fn outbox() -> (Arc<Refusing>, Arc<Outbox>) {
        let transport = Arc::new(Refusing::default());
        let outbox = Arc::new(Outbox::new(transport.clone() as Arc<dyn Transport>));
        (transport, outbox)
    }

    fn merge(key: &str) -> Merge {
        let set = EncodedSet::encode(&SiblingSet::default()).expect("encode");
        Merge {
            key: key.into(),
            set,
        }
    }

    #[tokio::test]
    async fn merges_wait_for_every_mint_then_leave_together_and_fail_together() {
        let (transport, outbox) = outbox();
        let minting = outbox.minting();
        let first = outbox.merge("n2".into(), merge("a"));
        let second = outbox.merge("n2".into(), merge("b"));
        outbox.flush_if_settled();
        assert_eq!(
            transport.sent.load(Ordering::SeqCst),
            0,
            "a write still mints"
        );
        drop(minting);
        outbox.flush_if_settled();
        assert_eq!(
            transport.sent.load(Ordering::SeqCst),
            1,
            "one message for both"
        );
        for call in [first, second] {
            let e = call.await.expect_err("the replica refused");
            assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        }
    }

    #[tokio::test]
    async fn reads_wait_until_every_op_was_polled_once() {
        let (transport, outbox) = outbox();
        let mut op = outbox.track(Box::pin(std::future::pending::<()>()));
        let read = outbox.read("n3".into(), "k".into());
        outbox.flush_if_settled();
        assert_eq!(
            transport.sent.load(Ordering::SeqCst),
            0,
            "an op not yet polled"
        );
        let polled = futures_util::FutureExt::now_or_never(&mut op);
        assert!(polled.is_none());
        outbox.flush_if_settled();
        assert_eq!(transport.sent.load(Ordering::SeqCst), 1);
        assert!(read.await.is_err());
    }

    #[tokio::test]
    async fn a_dropped_outbox_fails_what_it_holds_and_finishes_what_was_left() {
        let (_, outbox) = outbox();
        let minting = outbox.minting();
        let call = outbox.merge("n2".into(), merge("a"));
        let (done, finished) = tokio::sync::oneshot::channel();
        outbox.finish_later(Box::pin(async move {
            let _ = done.send(());
        }));
        drop(minting);
        drop(outbox);
        let e = call.await.expect_err("never sent");
        assert!(e.to_string().contains("before its call was sent"), "{e}");
        finished.await.expect("the late answers were awaited");
    }

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
