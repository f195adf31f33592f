//! Latency and throughput over time: one coarse histogram per second of
//! the run, filled by the workers (each flushes its own once a second, so
//! they hardly contend), summarised per second at the end.

use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::error::{Error, Result};

/// One second of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Second {
    /// Seconds since the measured part of the run started.
    pub second: u64,
    pub requests: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// The per-second histograms of a run.
pub struct Timeline {
    start: Instant,
    seconds: Mutex<Vec<Histogram<u64>>>,
}

/// Two significant figures: a per-second view, not the run's own figures.
fn coarse() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 2).map_err(|e| Error::Protocol(e.to_string()))
}

impl Timeline {
    pub fn new(start: Instant) -> Timeline {
        Timeline {
            start,
            seconds: Mutex::new(Vec::new()),
        }
    }

    /// A worker's recorder for this timeline.
    pub fn recorder(&self) -> Result<Recorder<'_>> {
        Ok(Recorder {
            timeline: self,
            second: 0,
            local: coarse()?,
        })
    }

    fn flush(&self, second: u64, local: &mut Histogram<u64>) {
        if local.is_empty() {
            return;
        }
        let mut seconds = self.seconds.lock();
        while seconds.len() <= second as usize {
            match coarse() {
                Ok(h) => seconds.push(h),
                Err(_) => return,
            }
        }
        let _ = seconds[second as usize].add(&*local);
        local.reset();
    }

    /// Requests and latency per second.
    pub fn summary(&self) -> Vec<Second> {
        self.seconds
            .lock()
            .iter()
            .enumerate()
            .map(|(i, h)| Second {
                second: i as u64,
                requests: h.len(),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
            })
            .collect()
    }
}

/// A worker's view: records into its own histogram, handing it to the
/// timeline whenever its second ends.
pub struct Recorder<'a> {
    timeline: &'a Timeline,
    second: u64,
    local: Histogram<u64>,
}

impl Recorder<'_> {
    /// Records a request that started at `at` and took `micros`.
    pub fn record(&mut self, at: Instant, micros: u64) {
        let second = at.saturating_duration_since(self.timeline.start).as_secs();
        if second != self.second {
            self.timeline.flush(self.second, &mut self.local);
            self.second = second;
        }
        self.local.saturating_record(micros.max(1));
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.timeline.flush(self.second, &mut self.local);
    }
}
