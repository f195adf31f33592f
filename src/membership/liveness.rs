//! Liveness gossip ("gossip about gossip") and the phi-accrual failure
//! detector (pure: times are passed in, in milliseconds).
//!
//! Every node keeps a heartbeat counter that it raises each gossip round,
//! under a *generation* (the time it started), so a restarted node's beats
//! outrank those of its previous life even though its counter starts over.
//! Each round a node sends its whole table of `(node, generation,
//! heartbeat)` to a few random peers, who keep the newer of each entry and
//! answer with theirs (push-pull). A beat spreads like an epidemic: every
//! node hears of a change within O(log nodes) rounds (the property test
//! measures it up to 256 nodes).
//!
//! Whether a node is up is decided by the phi-accrual detector of
//! Hayashibara et al. (2004), with the exponential model Cassandra uses:
//! with `mean` the mean interval between the beats heard from a node, phi
//! after `t` ms of silence is `t / mean · log10(e)`, the minus-log10
//! likelihood that a live node stays silent that long. The node is down
//! while phi exceeds the threshold (8 by default, Cassandra's: about 18
//! mean intervals of silence). A slow node that still beats, even late,
//! keeps its phi low, because its own intervals set its mean; only
//! silence convicts it. Beats heard second-hand arrive about once a round
//! plus the spread's delay, and the mean learns that.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Intervals a detector remembers.
const WINDOW: usize = 1000;

/// One node's latest heartbeat as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub node: String,
    /// When the node's current process started (ms since the epoch).
    pub generation: u64,
    pub heartbeat: u64,
}

/// What a [`Heartbeats::merge`] learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Beats newer than what was known.
    pub newer: usize,
    /// Nodes heard for the first time or in a new generation (restarted).
    /// Either may be owed hints from writes made while it was away, even
    /// when this node never sampled it down: a restart shorter than the
    /// detector's conviction time is seen only here.
    pub new_lives: Vec<String>,
}

/// What this node believes of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Up,
    Down,
    /// Never heard of.
    Unknown,
}

/// The phi-accrual detector of one node.
#[derive(Clone, Debug)]
pub struct Detector {
    intervals: VecDeque<u64>,
    sum: u64,
    last: u64,
}

impl Detector {
    /// A detector that heard a first beat at `now`, expecting about one
    /// every `expected` ms until it has learned better.
    pub fn new(now: u64, expected: u64) -> Detector {
        let mut detector = Detector {
            intervals: VecDeque::with_capacity(WINDOW),
            sum: 0,
            last: now,
        };
        detector.push(expected.max(1));
        detector
    }

    pub fn heard(&mut self, now: u64) {
        let interval = now.saturating_sub(self.last).max(1);
        self.last = now;
        self.push(interval);
    }

    fn push(&mut self, interval: u64) {
        if self.intervals.len() == WINDOW
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
        }
        self.intervals.push_back(interval);
        self.sum += interval;
    }

    pub fn mean(&self) -> f64 {
        self.sum as f64 / self.intervals.len().max(1) as f64
    }

    /// Suspicion after silence until `now`.
    pub fn phi(&self, now: u64) -> f64 {
        let silence = now.saturating_sub(self.last) as f64;
        silence / self.mean() * std::f64::consts::LOG10_E
    }
}

struct Known {
    generation: u64,
    heartbeat: u64,
    detector: Detector,
}

/// This node's heartbeat and what it has heard of every other node's.
pub struct Heartbeats {
    me: String,
    generation: u64,
    heartbeat: u64,
    /// The gossip period: the detectors' first guess of the beat interval.
    period: u64,
    threshold: f64,
    known: HashMap<String, Known>,
}

impl Heartbeats {
    pub fn new(me: &str, generation: u64, period_ms: u64, threshold: f64) -> Heartbeats {
        Heartbeats {
            me: me.to_string(),
            generation,
            heartbeat: 0,
            period: period_ms,
            threshold,
            known: HashMap::new(),
        }
    }

    /// Raises this node's heartbeat (once per gossip round).
    pub fn tick(&mut self) {
        self.heartbeat += 1;
    }

    /// Every beat this node knows, its own first: what it gossips.
    pub fn beats(&self) -> Vec<Beat> {
        let mut out = Vec::with_capacity(self.known.len() + 1);
        out.push(Beat {
            node: self.me.clone(),
            generation: self.generation,
            heartbeat: self.heartbeat,
        });
        out.extend(self.known.iter().map(|(node, k)| Beat {
            node: node.clone(),
            generation: k.generation,
            heartbeat: k.heartbeat,
        }));
        out
    }

    /// Keeps every beat newer than what was known (heard at `now`), and
    /// only for nodes `member` accepts (beats about strangers are dropped,
    /// so a peer cannot grow the table without bound).
    pub fn merge(&mut self, beats: &[Beat], now: u64, member: impl Fn(&str) -> bool) -> Merged {
        let mut merged = Merged::default();
        for beat in beats {
            if beat.node == self.me || !member(&beat.node) {
                continue;
            }
            let key = (beat.generation, beat.heartbeat);
            let new_life = match self.known.get_mut(&beat.node) {
                Some(k) if (k.generation, k.heartbeat) >= key => continue,
                Some(k) => {
                    let restarted = k.generation != beat.generation;
                    if restarted {
                        // A new process: its rhythm is learned afresh.
                        k.detector = Detector::new(now, self.period);
                    } else {
                        k.detector.heard(now);
                    }
                    (k.generation, k.heartbeat) = key;
                    restarted
                }
                None => {
                    self.known.insert(
                        beat.node.clone(),
                        Known {
                            generation: beat.generation,
                            heartbeat: beat.heartbeat,
                            detector: Detector::new(now, self.period),
                        },
                    );
                    true
                }
            };
            merged.newer += 1;
            if new_life {
                merged.new_lives.push(beat.node.clone());
            }
        }
        merged
    }

    /// Forgets nodes that are no longer members.
    pub fn retain(&mut self, member: impl Fn(&str) -> bool) {
        self.known.retain(|node, _| member(node));
    }

    pub fn verdict(&self, node: &str, now: u64) -> Verdict {
        if node == self.me {
            return Verdict::Up;
        }
        match self.known.get(node) {
            None => Verdict::Unknown,
            Some(k) if k.detector.phi(now) > self.threshold => Verdict::Down,
            Some(_) => Verdict::Up,
        }
    }

    pub fn phi(&self, node: &str, now: u64) -> Option<f64> {
        self.known.get(node).map(|k| k.detector.phi(now))
    }

    /// The heartbeat known of `node`, for tests and `/cluster`.
    pub fn heartbeat(&self, node: &str) -> Option<(u64, u64)> {
        if node == self.me {
            return Some((self.generation, self.heartbeat));
        }
        self.known.get(node).map(|k| (k.generation, k.heartbeat))
    }
}

#[cfg(test)]
mod tests;
