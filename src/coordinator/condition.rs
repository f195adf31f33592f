//! Conditional writes: `If-None-Match: *` and `If-Match` on PUT and DELETE.
//!
//! A condition is checked by the coordinator against the key's set as a
//! read at the request's `r` returns it, and the write goes ahead only if
//! it holds. In a leaderless store this is a check, not a compare-and-set:
//! nothing orders the check and the write against another client's write
//! to the same key. So:
//!
//! - the check is exact when the read overlaps every acknowledged write
//!   (R + W > N, every write acknowledged by W replicas that the read can
//!   reach) and no other write to the key is in flight;
//! - two conditional writes that run at the same time can both pass. Each
//!   then writes with the context it checked, neither covers the other's
//!   dot, and both are kept as siblings: a race never loses a write, it
//!   shows up as siblings on the next read;
//! - a read below the overlap (R + W ≤ N, or replicas that missed a write
//!   while down) can miss the newest write and let a write pass that
//!   should have failed; its write still does not supersede what the read
//!   missed, which becomes a sibling.
//!
//! What each condition asks of the current set, where "live" means it
//! holds at least one value (not only tombstones, not absent):
//!
//! | header | passes when | the write's context |
//! |---|---|---|
//! | `If-None-Match: *` | the key is not live | the client's, joined with the set's, so the write supersedes the tombstones it found |
//! | `If-Match: *` | the key is live | the client's |
//! | `If-Match: <context>` | the key is live and the context covers every sibling: nobody wrote since the read that returned it | the one given |
//!
//! A refused write is never applied: the check runs before any dot is
//! minted. Pure: the coordinator reads, [`Condition::check`] decides.

use crate::version::{Context, SiblingSet};

/// What a client asked the key's current state to be before its write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `If-None-Match: *`: create only; the key has no live value.
    Absent,
    /// `If-Match: *`: update only; the key has a live value.
    Present,
    /// `If-Match: <context>`: the key has a live value and nothing was
    /// written to it since the read that returned this context.
    Unchanged(Context),
}

impl Condition {
    /// Whether the condition holds for `current` (the key's set as read,
    /// `None` when no replica had it). Holding, it gives the context the
    /// write carries, built from the client's `context`; failing, it says
    /// why, for the 412.
    pub fn check(
        &self,
        current: Option<&SiblingSet>,
        context: Context,
    ) -> std::result::Result<Context, String> {
        let live = current.is_some_and(|set| !set.is_deleted());
        match self {
            Condition::Absent if live => {
                Err("the key has a value (If-None-Match: * creates only)".into())
            }
            Condition::Absent => {
                let mut context = context;
                if let Some(set) = current {
                    crdts::CvRDT::merge(&mut context.vv, set.context().clone());
                }
                Ok(context)
            }
            Condition::Present | Condition::Unchanged(_) if !live => Err(
                "the key has no value (If-Match needs a live value: it was never written, or it was deleted)"
                    .into(),
            ),
            Condition::Present => Ok(context),
            Condition::Unchanged(given) => {
                let unseen = current
                    .map(|set| {
                        set.siblings()
                            .iter()
                            .filter(|s| !given.covers(&s.dot))
                            .count()
                    })
                    .unwrap_or(0);
                match unseen {
                    0 => Ok(given.clone()),
                    n => Err(format!(
                        "the key was written since the read that returned this context \
                         ({n} sibling(s) it has not seen); read the key again and retry with its context"
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::version::{Actor, Content, Dot};

    fn dot(node: &str, counter: u64) -> Dot {
        Dot {
            actor: Actor::new(node, 1),
            counter,
        }
    }

    fn value(text: &'static str) -> Content {
        Content::Value(bytes::Bytes::from_static(text.as_bytes()))
    }

    /// A set written by `writes` (node, counter, content), each with the
    /// context of the set before it when `causal`, else with none.
    fn set_of(writes: &[(&str, u64, Content)], causal: bool) -> SiblingSet {
        let mut set = SiblingSet::new();
        for (node, counter, content) in writes {
            let context = match causal {
                true => Context::read(set.context().clone()),
                false => Context::default(),
            };
            let d = dot(
                node,
                (*counter).max(set.min_counter(&context, &Actor::new(*node, 1))),
            );
            set.write(&context, d, content.clone());
        }
        set
    }

    #[test]
    fn create_only_passes_on_an_absent_or_deleted_key_and_supersedes_its_tombstones() {
        assert_eq!(
            Condition::Absent.check(None, Context::default()),
            Ok(Context::default())
        );
        let deleted = set_of(&[("a", 1, value("1")), ("a", 2, Content::Tombstone)], true);
        let context = Condition::Absent
            .check(Some(&deleted), Context::default())
            .expect("a deleted key may be created");
        let mut next = deleted.clone();
        next.write(&context, dot("b", 1), value("2"));
        assert_eq!(next.siblings().len(), 1, "the tombstone is superseded");
        let live = set_of(&[("a", 1, value("1"))], true);
        let refused = Condition::Absent.check(Some(&live), Context::default());
        assert!(refused.is_err_and(|why| why.contains("If-None-Match")));
    }

    #[test]
    fn update_only_needs_a_live_value() {
        let live = set_of(&[("a", 1, value("1"))], true);
        let deleted = set_of(&[("a", 1, value("1")), ("a", 2, Content::Tombstone)], true);
        assert!(
            Condition::Present
                .check(Some(&live), Context::default())
                .is_ok()
        );
        assert!(
            Condition::Present
                .check(Some(&deleted), Context::default())
                .is_err()
        );
        assert!(Condition::Present.check(None, Context::default()).is_err());
        let read = Context::read(live.context().clone());
        assert!(
            Condition::Unchanged(read.clone())
                .check(None, Context::default())
                .is_err()
        );
        assert!(
            Condition::Unchanged(read)
                .check(Some(&deleted), Context::default())
                .is_err()
        );
    }

    #[test]
    fn a_context_passes_until_somebody_writes_and_then_fails() {
        let mut set = set_of(&[("a", 1, value("1"))], true);
        let read = Context::read(set.context().clone());
        let passed = Condition::Unchanged(read.clone())
            .check(Some(&set), Context::default())
            .expect("nothing written since the read");
        assert_eq!(passed, read);
        set.write(&read, dot("b", 1), value("2"));
        let refused = Condition::Unchanged(read).check(Some(&set), Context::default());
        assert!(refused.is_err_and(|why| why.contains("1 sibling")));
    }

    #[test]
    fn a_clients_own_write_since_its_read_is_covered_by_its_context() {
        let mut set = set_of(&[("a", 1, value("1"))], true);
        let read = Context::read(set.context().clone());
        let mine = dot("b", 1);
        set.write(&read, mine.clone(), value("2"));
        let after = read.after_write(mine);
        assert!(
            Condition::Unchanged(after)
                .check(Some(&set), Context::default())
                .is_ok()
        );
    }

    proptest! {
        /// The law the route rests on: a write made with the context a
        /// passing `If-Match` gives supersedes every sibling the check saw,
        /// and a check fails exactly when a sibling is outside the context.
        #[test]
        fn a_passing_if_match_supersedes_everything_it_checked(
            writes in proptest::collection::vec((0..3usize, any::<bool>(), any::<bool>()), 1..12),
            seen in 0..12usize,
        ) {
            let nodes = ["a", "b", "c"];
            let mut set = SiblingSet::new();
            let mut read = Context::default();
            for (i, (node, causal, tombstone)) in writes.iter().enumerate() {
                let actor = Actor::new(nodes[*node], 1);
                let context = match causal {
                    true => Context::read(set.context().clone()),
                    false => Context::default(),
                };
                let content = match tombstone {
                    true => Content::Tombstone,
                    false => value("1"),
                };
                let d = Dot { counter: set.min_counter(&context, &actor), actor };
                set.write(&context, d, content);
                if i + 1 == seen.min(writes.len()) {
                    read = Context::read(set.context().clone());
                }
            }
            let unseen = set.siblings().iter().filter(|s| !read.covers(&s.dot)).count();
            match Condition::Unchanged(read).check(Some(&set), Context::default()) {
                Ok(context) => {
                    prop_assert_eq!(unseen, 0);
                    let mut next = set.clone();
                    next.write(&context, dot("z", set.context().get(&Actor::new("z", 1)) + 1), value("2"));
                    prop_assert_eq!(next.siblings().len(), 1);
                }
                Err(_) => prop_assert!(unseen > 0 || set.is_deleted()),
            }
        }
    }
}
