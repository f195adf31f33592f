//! Which record an operation touches: YCSB's request distributions.
//!
//! YCSB (Cooper et al., "Benchmarking Cloud Serving Systems with YCSB",
//! SoCC 2010) draws the key of each operation from one of three
//! distributions over the records loaded so far:
//!
//! - **uniform**: every record alike;
//! - **zipfian**: a few records are hot (Zipf's law with exponent 0.99, as
//!   YCSB's `ZipfianGenerator`), and the popularity ranks are scrambled by a
//!   hash so that the hot records are spread over the key space rather than
//!   packed at its start (YCSB's `ScrambledZipfianGenerator`);
//! - **latest**: the most recently inserted records are hot (a Zipf draw of
//!   the distance back from the newest record, YCSB's
//!   `SkewedLatestGenerator`), for workload D's "read what was just
//!   written".
//!
//! The Zipf draw itself is `rand_distr::Zipf` (rejection-inversion,
//! constant time and no precomputed table, so a record count that grows
//! with inserts costs nothing). Pure: the caller passes the rng and the
//! current record count.

use rand::Rng;
use rand_distr::{Distribution as _, Zipf};
use serde::Serialize;

/// YCSB's default Zipf exponent ("zipfian constant").
pub const ZIPF_EXPONENT: f64 = 0.99;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

impl Distribution {
    /// The name on the command line and in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// Draws record indexes in `0..records`.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    distribution: Distribution,
    /// The Zipf draw over the record count it was built for, rebuilt when
    /// inserts grow the count (cheap: a few floating-point operations).
    zipf: Option<(u64, Zipf<f64>)>,
}

impl KeyChooser {
    pub fn new(distribution: Distribution) -> KeyChooser {
        KeyChooser {
            distribution,
            zipf: None,
        }
    }

    /// A record index in `0..records` (0 when there are no records).
    pub fn choose(&mut self, rng: &mut impl Rng, records: u64) -> u64 {
        if records <= 1 {
            return 0;
        }
        match self.distribution {
            Distribution::Uniform => rng.random_range(0..records),
            Distribution::Zipfian => scramble(self.rank(rng, records), records),
            // Rank 1 is the newest record.
            Distribution::Latest => records - self.rank(rng, records),
        }
    }

    /// A Zipf-distributed popularity rank in `1..=records`.
    fn rank(&mut self, rng: &mut impl Rng, records: u64) -> u64 {
        let zipf = match &self.zipf {
            Some((n, zipf)) if *n == records => zipf,
            _ => {
                // Only fails for n < 1 or a negative exponent, neither of
                // which reaches here; uniform is the harmless fallback.
                let Ok(zipf) = Zipf::new(records as f64, ZIPF_EXPONENT) else {
                    return rng.random_range(1..=records);
                };
                &self.zipf.insert((records, zipf)).1
            }
        };
        (zipf.sample(rng) as u64).clamp(1, records)
    }
}

/// Spreads rank `rank` over `0..records` by a 64-bit FNV-1a hash, as
/// YCSB's scrambled zipfian does, so rank 1 is not always record 0.
pub fn scramble(rank: u64, records: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % records
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn counts(distribution: Distribution, records: u64, draws: usize) -> Vec<u64> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut chooser = KeyChooser::new(distribution);
        let mut counts = vec![0u64; records as usize];
        for _ in 0..draws {
            counts[chooser.choose(&mut rng, records) as usize] += 1;
        }
        counts
    }

    /// The share of all draws that went to the `top` most drawn records.
    fn top_share(mut counts: Vec<u64>, top: usize) -> f64 {
        let total: u64 = counts.iter().sum();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts[..top].iter().sum::<u64>() as f64 / total as f64
    }

    #[test]
    fn zipfian_makes_a_few_records_hot_and_uniform_does_not() {
        // 1% of 10,000 records: about 1% of uniform draws, and for Zipf
        // with s = 0.99 about half of all draws (H(100) / H(10000)).
        let uniform = top_share(counts(Distribution::Uniform, 10_000, 200_000), 100);
        let zipfian = top_share(counts(Distribution::Zipfian, 10_000, 200_000), 100);
        assert!(uniform < 0.03, "uniform top 1% took {uniform}");
        assert!(zipfian > 0.4, "zipfian top 1% took {zipfian}");
    }

    #[test]
    fn zipfian_hot_records_are_scattered_not_the_first_ones() {
        let counts = counts(Distribution::Zipfian, 10_000, 100_000);
        let first_hundred: u64 = counts[..100].iter().sum();
        assert!(
            (first_hundred as f64) < 0.05 * 100_000.0,
            "the first 100 records took {first_hundred} draws"
        );
    }

    #[test]
    fn latest_favours_the_newest_records() {
        let counts = counts(Distribution::Latest, 10_000, 100_000);
        let newest: u64 = counts[9_900..].iter().sum();
        let oldest: u64 = counts[..100].iter().sum();
        assert!(newest > 40_000, "the newest 1% took {newest} draws");
        assert!(oldest < 1_000, "the oldest 1% took {oldest} draws");
        // The very newest record is the most drawn.
        assert_eq!(
            counts
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| **c)
                .map(|(i, _)| i),
            Some(9_999)
        );
    }

    proptest! {
        #[test]
        fn every_draw_is_a_loaded_record(
            seed: u64,
            records in 0u64..5_000,
            grow in 0u64..50,
            which in 0usize..3,
        ) {
            let distribution =
                [Distribution::Uniform, Distribution::Zipfian, Distribution::Latest][which];
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut chooser = KeyChooser::new(distribution);
            // The count grows between draws, as inserts make it do.
            for extra in 0..grow {
                let n = records + extra;
                let i = chooser.choose(&mut rng, n);
                prop_assert!(i < n.max(1), "{i} of {n}");
            }
        }
    }
}
