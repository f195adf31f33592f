//! chorus: a leaderless, Dynamo-style replicated key-value store.
//!
//! # Map
//!
//! ```text
//! main.rs        the `chorus` CLI: serve [--join], dev, put/get/delete,
//!                status/leave/remove, bench, sim ring, sim antientropy,
//!                sim cluster
//! node           builds one node from the config, runs its tasks, shuts down
//! net            the network a node runs on: TCP, or the simulation's
//! config         the cluster definition (TOML) and validate()
//! clock          a node's wall clock (the system's, or the simulation's
//!                with a skew): idempotency ages, signed timestamps,
//!                the generations of a node's lives
//! error          the one error type: HTTP status, code, retryable or not
//! budget         a byte budget for filling a message (pure)
//! encoding       postcard bytes built once at their exact size; stored
//!                bytes answered unchanged (pure)
//! api            the REST API on hyper: /kv/{key}, /cluster, /admin/*,
//!                /health, /metrics, and /peer for other nodes
//! coordinator    one client request: forward once, or fan out and count to W/R
//!                (the quorum tally is its own pure type, `coordinator::tally`)
//! membership     three parts wired by `Cluster`: the members and their states
//!                (`Roster`), liveness (`FailureDetector`: heartbeats, phi),
//!                routing (`Routes`: preference lists, Chord, forwarding);
//!                then handoff and graceful leave
//! peer           the transport: typed calls (Rpc, Services), frames over
//!                h2c, one stream per peer for replica reads and writes,
//!                protocol versions per peer; it knows no subsystem
//! security       peer request MACs and replay windows, client bearer tokens,
//!                TLS for clients and peers
//! replica        what a node does with the reads and writes sent to its
//!                store (its own peer messages): mint, merge, read; it
//!                publishes each change it commits, with its cause (events)
//! store          Store trait; fjall (durable) and memory engines; group commit
//! version        dots, version vectors, sibling sets (DVV), client contexts,
//!                CRDT states (counters, sets and maps from the crdts crate)
//! ring           positions, tokens, placement, members CRDT, Chord router
//! antientropy    Merkle trees per ring range (pure), the causal op log
//!                (pure), the exchanges that repair replicas in the
//!                background, tombstone purge
//! sim            the Chord routers of many nodes, anti-entropy's rounds
//!                and bytes, and whole clusters under a nemesis on turmoil's
//!                network (deterministic by seed), in one process
//! check          checkers: a recorded history in, broken promises out
//! metrics        every metric, once (name, kind, unit, help)
//! client, bench  the HTTP client the CLI and tests use; the YCSB load
//!                generator against chorus, the null server, etcd and Redis
//! ```
//!
//! The pure cores (`version`, `ring`, `antientropy::merkle`,
//! `antientropy::oplog`, `check`) do no I/O; everything else wraps them.
//!
//! # One PUT
//!
//! `PUT /kv/greeting` with a JSON body and maybe an `X-Chorus-Context`
//! reaches [`api`], which checks the key, the parameters, the content type
//! and the body (limits, timeout, valid JSON) and decodes the context. The
//! [`coordinator::Coordinator`] asks the cluster's [`membership::Routes`] for
//! the key's preference list ([`ring::Ring::preference_list`]); if this node is not
//! on it, it forwards the request once to a replica found through the ring
//! (lookup cache, else a Chord lookup) and relays the answer. Otherwise it
//! sends a `Coordinate` request ([`replica::rpc`], a typed call through the
//! [`peer::Transport`]) to one replica, itself when it can. That [`replica::Replica`] does an
//! atomic read-merge-write in the [`store`]: it mints a dot above anything
//! the key or the context has seen of this node, applies the write to the
//! [`version::SiblingSet`] (dropping the siblings the context covers), and
//! hands the new set back while group commit makes it durable. The
//! coordinator sends that set to the other replicas at once (`Merge`, in
//! parallel on each peer's stream) and answers once W of them, its
//! own copy included, hold it durably; the API answers 204 with the
//! client's context plus the new dot.
//!
//! # One GET
//!
//! `GET /kv/greeting`: the coordinator forwards as above, or sends `Read` to
//! R replicas (itself first; the others when one fails, after
//! `cluster.speculative_read_ms`, or when the answers have not seen the
//! client's session context), merges the first R sibling sets with
//! [`version::SiblingSet::merge`], and the API
//! answers 200 with the value, 300 with every sibling, or 404, always with
//! the merged context when the key has one.

pub mod antientropy;
pub mod api;
pub mod bench;
pub mod budget;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod encoding;
pub mod error;
pub mod feed;
pub mod membership;
pub mod metrics;
pub mod net;
pub mod node;
pub mod peer;
pub mod replica;
pub mod ring;
pub mod security;
pub mod sim;
pub mod store;
pub mod version;
pub mod watch;
