//! YCSB's core workloads: which operations a run mixes, in what shares,
//! and which key distribution each uses by default.
//!
//! | workload | mix | keys | stands for |
//! |---|---|---|---|
//! | A | 50% read, 50% update | zipfian | a session store |
//! | B | 95% read, 5% update | zipfian | photo tagging |
//! | C | 100% read | zipfian | a profile cache |
//! | D | 95% read, 5% insert | latest | status updates |
//! | E | 95% scan (1 to 100 keys, uniform), 5% insert | zipfian | threaded conversations |
//! | F | 50% read, 50% read-modify-write | zipfian | a user database |
//! | put | 100% update | uniform | chorus's own write-path run |
//!
//! A scan starts at the chosen record's key and reads the keys after it in
//! key order (`GET /kv?start=…&limit=…`, chorus only). Pure: the caller
//! passes the rng.

use rand::Rng;
use serde::Serialize;

use super::keys::Distribution;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    A,
    B,
    C,
    D,
    E,
    F,
    /// Updates only: the write path alone.
    Put,
}

/// One operation of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Read a record.
    Read,
    /// Overwrite a record, with the context last seen for it.
    Update,
    /// Write a new record past the loaded ones.
    Insert,
    /// Read a record, then write it with the read's context; timed as one.
    ReadModifyWrite,
    /// Read the records from one key on, in key order.
    Scan,
}

/// YCSB's `maxscanlength`: a scan reads 1 to this many records.
pub const MAX_SCAN_LENGTH: u32 = 100;

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Read,
        Operation::Update,
        Operation::Insert,
        Operation::ReadModifyWrite,
        Operation::Scan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Update => "update",
            Operation::Insert => "insert",
            Operation::ReadModifyWrite => "rmw",
            Operation::Scan => "scan",
        }
    }
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "A",
            Workload::B => "B",
            Workload::C => "C",
            Workload::D => "D",
            Workload::E => "E",
            Workload::F => "F",
            Workload::Put => "put",
        }
    }

    /// The operations and their shares (summing to 1).
    pub fn mix(self) -> &'static [(Operation, f64)] {
        use Operation::*;
        match self {
            Workload::A => &[(Read, 0.5), (Update, 0.5)],
            Workload::B => &[(Read, 0.95), (Update, 0.05)],
            Workload::C => &[(Read, 1.0)],
            Workload::D => &[(Read, 0.95), (Insert, 0.05)],
            Workload::E => &[(Scan, 0.95), (Insert, 0.05)],
            Workload::F => &[(Read, 0.5), (ReadModifyWrite, 0.5)],
            Workload::Put => &[(Update, 1.0)],
        }
    }

    /// YCSB's request distribution for this workload.
    pub fn distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            Workload::Put => Distribution::Uniform,
            _ => Distribution::Zipfian,
        }
    }

    /// Draws the next operation.
    pub fn next(self, rng: &mut impl Rng) -> Operation {
        let mix = self.mix();
        let mut draw: f64 = rng.random();
        for &(op, share) in mix {
            if draw < share {
                return op;
            }
            draw -= share;
        }
        mix[mix.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::HashMap;

    const ALL: [Workload; 7] = [
        Workload::A,
        Workload::B,
        Workload::C,
        Workload::D,
        Workload::E,
        Workload::F,
        Workload::Put,
    ];

    #[test]
    fn shares_sum_to_one() {
        for w in ALL {
            let sum: f64 = w.mix().iter().map(|(_, s)| s).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{w:?}: {sum}");
        }
    }

    #[test]
    fn drawn_operations_follow_the_mix() {
        let mut rng = SmallRng::seed_from_u64(3);
        for w in ALL {
            let draws = 100_000;
            let mut seen: HashMap<Operation, u64> = HashMap::new();
            for _ in 0..draws {
                *seen.entry(w.next(&mut rng)).or_default() += 1;
            }
            for &(op, share) in w.mix() {
                let got = seen.remove(&op).unwrap_or(0) as f64 / draws as f64;
                assert!(
                    (got - share).abs() < 0.01,
                    "{w:?} {op:?}: {got} for {share}"
                );
            }
            assert!(seen.is_empty(), "{w:?} drew {seen:?}, outside its mix");
        }
    }
}
