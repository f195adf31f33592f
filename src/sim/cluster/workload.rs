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
//! Some writes after a read are deletes with the read's context, and the
//! keys are written again afterwards: the deletes checker holds every run
//! to "nothing deleted comes back". Some writes carry a TTL short enough to
//! run out within the run, and some a condition (`If-Match` with the last
//! read's context, `If-None-Match: *`): the expiry and conditions checkers
//! hold them to vanishing, and to never being applied when refused. Now
//! and then a client scans (`GET /kv`) a prefix page by page, at a random
//! `r` and page size; every key a page returns is recorded as a read of
//! it, so a scan is held to what a read is held to. Some turns update a
//! CRDT key instead ([`crdt_keys`]): increments of a counter, adds of
//! members unique to the add, and removes of members a read just returned,
//! with that read's context; the crdts checker holds them to their laws.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::api::CONTEXT_HEADER;
use crate::check::crdts::{Held, Update};
use crate::check::record::{Recorder, crdt_held, now_ms, read_values, scan_page};
use crate::check::{Op, Ttl, WriteId, write_of};
use crate::client::{Client, crdt_path, key_path};
use hyper_util::client::legacy::connect::Connect;

/// How long a client waits for any answer: past the cluster's own
/// timeout, so that only a cut link leaves it without one.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

const QUORUMS: [&str; 3] = ["1", "quorum", "all"];

/// A write's quorum: mostly `quorum`, as applications write, and `1` and
/// `all` for the edges (a w=1 acknowledgement is no promise in a run that
/// loses a node's data, until the last such fault).
fn write_quorum(rng: &mut SmallRng) -> &'static str {
    match rng.random_range(0..10) {
        0..=1 => "1",
        2..=7 => "quorum",
        _ => "all",
    }
}

/// Every key the workers of `clients` clients write.
pub fn keys(shared_keys: usize, clients: u32) -> Vec<String> {
    (0..shared_keys)
        .map(|k| format!("k{k}"))
        .chain((0..clients).map(|c| format!("own-{c}")))
        .chain([REFUSAL_PROBE_KEY.to_string()])
        .collect()
}

/// The CRDT keys of the workload: two counters, two sets and the maps.
pub fn crdt_keys() -> Vec<String> {
    ["c0", "c1", "s0", "s1"]
        .into_iter()
        .chain(MAP_KEYS)
        .map(String::from)
        .collect()
}

/// The workload's maps.
pub const MAP_KEYS: [&str; 2] = ["m0", "m1"];

/// The fields of the workload's maps: `n` a counter, `s` a set. The
/// checker holds each to its type's laws as if it were a key of its own,
/// named `m0.n`, `m0.s`, ...
pub const MAP_FIELDS: [&str; 2] = ["n", "s"];

/// The key of the create-only writes worker 0 makes after its run
/// ([`Worker::refusal_probe`]); nobody else writes it.
pub const REFUSAL_PROBE_KEY: &str = "create-only";

/// Scans are recorded as reads of a reader of their own: a scan neither
/// presents nor updates its client's session, so what it returns is not
/// what the client's later session reads must be as new as.
pub const SCAN_READER: u32 = 1 << 16;

/// One client's part.
#[derive(Clone)]
pub struct Worker {
    pub id: u32,
    pub seed: u64,
    pub shared_keys: usize,
    pub session: bool,
    /// w=1 acknowledgements count as promises only for writes sent after
    /// this much time since the start (the last fault that loses a node's
    /// data: a write one node alone acknowledged before it may be lost
    /// with it).
    pub single_acks_after: Duration,
    pub until: Duration,
    pub recorder: Arc<Recorder>,
}

/// What a write carries beyond its value and context.
#[derive(Clone, Copy, Debug)]
enum Extra {
    None,
    /// `?ttl_ms=`.
    Ttl(u64),
    /// `If-Match:` the last read's context.
    IfMatch,
    /// `If-None-Match: *`.
    IfNoneMatch,
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
        // As a client's load balancer does, a node that did not answer, or
        // answered 5xx, is left alone for a second (a node that is down, not
        // a member, or cut off from its replicas).
        let mut shunned = vec![started; clients.len()];
        while started.elapsed() < self.until {
            // Every turn takes simulated time, even one whose request fails
            // at once.
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
            let now = tokio::time::Instant::now();
            let answering: Vec<usize> = (0..clients.len()).filter(|&i| shunned[i] <= now).collect();
            let at = match answering.len() {
                0 => rng.random_range(0..clients.len()),
                n => answering[rng.random_range(0..n)],
            };
            let client = &clients[at];
            let mut shun = || shunned[at] = tokio::time::Instant::now() + Duration::from_secs(1);
            if rng.random_bool(0.04) {
                if !self.scan(client, &mut rng).await {
                    shun();
                }
                continue;
            }
            if rng.random_bool(0.12) {
                if !self.crdt(client, &mut rng).await {
                    shun();
                }
                continue;
            }
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
                let (read, answered) = self.read(client, &key, r, state).await;
                if !answered {
                    shun();
                }
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
            let w = write_quorum(&mut rng);
            let state = known.entry(key.clone()).or_default();
            // A delete removes what the last read returned; the key is
            // written again by later turns.
            let delete = !blind && !state.saw.is_empty() && rng.random_bool(0.15);
            let extra = self.extra(&mut rng, started.elapsed(), blind || delete, state);
            let (next, answered) = self
                .write(client, &key, w, blind, delete, extra, state)
                .await;
            if !answered {
                shun();
            }
            if let Some(next) = next {
                *state = next;
            }
        }
        if self.id == 0 {
            self.refusal_probe(&clients).await;
        }
    }

    /// After the run, create-only writes (`If-None-Match: *`) of a key
    /// nobody else writes, until one is refused with 412: the first may
    /// create it, the next finds it. So every run has a refused write for
    /// the conditions checker to hold to never being read, whatever the
    /// workload drew; tried through each node in turn, every 100 ms, at
    /// most 40 times (the faults are healing).
    pub async fn refusal_probe<C>(&self, clients: &[Client<C>])
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        for attempt in 0..40 {
            let client = &clients[attempt % clients.len()];
            let (applied, answered) = self
                .write(
                    client,
                    REFUSAL_PROBE_KEY,
                    "quorum",
                    true,
                    false,
                    Extra::IfNoneMatch,
                    &Known::default(),
                )
                .await;
            if answered && applied.is_none() {
                return;
            }
            if !answered {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Blind writes through one node the moment it answers again after a
    /// restart, before anti-entropy or a read can repair it: the window in
    /// which a node that forgot what it minted (a lost disk, a rollback)
    /// would mint a dot again (Riak's kv679). One write to each of `keys`,
    /// each tried every 50 ms until the node answers, at most 20 times.
    pub async fn probe<C>(&self, client: &Client<C>, keys: &[String])
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        for key in keys {
            for _ in 0..20 {
                let (_, answered) = self
                    .write(
                        client,
                        key,
                        "quorum",
                        true,
                        false,
                        Extra::None,
                        &Known::default(),
                    )
                    .await;
                if answered {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn read<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C>,
        key: &str,
        r: &str,
        state: &Known,
    ) -> (Option<Known>, bool) {
        let session = self.session && state.session.is_some();
        let headers: Vec<(&str, &str)> = match (&state.session, session) {
            (Some(c), true) => vec![(CONTEXT_HEADER, c.as_str())],
            _ => Vec::new(),
        };
        let path = format!("{}?r={r}", key_path(key));
        let call = client.request(Method::GET, &path, &headers, Bytes::new());
        let Ok(Ok(reply)) = tokio::time::timeout(CLIENT_TIMEOUT, call).await else {
            return (None, false);
        };
        let Some(values) = read_values(reply.status.as_u16(), &reply.body) else {
            return (None, !reply.status.is_server_error());
        };
        let context = reply.context().map(str::to_string);
        self.recorder.record(Op::Read {
            client: self.id,
            key: key.to_string(),
            values: values.clone(),
            session,
            at_ms: now_ms(),
        });
        // A session read's context covers the one it presented; a 404 of a
        // key never written has none, and the session keeps what it had.
        let known = Known {
            session: context.clone().or_else(|| state.session.clone()),
            read: context,
            saw: values.iter().filter_map(|v| write_of(v)).collect(),
        };
        (Some(known), true)
    }

    /// A scan of one prefix (every key, the shared ones, or the clients'
    /// own), page by page at a random `r` and page size, until its `next`
    /// is null, a page fails, or 20 pages. Whether the node answered.
    async fn scan<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C>,
        rng: &mut SmallRng,
    ) -> bool {
        let prefix = ["", "k", "own-"][rng.random_range(0..3)];
        let r = QUORUMS[rng.random_range(0..3)];
        let limit = rng.random_range(1..7);
        let mut cursor: Option<String> = None;
        for _page in 0..20 {
            let mut path = format!("/kv?prefix={prefix}&r={r}&limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let call = client.request(Method::GET, &path, &[], Bytes::new());
            let Ok(Ok(reply)) = tokio::time::timeout(CLIENT_TIMEOUT, call).await else {
                return false;
            };
            let Some((items, next)) = scan_page(reply.status.as_u16(), &reply.body) else {
                return !reply.status.is_server_error();
            };
            let at_ms = now_ms();
            for (key, values) in items {
                self.recorder.record(Op::Read {
                    client: SCAN_READER + self.id,
                    key,
                    values,
                    session: false,
                    at_ms,
                });
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        true
    }

    /// One update of a CRDT key: an increment of 1 to 5, an add of a
    /// member no other add names, or a remove of up to two members a read
    /// at `quorum` just returned, with that read's context; of a counter
    /// or a set, or of a map's counter or set field. Whether the node
    /// answered.
    async fn crdt<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C>,
        rng: &mut SmallRng,
    ) -> bool {
        let k = rng.random_range(0..2);
        let w = write_quorum(rng);
        // In a map, the update goes to a field; the checker sees the field
        // as a key of its own.
        let map = rng.random_bool(0.3).then(|| format!("m{k}"));
        let target = |field: &str, plain: String| match &map {
            Some(map) => (map.clone(), format!("{map}.{field}")),
            None => (plain.clone(), plain),
        };
        let (key, body, context, update) = if rng.random_bool(0.5) {
            let (key, named) = target("n", format!("c{k}"));
            let n = rng.random_range(1..=5u64);
            let body = serde_json::json!({"type": "counter", "increment": n});
            let update = Update::Increment {
                key: named,
                n,
                acked: false,
            };
            (key, body, None, update)
        } else if rng.random_bool(0.7) {
            let (key, named) = target("s", format!("s{k}"));
            let (id, _) = self.recorder.next_write();
            let member = format!("m{id}");
            let body = serde_json::json!({"type": "set", "add": [member]});
            let update = Update::Add {
                key: named,
                member,
                acked: false,
            };
            (key, body, None, update)
        } else {
            let (key, named) = target("s", format!("s{k}"));
            let path = format!("{}?r=quorum", crdt_path(&key));
            let call = client.request(Method::GET, &path, &[], Bytes::new());
            let Ok(Ok(reply)) = tokio::time::timeout(CLIENT_TIMEOUT, call).await else {
                return false;
            };
            let held = crdt_held(reply.status.as_u16(), &reply.body);
            let held = match (held, &map) {
                (Some(Held::Map(mut fields)), Some(_)) => fields.remove("s"),
                (held, _) => held,
            };
            let (Some(Held::Set(members)), Some(context)) =
                (held, reply.context().map(str::to_string))
            else {
                return !reply.status.is_server_error();
            };
            let members: Vec<String> = members
                .into_iter()
                .filter(|_| rng.random_bool(0.3))
                .take(2)
                .collect();
            if members.is_empty() {
                return true;
            }
            let body = serde_json::json!({"type": "set", "remove": members});
            let update = Update::Remove {
                key: named,
                members,
                acked: false,
            };
            (key, body, Some(context), update)
        };
        let body = match &map {
            Some(_) => {
                let field = if let Update::Increment { .. } = update {
                    "n"
                } else {
                    "s"
                };
                serde_json::json!({"type": "map", "update": {field: body}})
            }
            None => body,
        };
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(context.as_deref().map(|c| (CONTEXT_HEADER, c)));
        let path = format!("{}?w={w}", crdt_path(&key));
        let sent = turmoil::sim_elapsed().unwrap_or(Duration::MAX);
        let call = client.request(Method::POST, &path, &headers, Bytes::from(body.to_string()));
        let reply = tokio::time::timeout(CLIENT_TIMEOUT, call)
            .await
            .ok()
            .and_then(Result::ok);
        let ok = reply.as_ref().is_some_and(|r| r.status.is_success());
        // As for writes: a w=1 acknowledgement is a promise only after the
        // last fault that loses a node's data.
        let promised = ok && (w != "1" || sent >= self.single_acks_after);
        let mut update = update;
        let (Update::Increment { acked, .. }
        | Update::Add { acked, .. }
        | Update::Remove { acked, .. }) = &mut update;
        *acked = promised;
        self.recorder.record_update(update);
        reply.is_some_and(|r| !r.status.is_server_error())
    }

    /// What a write adds, if anything: a TTL short enough to run out
    /// before the run ends, or a condition on what the client read (or,
    /// now and then, `If-None-Match: *` on a key it saw written: most of
    /// those are refused, which `conditions` then checks).
    fn extra(&self, rng: &mut SmallRng, elapsed: Duration, plain: bool, state: &Known) -> Extra {
        if plain {
            return Extra::None;
        }
        match rng.random_range(0..20) {
            0..=2 => {
                let ttl = Duration::from_millis(rng.random_range(200..3_000));
                match elapsed + ttl + Duration::from_secs(2) < self.until {
                    true => Extra::Ttl(ttl.as_millis() as u64),
                    false => Extra::None,
                }
            }
            3 if state.read.is_some() => Extra::IfMatch,
            4 if state.saw.is_empty() => Extra::IfNoneMatch,
            5 if rng.random_bool(0.3) => Extra::IfNoneMatch,
            _ => Extra::None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C>,
        key: &str,
        w: &str,
        blind: bool,
        delete: bool,
        extra: Extra,
        state: &Known,
    ) -> (Option<Known>, bool) {
        let (id, body) = self.recorder.next_write();
        // When the write was sent, in simulated time since the run began: a
        // write sent after the last fault that loses a node's data cannot
        // be lost with it, even acknowledged by one node (its answer may
        // arrive after the fault, the write itself cannot be applied
        // before it). Outside a simulation no fault loses data.
        let sent = turmoil::sim_elapsed().unwrap_or(Duration::MAX);
        let (method, body) = if delete {
            (Method::DELETE, String::new())
        } else {
            (Method::PUT, body)
        };
        let mut headers = vec![("content-type", "application/json")];
        let saw = match (&state.read, blind) {
            (Some(c), false) => {
                headers.push((CONTEXT_HEADER, c.as_str()));
                state.saw.clone()
            }
            _ => Vec::new(),
        };
        let mut path = format!("{}?w={w}", key_path(key));
        let mut ttl = None;
        match (extra, &state.read) {
            (Extra::Ttl(ms), _) => {
                path.push_str(&format!("&ttl_ms={ms}"));
                ttl = Some(Ttl {
                    sent_ms: now_ms(),
                    ttl_ms: ms,
                });
            }
            (Extra::IfMatch, Some(context)) if !blind => headers.push(("if-match", context)),
            (Extra::IfNoneMatch, _) => headers.push(("if-none-match", "*")),
            _ => {}
        }
        let call = client.request(method, &path, &headers, Bytes::from(body));
        let reply = tokio::time::timeout(CLIENT_TIMEOUT, call)
            .await
            .ok()
            .and_then(Result::ok);
        let ok = reply.as_ref().is_some_and(|r| r.status.is_success());
        let refused = reply
            .as_ref()
            .is_some_and(|r| r.status == http::StatusCode::PRECONDITION_FAILED);

        let promised = ok && (w != "1" || sent >= self.single_acks_after);
        self.recorder.record(Op::Write {
            id,
            client: self.id,
            key: key.to_string(),
            saw,
            acked: promised,
            delete,
            ttl,
            refused,
        });
        let answered = reply.as_ref().is_some_and(|r| !r.status.is_server_error());
        let known = reply.filter(|_| ok).map(|reply| Known {
            session: reply.context().map(str::to_string),
            ..state.clone()
        });
        (known, answered)
    }
}
