//! The clients of the simulation (and of the nemesis against real
//! processes): concurrent reads and writes at random quorums, each
//! recorded into the history as it completes.
//!
//! Every client has a seeded generator of its own. Half the clients carry
//! a session: every read presents the context of their last answer on the
//! key, so the sessions checker holds them to read-your-writes and
//! monotonic reads. Every client writes either with the context of its
//! last answer on the key (`saw`: the writes that answer covered) or
//! blind. Shared keys see concurrent writers; each client also has a key
//! of its own, written only after reading it, where no sibling may appear.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::api::CONTEXT_HEADER;
use crate::check::record::{Recorder, read_values};
use crate::check::{Op, WriteId, write_of};
use crate::client::{Client, key_path};
use hyper_util::client::legacy::connect::Connect;

/// How long a client waits for any answer: past the cluster's own
/// timeout, so that only a cut link leaves it without one.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

const QUORUMS: [&str; 3] = ["1", "quorum", "all"];

/// Every key the workers of `clients` clients write.
pub fn keys(shared_keys: usize, clients: u32) -> Vec<String> {
    (0..shared_keys)
        .map(|k| format!("k{k}"))
        .chain((0..clients).map(|c| format!("own-{c}")))
        .collect()
}

/// One client's part.
pub struct Worker {
    pub id: u32,
    pub seed: u64,
    pub shared_keys: usize,
    pub session: bool,
    /// w=1 acknowledgements do not count as promises (a node that alone
    /// acknowledged a write may lose its disk in this run).
    pub single_acks_promise: bool,
    pub until: Duration,
    pub recorder: Arc<Recorder>,
}

/// What a client knows of a key. Writes carry the context of the last
/// read (as the siblings checker's premise says: a write that carries the
/// previous read's context); session reads carry the newest context the
/// client holds, a write's included (read-your-writes).
#[derive(Default, Clone)]
struct Known {
    /// The last read's context, and the writes its values name.
    read: Option<String>,
    saw: Vec<WriteId>,
    /// The newest context: the last read's or the last write's.
    session: Option<String>,
}

impl Worker {
    /// Runs until `until` has passed, through `clients` (one per node).
    pub async fn run<C>(self, clients: Vec<Client<C>>)
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let own = format!("own-{}", self.id);
        let mut known: HashMap<String, Known> = HashMap::new();
        let started = tokio::time::Instant::now();
        while started.elapsed() < self.until {
            // Every turn takes simulated time, even one whose request fails
            // at once.
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
            let client = &clients[rng.random_range(0..clients.len())];
            let (key, own_key) = if rng.random_bool(0.25) {
                (own.clone(), true)
            } else {
                (format!("k{}", rng.random_range(0..self.shared_keys)), false)
            };
            // Own keys and session clients write only right after a read,
            // with its context; other clients may write with an older read's
            // context, or blind.
            let state = known.entry(key.clone()).or_default();
            let read_only = !own_key && rng.random_bool(0.45);
            if read_only || own_key || self.session {
                let r = QUORUMS[rng.random_range(0..3)];
                let read = self.read(client, &key, r, state).await;
                let failed = read.is_none();
                if let Some(next) = read {
                    *state = next;
                }
                if read_only || failed && (own_key || self.session) {
                    continue;
                }
            }
            // A blind write answers with a context of its own dot alone, which
            // would end a session's memory of what it read.
            let blind = !own_key && !self.session && rng.random_bool(0.25);
            let w = QUORUMS[rng.random_range(0..3)];
            let state = known.entry(key.clone()).or_default();
            if let Some(next) = self.write(client, &key, w, blind, state).await {
                *state = next;
            }
        }
    }

    async fn read<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C>,
        key: &str,
        r: &str,
        state: &Known,
    ) -> Option<Known> {
        let session = self.session && state.session.is_some();
        let headers: Vec<(&str, &str)> = match (&state.session, session) {
            (Some(c), true) => vec![(CONTEXT_HEADER, c.as_str())],
            _ => Vec::new(),
        };
        let path = format!("{}?r={r}", key_path(key));
        let call = client.request(Method::GET, &path, &headers, Bytes::new());
        let reply = tokio::time::timeout(CLIENT_TIMEOUT, call)
            .await
            .ok()?
            .ok()?;
        let values = read_values(reply.status.as_u16(), &reply.body)?;
        let context = reply.context().map(str::to_string);
        self.recorder.record(Op::Read {
            client: self.id,
            key: key.to_string(),
            values: values.clone(),
            session,
        });
        // A session read's context covers the one it presented; a 404 of a
        // key never written has none, and the session keeps what it had.
        Some(Known {
            session: context.clone().or_else(|| state.session.clone()),
            read: context,
            saw: values.iter().filter_map(|v| write_of(v)).collect(),
        })
    }

    async fn write<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C>,
        key: &str,
        w: &str,
        blind: bool,
        state: &Known,
    ) -> Option<Known> {
        let (id, body) = self.recorder.next_write();
        let mut headers = vec![("content-type", "application/json")];
        let saw = match (&state.read, blind) {
            (Some(c), false) => {
                headers.push((CONTEXT_HEADER, c.as_str()));
                state.saw.clone()
            }
            _ => Vec::new(),
        };
        let path = format!("{}?w={w}", key_path(key));
        let call = client.request(Method::PUT, &path, &headers, Bytes::from(body));
        let reply = tokio::time::timeout(CLIENT_TIMEOUT, call)
            .await
            .ok()
            .and_then(Result::ok);
        let ok = reply.as_ref().is_some_and(|r| r.status.is_success());

        let promised = ok && (w != "1" || self.single_acks_promise);
        self.recorder.record(Op::Write {
            id,
            client: self.id,
            key: key.to_string(),
            saw,
            acked: promised,
        });
        let reply = reply.filter(|_| ok)?;
        Some(Known {
            session: reply.context().map(str::to_string),
            ..state.clone()
        })
    }
}
