//! Counting the answers of a fan-out: done, failed, or keep waiting.
//!
//! A coordinator registers each reply as it arrives and asks the tally
//! whether the quorum is met (`needed` acknowledgements) or can no longer be
//! met (too many failures for the calls still out). Pure: the quorum code
//! and its tests share it, and the replication issue adds primaries and
//! durable acknowledgements to the same shape.

/// Where a fan-out stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Done,
    Failed,
}

#[derive(Clone, Debug)]
pub struct Tally {
    needed: usize,
    total: usize,
    acked: Vec<String>,
    failed: Vec<(String, String)>,
}

impl Tally {
    /// A fan-out to `total` nodes that needs `needed` acknowledgements.
    pub fn new(needed: usize, total: usize) -> Tally {
        Tally {
            needed,
            total,
            acked: Vec::with_capacity(total),
            failed: Vec::new(),
        }
    }

    pub fn ack(&mut self, node: &str) {
        self.acked.push(node.to_string());
    }

    pub fn fail(&mut self, node: &str, reason: impl Into<String>) {
        self.failed.push((node.to_string(), reason.into()));
    }

    pub fn outcome(&self) -> Outcome {
        let outstanding = self
            .total
            .saturating_sub(self.acked.len() + self.failed.len());
        if self.acked.len() >= self.needed {
            Outcome::Done
        } else if self.acked.len() + outstanding < self.needed {
            Outcome::Failed
        } else {
            Outcome::Pending
        }
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    pub fn acked(&self) -> &[String] {
        &self.acked
    }

    /// `node: reason` for every failure so far.
    pub fn failures(&self) -> Vec<String> {
        self.failed
            .iter()
            .map(|(node, reason)| format!("{node}: {reason}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn done_at_the_quorum_failed_when_it_is_out_of_reach() {
        let mut t = Tally::new(2, 3);
        assert_eq!(t.outcome(), Outcome::Pending);
        t.fail("n1", "refused");
        assert_eq!(t.outcome(), Outcome::Pending);
        t.ack("n2");
        assert_eq!(t.outcome(), Outcome::Pending);
        t.fail("n3", "timeout");
        assert_eq!(t.outcome(), Outcome::Failed);
        assert_eq!(t.failures(), ["n1: refused", "n3: timeout"]);
    }

    proptest! {
        #[test]
        fn the_outcome_is_decided_exactly_when_it_can_be(
            needed in 1usize..6, total in 1usize..6, replies in prop::collection::vec(any::<bool>(), 0..6),
        ) {
            let mut t = Tally::new(needed, total);
            let replies = &replies[..replies.len().min(total)];
            for (i, ok) in replies.iter().enumerate() {
                if *ok { t.ack(&format!("n{i}")) } else { t.fail(&format!("n{i}"), "x") }
            }
            let acks = replies.iter().filter(|ok| **ok).count();
            let open = total - replies.len();
            let expected = if acks >= needed {
                Outcome::Done
            } else if acks + open < needed {
                Outcome::Failed
            } else {
                Outcome::Pending
            };
            prop_assert_eq!(t.outcome(), expected);
        }
    }
}
