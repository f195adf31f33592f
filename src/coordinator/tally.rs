//! Counting the answers of a fan-out: done, failed, or keep waiting.
//!
//! A coordinator registers each reply as it arrives and asks the tally
//! whether the quorum is met or can no longer be met. A quorum is a
//! [`Need`]: so many acknowledgements, so many of them from primary
//! replicas (the key's preference list, as opposed to fallbacks), so many
//! from replicas that made the write durable. Failed means that even if
//! every call still out succeeded, some count would stay short. Pure: the
//! coordinator and its tests share it.

/// What a fan-out must collect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Need {
    pub acks: usize,
    pub primaries: usize,
    pub durable: usize,
}

/// Where a fan-out stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Done,
    Failed,
}

#[derive(Clone, Debug)]
pub struct Tally {
    need: Need,
    /// Calls still out: node and whether it is a primary.
    outstanding: Vec<(String, bool)>,
    acked: Vec<String>,
    primary_acked: usize,
    durable_acked: usize,
    failed: Vec<(String, String)>,
}

impl Tally {
    /// A fan-out to `nodes` (each marked primary or not) that needs `need`.
    pub fn new(need: Need, nodes: impl IntoIterator<Item = (String, bool)>) -> Tally {
        let outstanding: Vec<_> = nodes.into_iter().collect();
        Tally {
            need,
            acked: Vec::with_capacity(outstanding.len()),
            outstanding,
            primary_acked: 0,
            durable_acked: 0,
            failed: Vec::new(),
        }
    }

    /// One more call went out (a fallback standing in for a failed primary).
    pub fn add(&mut self, node: &str, primary: bool) {
        self.outstanding.push((node.to_string(), primary));
    }

    /// `node` answered; `durable` if it made the write durable.
    pub fn ack(&mut self, node: &str, durable: bool) {
        if let Some(primary) = self.take(node) {
            self.acked.push(node.to_string());
            self.primary_acked += usize::from(primary);
            self.durable_acked += usize::from(durable);
        }
    }

    pub fn fail(&mut self, node: &str, reason: impl Into<String>) {
        if self.take(node).is_some() {
            self.failed.push((node.to_string(), reason.into()));
        }
    }

    /// Every call still out fails with `reason` (the deadline passed).
    pub fn fail_outstanding(&mut self, reason: &str) {
        for (node, _) in std::mem::take(&mut self.outstanding) {
            self.failed.push((node, reason.to_string()));
        }
    }

    pub fn outcome(&self) -> Outcome {
        let need = self.need;
        let out = self.outstanding.len();
        let out_primaries = self.outstanding.iter().filter(|(_, p)| *p).count();
        if self.acked.len() >= need.acks
            && self.primary_acked >= need.primaries
            && self.durable_acked >= need.durable
        {
            Outcome::Done
        } else if self.acked.len() + out < need.acks
            || self.primary_acked + out_primaries < need.primaries
            || self.durable_acked + out < need.durable
        {
            Outcome::Failed
        } else {
            Outcome::Pending
        }
    }

    pub fn need(&self) -> Need {
        self.need
    }

    pub fn acked(&self) -> &[String] {
        &self.acked
    }

    pub fn primary_acked(&self) -> usize {
        self.primary_acked
    }

    /// (node, reason) for every failure so far.
    pub fn failures(&self) -> &[(String, String)] {
        &self.failed
    }

    fn take(&mut self, node: &str) -> Option<bool> {
        let at = self.outstanding.iter().position(|(n, _)| n == node)?;
        Some(self.outstanding.swap_remove(at).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(primaries: &[bool]) -> Vec<(String, bool)> {
        primaries
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("n{i}"), *p))
            .collect()
    }

    #[test]
    fn done_at_the_quorum_failed_when_it_is_out_of_reach() {
        let need = Need {
            acks: 2,
            ..Need::default()
        };
        let mut t = Tally::new(need, nodes(&[true, true, true]));
        assert_eq!(t.outcome(), Outcome::Pending);
        t.fail("n0", "refused");
        t.ack("n1", true);
        assert_eq!(t.outcome(), Outcome::Pending);
        t.fail("n2", "timeout");
        assert_eq!(t.outcome(), Outcome::Failed);
        assert_eq!(t.failures().len(), 2);
        // Answers from nodes not asked, or twice, count for nothing.
        t.ack("n1", true);
        t.ack("stranger", true);
        assert_eq!(t.acked(), ["n1"]);
    }

    #[test]
    fn primaries_and_durability_are_counted_apart() {
        let need = Need {
            acks: 2,
            primaries: 2,
            durable: 1,
        };
        let mut t = Tally::new(need, nodes(&[true, false, true]));
        t.ack("n1", true); // a fallback
        t.ack("n0", false);
        assert_eq!(t.outcome(), Outcome::Pending, "one primary only");
        t.ack("n2", false);
        assert_eq!(t.outcome(), Outcome::Done);
        let mut t = Tally::new(need, nodes(&[true, false, true]));
        t.fail("n0", "down");
        assert_eq!(
            t.outcome(),
            Outcome::Failed,
            "two primaries are out of reach"
        );
    }

    proptest! {
        #[test]
        fn the_outcome_is_decided_exactly_when_it_can_be(
            acks in 0usize..5, primaries in 0usize..5, durable in 0usize..5,
            replies in prop::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 1..6),
            answered in 0usize..6,
        ) {
            let need = Need { acks, primaries, durable };
            let list: Vec<(String, bool)> =
                replies.iter().enumerate().map(|(i, (p, _, _))| (format!("n{i}"), *p)).collect();
            let mut t = Tally::new(need, list.clone());
            let answered = answered.min(replies.len());
            for (i, (_, ok, dur)) in replies.iter().enumerate().take(answered) {
                if *ok { t.ack(&format!("n{i}"), *dur) } else { t.fail(&format!("n{i}"), "x") }
            }
            // Best case: every call still out succeeds, durably.
            let done = |extra: bool| {
                let mut a = 0; let mut p = 0; let mut d = 0;
                for (i, (prim, ok, dur)) in replies.iter().enumerate() {
                    let (ok, dur) = if i < answered { (*ok, *dur) } else if extra { (true, true) } else { (false, false) };
                    if ok { a += 1; p += usize::from(*prim); d += usize::from(dur); }
                }
                a >= acks && p >= primaries && d >= durable
            };
            let expected = if done(false) {
                Outcome::Done
            } else if !done(true) {
                Outcome::Failed
            } else {
                Outcome::Pending
            };
            prop_assert_eq!(t.outcome(), expected);
        }
    }
}
