//! The wall clock as one node reads it.
//!
//! Nothing that decides which write survives reads a wall clock: that is
//! what dots and version vectors are for, and a node whose clock is hours
//! off loses no write because of it. chorus reads the clock only where a
//! bound in time is the point:
//!
//! - the age of idempotency records (`limits.idempotency_ttl_ms`);
//! - the timestamp a peer signs, checked against a skew window
//!   (`security.peer_clock_skew_ms`);
//! - the *generation* of a node's life: its heartbeats, its op-log origin
//!   and its peer signatures carry it, and a later life must outrank an
//!   earlier one;
//! - when a value with a TTL expires ([`Clock::expiry_ms`]).
//!
//! Expiry is judged by the fastest clock a node has heard from, not by its
//! own alone: every signed peer request carries its sender's clock, and
//! the receiver keeps how far ahead of its own each peer's was
//! ([`Clock::heard_from`]). A node whose clock lags therefore hides an
//! expired value when the fastest node does, give or take the time a
//! message takes between them, instead of showing it again for as long as
//! it lags. How far ahead a peer may be is bounded by the window peers
//! accept signatures in (`security.peer_clock_skew_ms`), so one fast clock
//! can make values expire early by at most that much.
//!
//! A [`Clock`] is a cheap handle on one node's clock: the system clock for
//! a real node, or the simulation's time (turmoil's, the same for every
//! host) plus a skew the nemesis sets per node, shared by the node's lives
//! as a machine's clock is.
//!
//! A generation must outrank every generation of the node's earlier lives
//! even when the clock went back between them (a stepped clock, a machine
//! booted with a bad time): peers keep the newest generation they heard
//! from a node and take an older one for a replay of an old life, and
//! would shut the node out until its clock caught up. So each life starts
//! above a floor the node keeps on its disk ([`reserve_generations`]),
//! whatever the clock says.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One node's wall clock.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    simulated: bool,
    /// Added to the source's reading, in ms.
    skew_ms: Arc<AtomicI64>,
    /// The last generation this clock handed out (simulated clocks; the
    /// system clock shares one per process).
    last_generation: AtomicU64,
    /// How far ahead of this clock each peer's was when its last signed
    /// request arrived, in ms (negative: behind).
    peers_ahead: parking_lot::Mutex<std::collections::HashMap<String, i64>>,
}

/// The last generation the system clock handed out in this process.
static LAST_SYSTEM_GENERATION: AtomicU64 = AtomicU64::new(0);

impl Clock {
    /// The machine's clock.
    pub fn system() -> Clock {
        Clock::new(false, Arc::default())
    }

    /// The simulation's time plus `skew`, a cell the nemesis moves (and
    /// keeps across the node's lives).
    pub fn simulated(skew: Arc<AtomicI64>) -> Clock {
        Clock::new(true, skew)
    }

    fn new(simulated: bool, skew_ms: Arc<AtomicI64>) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                simulated,
                skew_ms,
                last_generation: AtomicU64::new(0),
                peers_ahead: Default::default(),
            }),
        }
    }

    /// Milliseconds since the Unix epoch, as this node's clock says (0 if
    /// it says before).
    pub fn now_ms(&self) -> u64 {
        let source = if self.inner.simulated {
            turmoil::since_epoch().map_or(0, |d| d.as_millis() as u64)
        } else {
            system_ms()
        };
        source.saturating_add_signed(self.inner.skew_ms.load(Ordering::Relaxed))
    }

    /// Records that `node`'s clock read `their_ms` in a request that
    /// arrives now (one it signed: authenticated, and within the skew
    /// window, so at most that far ahead).
    pub fn heard_from(&self, node: &str, their_ms: u64) {
        let ahead = their_ms as i64 - self.now_ms() as i64;
        let mut peers = self.inner.peers_ahead.lock();
        match peers.get_mut(node) {
            Some(known) => *known = ahead,
            // One entry per peer that ever signed to this node.
            None => {
                peers.insert(node.to_string(), ahead);
            }
        }
    }

    /// The instant values expire by here: this clock, or the fastest
    /// peer's as last heard, advanced by this clock since, when that is
    /// ahead (see the module's notes).
    pub fn expiry_ms(&self) -> u64 {
        let ahead = self
            .inner
            .peers_ahead
            .lock()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(0);
        self.now_ms().saturating_add(ahead as u64)
    }

    /// Every later generation of this clock is above `floor` (the floor
    /// this life reserved, [`reserve_generations`]).
    pub fn raise_generation_floor(&self, floor: u64) {
        self.last_generation().fetch_max(floor, Ordering::Relaxed);
    }

    fn last_generation(&self) -> &AtomicU64 {
        if self.inner.simulated {
            &self.inner.last_generation
        } else {
            &LAST_SYSTEM_GENERATION
        }
    }

    /// A generation for a new life of this node (its heartbeats, its op
    /// log, its signatures): the clock in ms, but above the life's floor
    /// and any generation this clock handed out before in this process, so
    /// two lives started within one millisecond in one process (tests
    /// restart nodes in process) still differ and the later outranks the
    /// earlier.
    pub fn generation(&self) -> u64 {
        let last = self.last_generation();
        let now = self.now_ms();
        let next = |last: u64| last.max(now.saturating_sub(1)) + 1;
        // The closure never refuses, so the update always succeeds.
        let previous = last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(next(l)))
            .unwrap_or_else(|l| l);
        next(previous)
    }
}

/// Generations one life may hand out above its floor: a life takes three
/// at its start (signer, heartbeats, op log). Kept small, a second of the
/// clock: a life started with an empty disk has no floor and starts at its
/// clock, and peers would take it for a replay of an older life as long as
/// the last life's reservation is ahead of that clock.
pub const GENERATIONS_PER_LIFE: u64 = 1_000;

/// The floor of a new life's generations and the floor to keep on disk for
/// the next life: the clock, or above the last life's reservation if the
/// clock is behind it.
pub fn reserve_generations(now_ms: u64, kept: u64) -> (u64, u64) {
    let floor = now_ms.max(kept);
    (floor, floor.saturating_add(GENERATIONS_PER_LIFE))
}

/// Milliseconds since the Unix epoch by the system clock (0 if before).
pub fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_the_fastest_clock_heard_from() {
        let clock = Clock::system();
        let now = clock.now_ms();
        assert!((now..now + 1_000).contains(&clock.expiry_ms()));
        // A peer behind changes nothing.
        clock.heard_from("behind", now - 5_000);
        assert!((now..now + 1_000).contains(&clock.expiry_ms()));
        // A peer ahead moves expiry ahead by as much, and keeps moving it
        // as this clock runs.
        clock.heard_from("ahead", clock.now_ms() + 10_000);
        let expiry = clock.expiry_ms();
        assert!(
            (now + 9_000..clock.now_ms() + 11_000).contains(&expiry),
            "{expiry}"
        );
        // Heard again in step with this clock: no longer ahead.
        clock.heard_from("ahead", clock.now_ms());
        assert!(clock.expiry_ms() < clock.now_ms() + 1_000);
    }

    #[test]
    fn generations_rise_and_skew_moves_the_reading() {
        let clock = Clock::system();
        let a = clock.generation();
        let b = clock.generation();
        assert!(b > a, "{a} then {b}");
        let skew = Arc::new(AtomicI64::new(0));
        let skewed = Clock::new(false, Arc::clone(&skew));
        let before = skewed.now_ms();
        skew.store(-60_000, Ordering::Relaxed);
        let after = skewed.now_ms();
        assert!(after + 50_000 < before, "{before} then {after}");
    }

    #[test]
    fn a_life_outranks_the_last_even_when_the_clock_went_back() {
        let (first, kept) = reserve_generations(10_000_000, 0);
        assert_eq!(first, 10_000_000);
        // The clock steps back an hour; the next life is still above.
        let (second, _) = reserve_generations(10_000_000 - 3_600_000, kept);
        assert!(second > first + GENERATIONS_PER_LIFE - 1, "{second}");
        let clock = Clock::simulated(Arc::default());
        clock.raise_generation_floor(second);
        assert!(clock.generation() > second);
    }

    #[test]
    fn a_life_with_a_sound_clock_starts_at_its_clock() {
        // A floor far ahead of the clock would shut out the node's next
        // life if that one starts with an empty disk (tests/membership.rs
        // rejoins so, 9 s after the last life).
        let (first, kept) = reserve_generations(10_000_000, 0);
        let (second, kept) = reserve_generations(10_002_000, kept);
        assert_eq!(second, 10_002_000);
        let (empty_disk, _) = reserve_generations(10_004_000, 0);
        assert!(empty_disk > kept && kept > second && second > first);
    }
}
