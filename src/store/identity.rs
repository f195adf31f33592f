//! The node's actor and its dot counter.
//!
//! # Why every life is a new actor
//!
//! A dot names one write forever. If a node ever minted a dot it had
//! minted before, the second write would look already seen wherever the
//! first one is (dropped there, acknowledged or not), or its context would
//! cover and delete a sibling it never saw. That is Riak's kv679. A counter
//! kept on disk cannot prevent it: a disk restored from a backup or a VM
//! snapshot, a data directory copied back, a file system that loses its
//! unsynced tail, all bring back a counter below dots other replicas
//! already hold, and nothing on the node can tell such a disk from a
//! current one (a copy of a cleanly stopped node looks exactly like it).
//!
//! So the counter is never trusted across a restart: every start of the
//! node is a new *incarnation*, a random 64-bit number, and the actor that
//! mints is (node id, incarnation) with a counter that starts at zero and
//! lives only in memory. Whatever the disk holds, no dot of this life can
//! equal a dot of another (two lives would have to draw the same 64-bit
//! number). Nothing on the write path touches the disk for it.
//!
//! The price is one version-vector entry per life of a node that
//! coordinated a write to a key (docs/consistency.md works out the sizes).
//!
//! # Why an actor is also retired within a life
//!
//! A set's version vector says "seen every dot of actor `a` up to `n`" with
//! one number, though `a`'s counter is shared by all its keys: that holds
//! because `a` mints on a key only on top of its own local copy of the key,
//! which holds every dot `a` minted there (the store commits the minted set
//! before it leaves the node). If the local copy ever lacks one of them, a
//! new dot minted on top of it would claim, and so delete wherever it
//! arrives, a write it never saw. So the node draws a new incarnation for
//! every later mint ([`Identity::retire`]) whenever it could have lost one
//! of its own dots without losing its life:
//!
//! - it drops a copy that holds dots of its actor (ownership handoff);
//! - a merge brings a dot of its actor that its local copy of the key lacks
//!   (amnesia: Riak's 2017 lesson, detected on writes it does not
//!   coordinate too).
//!
//! Riak's per-key epochs exist because Riak's counters are per key and
//! taken from the local copy; a counter per life with these retirements
//! needs no round trip to the replicas before minting.
//!
//! `<data_dir>/identity.json` keeps the node id the directory belongs to
//! (a node refuses another node's directory) and its recent lives, for
//! operators: `{"node": "n1", "incarnation": <this life>, "started_ms": …,
//! "lives": [<earlier incarnations, newest first>]}`. A record written by an
//! older chorus (`{"node", "incarnation", "lease"}`) is read the same way.

use std::path::Path;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::version::{Actor, Dot};

const FILE: &str = "identity.json";
/// Earlier lives kept in the record (it is for reading, not for safety).
const LIVES_KEPT: usize = 32;

#[derive(Serialize, Deserialize)]
struct Record {
    node: String,
    incarnation: u64,
    #[serde(default)]
    started_ms: u64,
    #[serde(default)]
    lives: Vec<u64>,
    /// The floor of the next life's generations (`clock::reserve_generations`).
    #[serde(default)]
    generation_floor: u64,
}

/// Mints this node's dots. One per node, shared by every key.
pub struct Identity {
    state: Mutex<Minter>,
    /// This life's generations are above this (0: no disk keeps one).
    generation_floor: u64,
}

/// The actor minting now and its counter.
struct Minter {
    actor: Actor,
    counter: u64,
    /// Draws the next incarnation when this one is retired (seeded, so the
    /// simulation replays).
    rng: SmallRng,
}

impl Identity {
    /// The identity of a new life of the node whose data directory is
    /// `dir`: a fresh incarnation, recorded in the directory (which must be
    /// this node's, or new).
    pub fn load(dir: &Path, node: &str, now_ms: u64) -> Result<Identity> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join(FILE);
        let mut kept_floor = 0;
        let mut lives = match std::fs::read(&file) {
            Ok(bytes) => {
                let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Storage(format!(
                        "{} is corrupt ({e}); restore it or wipe the data directory",
                        file.display()
                    ))
                })?;
                if record.node != node {
                    return Err(Error::config(
                        "--node",
                        format!(
                            "{} belongs to node `{}`, not `{node}`; each node needs its own data_dir",
                            dir.display(),
                            record.node
                        ),
                    ));
                }
                kept_floor = record.generation_floor;
                let mut lives = record.lives;
                lives.insert(0, record.incarnation);
                lives.truncate(LIVES_KEPT);
                lives
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let incarnation = fresh_incarnation(&mut rng, &lives);
        let (generation_floor, next_floor) = crate::clock::reserve_generations(now_ms, kept_floor);
        let record = Record {
            node: node.to_string(),
            incarnation,
            started_ms: now_ms,
            lives: std::mem::take(&mut lives),
            generation_floor: next_floor,
        };
        super::write_json_synced(&file, &record)?;
        tracing::info!(
            node,
            incarnation = format_args!("{incarnation:x}"),
            earlier_lives = record.lives.len(),
            "a new incarnation for this life"
        );
        Ok(Identity {
            generation_floor,
            ..Identity::in_memory(node, incarnation)
        })
    }

    /// An identity that lives only in memory (the in-memory engine): a new
    /// incarnation every time.
    pub fn ephemeral(node: &str) -> Identity {
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        Identity::in_memory(node, fresh_incarnation(&mut rng, &[]))
    }

    /// An identity in memory with a chosen incarnation (the simulation
    /// derives it from its seed; later incarnations follow from it).
    pub fn in_memory(node: &str, incarnation: u64) -> Identity {
        Identity {
            state: Mutex::new(Minter {
                actor: Actor::new(node, incarnation),
                counter: 0,
                rng: SmallRng::seed_from_u64(incarnation),
            }),
            generation_floor: 0,
        }
    }

    /// This life's generations must be above this: the floor the node
    /// reserved on its disk, so a life outranks the last one even when the
    /// clock went back (0 for a node without a disk).
    pub fn generation_floor(&self) -> u64 {
        self.generation_floor
    }

    /// The same identity with this life's generation floor (the
    /// simulation keeps the floor on its simulated disk).
    pub fn with_generation_floor(mut self, floor: u64) -> Identity {
        self.generation_floor = floor;
        self
    }

    /// The actor minting now.
    pub fn actor(&self) -> Actor {
        self.state.lock().actor.clone()
    }

    /// A dot never handed out before, with a counter of at least
    /// `floor(actor)` for the actor minting now.
    pub fn mint(&self, floor: impl FnOnce(&Actor) -> u64) -> Dot {
        let mut minter = self.state.lock();
        let floor = floor(&minter.actor);
        minter.counter = minter.counter.saturating_add(1).max(floor);
        Dot::new(minter.actor.clone(), minter.counter)
    }

    /// Retires the actor minting now: every later dot is minted by a new
    /// incarnation, so no later write can claim a dot the old one minted
    /// and this node may have lost. Logged and counted with `reason`.
    pub fn retire(&self, reason: &'static str, detail: &str) {
        let mut minter = self.state.lock();
        let earlier = minter.actor.incarnation;
        let incarnation = fresh_incarnation(&mut minter.rng, &[earlier]);
        let next = Actor::new(minter.actor.node.clone(), incarnation);
        let retired = std::mem::replace(&mut minter.actor, next);
        minter.counter = 0;
        drop(minter);
        metrics::counter!(crate::metrics::ACTOR_RETIREMENTS_TOTAL, "reason" => reason).increment(1);
        tracing::warn!(
            %retired,
            incarnation = format_args!("{incarnation:x}"),
            reason,
            detail,
            "retired this node's actor; later writes are minted by a new incarnation"
        );
    }

    /// Checks a set about to be merged into the local copy of a key (`local`
    /// its version vector's entry for the actor minting now, `incoming` the
    /// merged set's): a dot of the current actor that the local copy lacks
    /// means the node lost one of its own writes to this key, and the actor
    /// is retired before it mints on top of the gap. True if it was.
    pub fn check_amnesia(
        &self,
        key: &str,
        local: &crate::version::VersionVector,
        incoming: &crate::version::VersionVector,
    ) -> bool {
        let actor = self.actor();
        let (had, arrived) = (local.get(&actor), incoming.get(&actor));
        if arrived > had {
            let detail = format!(
                "`{}` arrived holding {actor} up to {arrived}; the local copy only up to {had}",
                key.chars().take(128).collect::<String>()
            );
            self.retire("amnesia", &detail);
            true
        } else {
            false
        }
    }
}

/// A random incarnation that is none of `earlier` (only the 64-bit draw
/// decides; the check makes the one-in-2^64 case impossible for the lives
/// this directory remembers).
fn fresh_incarnation(rng: &mut SmallRng, earlier: &[u64]) -> u64 {
    loop {
        let candidate: u64 = rng.random();
        if candidate != 0 && !earlier.contains(&candidate) {
            return candidate;
        }
    }
}
