//! A byte budget for a message being filled: items are admitted while
//! their sizes stay within it, and the first always is, so an item larger
//! than the budget still travels, alone. Every peer message that carries
//! sets (a batch, a handoff, a repair, a fetch answer, an answer of ops)
//! and every scan that feeds one is cut this way. Pure.

/// Bytes admitted so far against a maximum.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    max: usize,
    used: usize,
    taken: usize,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget {
            max,
            used: 0,
            taken: 0,
        }
    }

    /// Whether an item of `size` bytes fits: the first item always does,
    /// a later one while the total stays within the maximum. Counts it
    /// when it fits.
    pub fn admit(&mut self, size: usize) -> bool {
        let used = self.used.saturating_add(size);
        if self.taken > 0 && used > self.max {
            return false;
        }
        self.used = used;
        self.taken += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn the_first_item_always_fits_and_the_rest_while_within_the_budget() {
        let mut budget = Budget::new(250);
        assert!(budget.admit(100));
        assert!(budget.admit(100));
        assert!(!budget.admit(100), "300 bytes in 250");
        assert!(budget.admit(50), "exactly full fits");
        let mut small = Budget::new(10);
        assert!(small.admit(1000), "the first goes, however large");
        assert!(!small.admit(1), "nothing more once over");
    }
}
