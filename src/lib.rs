//! chorus: a leaderless, Dynamo-style replicated key-value store.
//!
//! # Map
//!
//! ```text
//! main.rs        the `chorus` CLI: serve, dev, put/get/delete, bench
//! node           builds one node from the config, serves, shuts down
//! config         the cluster definition (TOML) and validate()
//! error          the one error type: HTTP status, code, retryable or not
//! api            the public REST API on hyper: /kv/{key}, /health, /metrics
//! coordinator    one client request against the key's replicas
//! peer           the node-to-node protocol enums and the Transport trait
//! replica        what a node does with a peer request: mint, merge, read
//! store          Store trait; fjall (durable) and memory engines; group commit
//! version        dots, version vectors, sibling sets (DVV), client contexts
//! ring           ring positions (the stable key hash)
//! metrics        every metric name, once
//! client, bench  the HTTP client the CLI and tests use; the load generator
//! ```
//!
//! The pure cores (`version`, `ring`) do no I/O; everything else wraps them.
//!
//! # One PUT
//!
//! `PUT /kv/greeting` with a JSON body and maybe an `X-Chorus-Context`
//! reaches [`api`], which checks the key, the parameters, the content type
//! and the body (limits, timeout, valid JSON) and decodes the context. The
//! [`coordinator::Coordinator`] sends a `Coordinate` request through the
//! [`peer::Transport`] to the first replica of the key's preference list
//! (this node, until the ring arrives). That [`replica::Replica`] does an
//! atomic read-merge-write in the [`store`]: it mints a dot above anything
//! the key or the context has seen of this node, applies the write to the
//! [`version::SiblingSet`] (dropping the siblings the context covers), and
//! waits for group commit to make it durable. The coordinator would then
//! merge that set into the other replicas; the API answers 204 with the
//! client's context plus the new dot.
//!
//! # One GET
//!
//! `GET /kv/greeting`: the coordinator sends `Read` to every replica,
//! merges the sibling sets with [`version::SiblingSet::merge`], and the API
//! answers 200 with the value, 300 with every sibling, or 404, always with
//! the merged context when the key has one.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod replica;
pub mod ring;
pub mod sim;
pub mod store;
pub mod version;
