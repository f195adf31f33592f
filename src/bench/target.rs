//! What `chorus bench` loads: chorus (one node or round-robin over several),
//! the in-process null server, etcd, or Redis, behind one interface of
//! read, write and read-modify-write, so every target runs the same
//! workload from the same client.
//!
//! Chorus is driven as a well-behaved client drives it: a write carries the
//! context last seen for its key (from this run's reads or writes, shared
//! by all workers), so an update replaces what it read instead of piling up
//! siblings, and a read-modify-write carries the context of its own read.
//! A read that finds siblings (300) is a successful read. etcd and Redis
//! take blind overwrites, as they have no siblings to resolve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use parking_lot::Mutex;
use redis::IntoConnectionInfo;
use serde::Serialize;

use super::etcd;
use super::workload::Operation;
use crate::client::{Client, Reply};
use crate::error::{Error, Result};

/// No single operation waits longer than this: a stuck server makes
/// errors, never a run that does not end.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The chorus node at `--url` (several, comma-separated: round-robin,
    /// one node per worker).
    Chorus,
    /// The in-process null server: the HTTP ceiling of this machine.
    Null,
    /// An etcd member at `--url`, through its v3 JSON gateway.
    Etcd,
    /// A Redis server at `--url` (`redis://127.0.0.1:6379`), over RESP.
    Redis,
}

impl Target {
    /// The name on the command line and in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Target::Chorus => "chorus",
            Target::Null => "null",
            Target::Etcd => "etcd",
            Target::Redis => "redis",
        }
    }
}

/// What one operation came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A read of a record that is not there (yet): a valid answer, counted.
    NotFound,
    Failed,
}

/// The record key of index `i`.
pub fn key(i: u64) -> String {
    format!("bench-{i}")
}

/// The context last seen for each record, sharded so workers hardly
/// contend; only chorus uses it.
struct Contexts {
    shards: Box<[Mutex<HashMap<u64, String>>]>,
}

impl Contexts {
    fn new() -> Contexts {
        Contexts {
            shards: (0..256).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, i: u64) -> &Mutex<HashMap<u64, String>> {
        &self.shards[(i % self.shards.len() as u64) as usize]
    }

    fn get(&self, i: u64) -> Option<String> {
        self.shard(i).lock().get(&i).cloned()
    }

    fn remember(&self, i: u64, reply: &Reply) {
        if let Some(ctx) = reply.context() {
            self.remember_text(i, ctx);
        }
    }

    fn remember_text(&self, i: u64, context: &str) {
        self.shard(i).lock().insert(i, context.to_string());
    }
}

/// How the bench reaches the target.
#[derive(Clone)]
enum Reach {
    /// chorus, null or etcd: one pooled client per URL.
    Http(Vec<Client>),
    Redis(redis::Client),
}

/// A run's view of its target, cloned into every worker.
#[derive(Clone)]
pub struct Backend {
    target: Target,
    reach: Reach,
    contexts: Arc<Contexts>,
}

impl Backend {
    /// `urls` are the nodes (or the one etcd member or Redis server).
    pub fn new(target: Target, urls: &[String]) -> Result<Backend> {
        let reach = if target == Target::Redis {
            let url = urls.first().ok_or_else(|| bad_url("no Redis URL"))?;
            let info = url.as_str().into_connection_info().map_err(bad_url)?;
            // TCP_NODELAY, as on every other client socket of the bench.
            let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
            Reach::Redis(redis::Client::open(info.set_tcp_settings(tcp)).map_err(bad_url)?)
        } else if urls.is_empty() {
            return Err(bad_url("no URL"));
        } else {
            Reach::Http(urls.iter().map(|u| Client::cli(u)).collect::<Result<_>>()?)
        };
        Ok(Backend {
            target,
            reach,
            contexts: Arc::new(Contexts::new()),
        })
    }

    /// Worker `w`'s connection: the `w`-th node round-robin, or its own
    /// Redis connection (one per worker, as YCSB has one per thread).
    pub async fn session(&self, w: usize) -> Result<Session> {
        let conn = match &self.reach {
            Reach::Http(clients) => Conn::Http(Box::new(clients[w % clients.len()].clone())),
            Reach::Redis(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(OPERATION_TIMEOUT))
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| bad_url(format!("cannot reach Redis: {e}")))?;
                Conn::Redis(conn)
            }
        };
        Ok(Session {
            target: self.target,
            contexts: Arc::clone(&self.contexts),
            conn,
        })
    }
}

/// One worker's connection.
enum Conn {
    /// Boxed: a pooled client is several times a Redis connection's size.
    Http(Box<Client>),
    Redis(redis::aio::MultiplexedConnection),
}

/// One worker's connection to the target.
pub struct Session {
    target: Target,
    contexts: Arc<Contexts>,
    conn: Conn,
}

impl Session {
    pub async fn read(&mut self, i: u64) -> Outcome {
        timed(self.read_once(i)).await
    }

    /// Overwrites record `i` (chorus: with the context last seen for it).
    pub async fn update(&mut self, i: u64, value: &Bytes) -> Outcome {
        let context = self.contexts.get(i);
        timed(self.write_once(i, value, context)).await
    }

    /// Writes a new record `i`, with no context.
    pub async fn insert(&mut self, i: u64, value: &Bytes) -> Outcome {
        timed(self.write_once(i, value, None)).await
    }

    /// Reads record `i`, then writes it with the read's context.
    pub async fn read_modify_write(&mut self, i: u64, value: &Bytes) -> Outcome {
        timed(async {
            if self.read_once(i).await == Outcome::Failed {
                return Outcome::Failed;
            }
            let context = self.contexts.get(i);
            self.write_once(i, value, context).await
        })
        .await
    }

    async fn read_once(&mut self, i: u64) -> Outcome {
        let key = key(i);
        let client = match &mut self.conn {
            Conn::Redis(conn) => {
                let got: redis::RedisResult<Option<Vec<u8>>> =
                    redis::cmd("GET").arg(&key).query_async(conn).await;
                return match got {
                    Ok(Some(_)) => Outcome::Done,
                    Ok(None) => Outcome::NotFound,
                    Err(_) => Outcome::Failed,
                };
            }
            Conn::Http(client) => client,
        };
        let reply = match self.target {
            Target::Etcd => etcd::get(client, &key).await,
            _ => client.get(&key).await,
        };
        match reply {
            Ok(r) if r.status.is_success() || r.status == StatusCode::MULTIPLE_CHOICES => {
                self.contexts.remember(i, &r);
                match self.target {
                    // etcd answers 200 with no `kvs` for an absent key.
                    Target::Etcd if !etcd::found(&r) => Outcome::NotFound,
                    _ => Outcome::Done,
                }
            }
            Ok(r) if r.status == StatusCode::NOT_FOUND => Outcome::NotFound,
            _ => Outcome::Failed,
        }
    }

    async fn write_once(&mut self, i: u64, value: &Bytes, context: Option<String>) -> Outcome {
        let key = key(i);
        let client = match &mut self.conn {
            Conn::Redis(conn) => {
                let set: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg(value.as_ref())
                    .query_async(conn)
                    .await;
                return if set.is_ok() {
                    Outcome::Done
                } else {
                    Outcome::Failed
                };
            }
            Conn::Http(client) => client,
        };
        let reply = match self.target {
            Target::Etcd => etcd::put(client, &key, value).await,
            _ => client.put(&key, value.clone(), context.as_deref()).await,
        };
        match reply {
            Ok(r) if r.status.is_success() => {
                self.contexts.remember(i, &r);
                Outcome::Done
            }
            _ => Outcome::Failed,
        }
    }
}

impl Session {
    /// chorus only: `ops` (reads, updates, inserts) in one `POST /batch`,
    /// writes with the contexts last seen; one outcome per op, in order.
    pub async fn batch(&mut self, ops: &[(Operation, u64)], value: &Bytes) -> Vec<Outcome> {
        let failed = || vec![Outcome::Failed; ops.len()];
        let Conn::Http(client) = &self.conn else {
            return failed();
        };
        let mut body = Vec::with_capacity(ops.len() * (48 + value.len()) + 16);
        body.extend_from_slice(br#"{"ops":["#);
        for (n, (op, i)) in ops.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            let key = key(*i);
            match op {
                Operation::Read => {
                    body.extend_from_slice(format!(r#"{{"op":"get","key":"{key}"}}"#).as_bytes())
                }
                _ => {
                    body.extend_from_slice(format!(r#"{{"op":"put","key":"{key}","#).as_bytes());
                    let context = match op {
                        Operation::Update => self.contexts.get(*i),
                        _ => None,
                    };
                    if let Some(context) = context {
                        body.extend_from_slice(format!(r#""context":"{context}","#).as_bytes());
                    }
                    body.extend_from_slice(br#""value":"#);
                    body.extend_from_slice(value);
                    body.push(b'}');
                }
            }
        }
        body.extend_from_slice(b"]}");
        let headers = [("content-type", "application/json")];
        let call = client.request(http::Method::POST, "/batch", &headers, Bytes::from(body));
        let reply = match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
            Ok(Ok(reply)) if reply.status == StatusCode::OK => reply,
            _ => return failed(),
        };
        let Some(results) = reply
            .json()
            .and_then(|json| json.get("results").and_then(|r| r.as_array()).cloned())
            .filter(|results| results.len() == ops.len())
        else {
            return failed();
        };
        ops.iter()
            .zip(results)
            .map(|((_, i), result)| {
                let status = result.get("status").and_then(|s| s.as_u64()).unwrap_or(0);
                if let Some(context) = result.get("context").and_then(|c| c.as_str()) {
                    self.contexts.remember_text(*i, context);
                }
                match status {
                    200 | 204 | 300 => Outcome::Done,
                    404 => Outcome::NotFound,
                    _ => Outcome::Failed,
                }
            })
            .collect()
    }
}

impl Session {
    /// chorus only: up to `length` records in key order from record `i`'s
    /// key (`GET /kv?start=…&limit=…`), one page; the outcome, and how
    /// many records it read.
    pub async fn scan(&mut self, i: u64, length: u32) -> (Outcome, u64) {
        let Conn::Http(client) = &self.conn else {
            return (Outcome::Failed, 0);
        };
        let path = format!("/kv?start={}&limit={length}", key(i));
        let call = client.request(http::Method::GET, &path, &[], Bytes::new());
        let reply = match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
            Ok(Ok(reply)) if reply.status == StatusCode::OK => reply,
            _ => return (Outcome::Failed, 0),
        };
        let read = reply
            .json()
            .and_then(|page| page.get("items").and_then(|i| i.as_array()).map(Vec::len))
            .map_or(0, |n| n as u64);
        (Outcome::Done, read)
    }
}

async fn timed(op: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(OPERATION_TIMEOUT, op)
        .await
        .unwrap_or(Outcome::Failed)
}

fn bad_url(e: impl std::fmt::Display) -> Error {
    Error::BadParameter {
        name: "url".into(),
        reason: e.to_string(),
    }
}
