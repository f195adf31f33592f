//! The coordinator against in-process replicas behind a scripted
//! transport: which replicas a read asks and when it asks the others
//! (`reads.rs`); how a write is minted once, replicated, hinted and
//! retried (`writes.rs`). Time is tokio's paused clock, so "slow" is
//! exact, not a race.

mod reads;
mod writes;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Coordinator, Write};
use crate::config::{Config, Engine};
use crate::coordinator::quorum::Quorum;
use crate::error::Error;
use crate::membership::{Cluster, Roster};
use crate::peer::{Addresses, Call, Dest, Frame, Rpc, Services, Transport};
use crate::replica::Replica;
use crate::store::MemoryStore;
use crate::store::disk::Disk;
use crate::version::{Content, Context, SiblingSet};

/// How a scripted node answers.
#[derive(Clone, Copy)]
enum Answer {
    Now,
    After(Duration),
    Fail,
    /// Fails, but only after this long (an answer that comes too late).
    FailAfter(Duration),
}

/// Delivers each call to the addressed replica as its script says, and
/// counts the reads each node was asked.
#[derive(Default)]
struct Scripted {
    /// Each node's handlers: its replica's.
    replicas: OnceLock<HashMap<String, Arc<Services>>>,
    answers: Mutex<HashMap<String, Answer>>,
    reads: Mutex<HashMap<String, usize>>,
}

impl Scripted {
    fn set(&self, node: &str, answer: Answer) {
        self.answers.lock().insert(node.to_string(), answer);
    }

    fn reads(&self, node: &str) -> usize {
        self.reads.lock().get(node).copied().unwrap_or(0)
    }

    fn total_reads(&self) -> usize {
        self.reads.lock().values().sum()
    }
}

impl Transport for Scripted {
    fn protocol_with(&self, _: &str) -> u16 {
        crate::peer::versions::PROTOCOL
    }

    fn local(&self, _: &str) -> Option<Arc<Services>> {
        // Every call, to n1 too, goes through the script.
        None
    }

    fn send(&self, to: Dest<'_>, frame: Frame) -> Call<Bytes> {
        let to = to.name().to_string();
        if frame.service == crate::replica::rpc::Read::SERVICE.name {
            *self.reads.lock().entry(to.clone()).or_default() += 1;
        }
        let answer = self.answers.lock().get(&to).copied().unwrap_or(Answer::Now);
        let services = self.replicas.get().and_then(|r| r.get(&to)).cloned();
        Box::pin(async move {
            let unavailable = |reason: &str| Error::Unavailable {
                node: to.clone(),
                reason: reason.into(),
            };
            let services = services.ok_or_else(|| unavailable("not in the test"))?;
            match answer {
                Answer::Now => {}
                Answer::After(delay) => tokio::time::sleep(delay).await,
                Answer::Fail => return Err(unavailable("scripted to fail")),
                Answer::FailAfter(delay) => {
                    tokio::time::sleep(delay).await;
                    return Err(unavailable("scripted to fail late"));
                }
            }
            crate::peer::dispatch(&services, frame.service, frame.version, false, frame.body)?.await
        })
    }
}

struct Setup {
    transport: Arc<Scripted>,
    /// The coordinator on n1; with three nodes every key's preference list
    /// is n1, n2, n3.
    coordinator: Coordinator,
    replicas: HashMap<String, Arc<Replica>>,
    /// Each node's simulated disk (faults are set on it).
    disks: HashMap<String, Arc<Disk>>,
    /// Each node's store, to put there what no replica would write.
    stores: HashMap<String, Arc<MemoryStore>>,
    cluster: Arc<Cluster>,
}

fn setup(speculative_read: Duration) -> Setup {
    setup_with(3, speculative_read)
}

/// `nodes` nodes at N = 3, each replica on a simulated disk; must run in
/// a runtime (each disk has a sync task).
fn setup_with(nodes: usize, speculative_read: Duration) -> Setup {
    let mut config = Config::dev(nodes, 1, std::path::Path::new("unused"));
    config.storage.engine = Engine::Memory;
    let members = Roster::load(&config, None).expect("members");
    let transport = Arc::new(Scripted::default());
    let mut replicas = HashMap::new();
    let mut disks = HashMap::new();
    let mut stores = HashMap::new();
    for node in &config.nodes {
        let identity = crate::store::Identity::ephemeral(&node.id);
        let disk = Disk::new();
        let store = Arc::new(MemoryStore::on_disk(Arc::clone(&disk)));
        stores.insert(node.id.clone(), Arc::clone(&store));
        let replica = Replica::new(
            store,
            Arc::new(identity),
            &config.limits,
            false,
            crate::clock::Clock::system(),
        );
        replicas.insert(node.id.clone(), Arc::new(replica));
        disks.insert(node.id.clone(), disk);
    }
    let services = replicas
        .iter()
        .map(|(id, replica)| {
            let services = Services::new();
            replica.serve(&services);
            (id.clone(), services)
        })
        .collect();
    assert!(transport.replicas.set(services).is_ok());
    let cluster = Cluster::new(
        "n1",
        &config,
        members,
        transport.clone(),
        Addresses::default(),
        None,
        Some(7),
        crate::clock::Clock::system(),
    );
    let coordinator = Coordinator::new(
        Arc::clone(&cluster),
        Arc::clone(&replicas["n1"]),
        speculative_read,
    );
    Setup {
        transport,
        coordinator,
        replicas,
        disks,
        stores,
        cluster,
    }
}

fn quorum(r: usize) -> Quorum {
    Quorum {
        n: 3,
        r,
        pr: 0,
        w: 3,
        pw: 0,
        dw: 0,
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

async fn put(setup: &Setup, key: &str, value: &'static [u8]) -> SiblingSet {
    let write = Write {
        context: Context::default(),
        content: Content::Value(Bytes::from_static(value)),
        request_id: None,
        outbox: None,
    };
    let written = setup
        .coordinator
        .write(key, write, quorum(2), deadline(), true)
        .await
        .expect("write");
    written.set
}

async fn read(setup: &Setup, key: &str, r: usize, session: Option<Context>) -> SiblingSet {
    setup
        .coordinator
        .read(key, quorum(r), deadline(), session, true, None)
        .await
        .expect("read")
        .expect("the key is there")
}
