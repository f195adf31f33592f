//! One simulated machine: its disk, its clock and its membership across
//! the lives of the node that runs on it.
//!
//! turmoil runs a host's software again from the start on every restart
//! (`bounce`); the software here reads the machine's [`Slot`] to know how
//! this life begins: on the disk as a crash, a power loss or a rollback
//! left it, joining the ring through a member, or not at all (a spare that
//! has not joined yet, a node that left or was removed). It starts the
//! real node on the simulated network with a new incarnation, publishes the
//! node's view of the ring for the final check, and stops the node once it
//! has left gracefully.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use parking_lot::Mutex;

use crate::clock::{Clock, reserve_generations};
use crate::config::Config;
use crate::membership::Cluster;
use crate::node::{Node, Start, Storage};
use crate::ring::Members;
use crate::store::disk::{Disk, Image};
use crate::store::{Identity, MemoryStore, Store};

use super::net::SimNet;

/// Where the node of a machine stands in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// A member: every start runs the node.
    Member,
    /// Not in the ring (a spare, or left or removed): starts run nothing.
    Out,
}

/// One machine across the node's lives.
pub struct Slot {
    pub disk: Arc<Disk>,
    /// The copy of the disk a backup took, for a rollback, with the members
    /// document and the generation floor saved beside it.
    pub backup: Option<(Image, Option<Members>, u64)>,
    /// The members document as the node last saved it (its
    /// `members.json`, which survives a crash and goes back with a
    /// rollback).
    pub saved_members: Option<Members>,
    /// The generation floor kept in `identity.json` for the next life.
    pub generation_floor: u64,
    /// The machine's clock skew, in ms (the nemesis moves it).
    pub skew: Arc<AtomicI64>,
    pub membership: Membership,
    /// The next start joins the ring through the member at this address.
    pub join_via: Option<String>,
    /// Once the node joined through `--join`, every start carries the flag
    /// (it joins again where it has no members document saying it is in).
    pub join_flag: Option<String>,
    /// The running node's view of the ring, while one runs.
    pub cluster: Option<Arc<Cluster>>,
    pub lives: u64,
}

impl Slot {
    pub fn new(member: bool) -> Slot {
        Slot {
            disk: Disk::new(),
            backup: None,
            saved_members: None,
            generation_floor: 0,
            skew: Arc::default(),
            membership: if member {
                Membership::Member
            } else {
                Membership::Out
            },
            join_via: None,
            join_flag: None,
            cluster: None,
            lives: 0,
        }
    }
}

/// How often a start that cannot join is tried again, a second apart,
/// through the next member each time.
const JOIN_TRIES: usize = 10;

/// The software of machine `index` (node `id`): runs one life of the node,
/// as the slot says, until the simulation stops it. `addrs` are every
/// machine's address, for joining through another member when the one
/// named cannot admit the node.
pub async fn run(
    config: &Config,
    id: &str,
    index: usize,
    seed: u64,
    slot: &Mutex<Slot>,
    addrs: &[String],
) -> crate::error::Result<()> {
    let begun = {
        let mut slot = slot.lock();
        slot.cluster = None;
        if let Some(via) = slot.join_via.take() {
            slot.membership = Membership::Member;
            slot.join_flag = Some(via);
        }
        (slot.membership == Membership::Member).then(|| {
            slot.lives += 1;
            (slot.join_flag.clone(), slot.lives)
        })
    };
    let Some((join, life)) = begun else {
        // Not in the ring: nothing runs until a join bounces the machine.
        std::future::pending::<()>().await;
        return Ok(());
    };
    let life_seed = seed ^ ((index as u64) << 48) ^ life.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut tries = 0;
    let node = loop {
        // The join goes through the member named, then the others in turn.
        let join = join.as_ref().map(|via| {
            let at = addrs.iter().position(|a| a == via).unwrap_or(0);
            addrs[(at + tries) % addrs.len()].clone()
        });
        let start = {
            let mut slot = slot.lock();
            let store = Arc::new(MemoryStore::on_disk(Arc::clone(&slot.disk)));
            let clock = Clock::simulated(Arc::clone(&slot.skew));
            // What `Identity::load` does with identity.json: a new actor,
            // and generations above the last life's.
            let (floor, next) = reserve_generations(clock.now_ms(), slot.generation_floor);
            slot.generation_floor = next;
            let identity = Identity::in_memory(id, life_seed).with_generation_floor(floor);
            Start {
                join: join.clone(),
                listener: None,
                network: SimNet,
                storage: Some(Storage {
                    store: store as Arc<dyn Store>,
                    identity: Arc::new(identity),
                }),
                seed: Some(life_seed),
                clock: Some(clock),
                members: slot.saved_members.clone(),
            }
        };
        match Node::start_with(config, id, start).await {
            Ok(node) => break node,
            Err(e) if join.is_some() && tries + 1 < JOIN_TRIES => {
                tracing::warn!(node = id, error = %e, "could not join; trying again");
                if e.code() == "membership_conflict"
                    && let Some(via) = &join
                {
                    // Stuck leaving (its last life died mid-leave): the
                    // operator removes it so that it can join again.
                    remove(via, id).await;
                }
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    {
        let mut slot = slot.lock();
        if slot.lives == life {
            slot.cluster = Some(Arc::clone(node.cluster()));
        }
    }
    node.left().await;
    // Left gracefully: the node stops, and the machine is out of the ring
    // until it rejoins.
    {
        let mut slot = slot.lock();
        slot.membership = Membership::Out;
        slot.saved_members = Some(node.cluster().roster().members());
        slot.cluster = None;
    }
    node.shutdown().await;
    std::future::pending::<()>().await;
    Ok(())
}

/// `POST /admin/remove/{id}` to the member at `via`, as an operator would.
async fn remove(via: &str, id: &str) {
    let client = crate::client::Client::with_connector(
        &format!("http://{via}"),
        super::net::SimConnector::new(std::time::Duration::from_secs(2)),
    );
    let path = format!("/admin/remove/{id}");
    let call = client.request(http::Method::POST, &path, &[], bytes::Bytes::new());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), call).await;
}
