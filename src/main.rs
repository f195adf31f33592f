//! The `chorus` command line: run nodes, talk to them, measure them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http::{Method, StatusCode};

use chorus::api::CONTEXT_HEADER;
use chorus::bench;
use chorus::client::{Client, DEV_URL, key_path};
use chorus::config::Config;
use chorus::error::Error;
use chorus::node::{Node, Start};

mod sim_cli;
mod status;
mod verbs;

use sim_cli::Sim;

use verbs::{print_page, print_reply, say};

// glibc's malloc spent a fifth of the PUT path consolidating and freeing
// buffers allocated on one thread and freed on another; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "A leaderless, Dynamo-style replicated key-value store",
    after_help = "The client verbs, status, leave, remove and bench send the bearer token in CHORUS_TOKEN, when it is set (see docs/security.md); --url is a node's http://host:port (https:// with CHORUS_CA for TLS).\n\nExit codes: 0 done; 1 the key (or CRDT key) holds nothing (404); 2 an error: a bad argument, a node that cannot be reached, an error answer (the message names it); 3 a conditional write whose condition did not hold (412). sim exits 1 when a seed finds a violation (docs/operations.md, The CLI)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of the cluster a config file describes.
    Serve {
        /// The cluster definition (TOML).
        #[arg(long, default_value = "config/cluster.toml")]
        config: PathBuf,
        /// Which [[nodes]] entry this process is.
        #[arg(long)]
        node: String,
        /// Join a running ring through the node at this host:port.
        #[arg(long)]
        join: Option<String>,
    },
    /// Run a local cluster on loopback from the built-in default, for a first try.
    Dev {
        /// Port of the first node.
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
        /// Folder for the nodes' data (one subfolder per node).
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Store a JSON value under a key.
    Put {
        key: String,
        /// The value, a JSON document.
        json: String,
        /// The context from an earlier read, to supersede what it saw.
        #[arg(long)]
        context: Option<String>,
        /// Write only if the key has no value (If-None-Match: *).
        #[arg(long, conflicts_with = "if_match")]
        if_none_match: bool,
        /// Write only if nobody wrote since the read that returned this
        /// context (If-Match), or with `*` only if the key has a value.
        #[arg(long)]
        if_match: Option<String>,
        /// The value expires this many ms after the write.
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Read a key: its value, or its siblings, and its context.
    Get {
        key: String,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long)]
        context: Option<String>,
        /// Delete only if nobody wrote since the read that returned this
        /// context (If-Match), or with `*` only if the key has a value.
        #[arg(long)]
        if_match: Option<String>,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Wait for KEY to change: print it (as `get` does) each time a write
    /// lands that the last context had not seen, --count times.
    Watch {
        key: String,
        /// What has been seen: none waits for the first write (or answers
        /// at once if the key holds one).
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        follow: verbs::Follow,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Follow the change feed: print each change under --prefix (one JSON
    /// object a line) until --count changes were printed, then the cursor
    /// to resume from (on stderr).
    Changes {
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Where to start: `now`, or the cursor an earlier run printed.
        #[arg(long, default_value = "now")]
        since: String,
        #[command(flatten)]
        follow: verbs::Follow,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Add N (negative: subtract) to the counter under KEY (or a map's
    /// counter field, with --field); prints the state as the replica that
    /// applied it holds it.
    Incr {
        key: String,
        #[arg(allow_negative_numbers = true)]
        n: i64,
        /// The field of the map under KEY to update, instead of KEY itself.
        #[arg(long)]
        field: Option<String>,
        /// Count once however often the command is retried with this id.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Add members to the set under KEY (or a map's set field, with --field).
    Sadd {
        key: String,
        #[arg(required = true)]
        members: Vec<String>,
        /// The field of the map under KEY to update, instead of KEY itself.
        #[arg(long)]
        field: Option<String>,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Remove members from the set under KEY: those the read that returned
    /// --context saw, or without it those a read made now sees.
    Srem {
        key: String,
        #[arg(required = true)]
        members: Vec<String>,
        /// The field of the map under KEY to update, instead of KEY itself.
        #[arg(long)]
        field: Option<String>,
        #[arg(long)]
        context: Option<String>,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Read the counter, set or map under KEY, and its context.
    Crdt {
        key: String,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// List keys in order with their values: one page, or every page with --all.
    Scan {
        /// Only keys that start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// From this key on (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// Up to this key (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// Keys per page, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Where to go on: the `next:` a page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page to the end of the range.
        #[arg(long)]
        all: bool,
        /// Print the keys alone.
        #[arg(long)]
        keys_only: bool,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Show the ring as a node sees it: members, ownership, routing.
    Status {
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Make the node at --url leave the ring: it hands its data to the new
    /// owners, verifies the copies, then exits.
    Leave {
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Take a dead node out of the ring (through any live node at --url).
    Remove {
        node: String,
        #[arg(long, default_value = DEV_URL)]
        url: String,
    },
    /// Load a node (or the null server) and report throughput and latency.
    Bench(bench::Options),
    /// Run a simulation of the real state machines in this process.
    #[command(subcommand)]
    Sim(Sim),
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // A simulation prints its summary; the logs of its nodes (faults are
    // its point) only with --verbose or RUST_LOG.
    let logs = match &command {
        Command::Sim(sim) if !sim.verbose() => "off",
        _ => "info,fjall=warn,lsm_tree=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(logs)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads(&command) {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chorus: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chorus: {e}");
            ExitCode::from(2)
        }
    }
}

/// The runtime threads `serve` starts for its node
/// ([`Config::runtime_threads`]: its `worker_threads`, else its share of
/// the machine's cores among the nodes the file puts on its host); a
/// config that does not load is reported by `run`, with the runtime's
/// default.
fn worker_threads(command: &Command) -> Option<usize> {
    match command {
        Command::Serve { config, node, .. } => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            Config::load(config).ok()?.runtime_threads(node, cores)
        }
        _ => None,
    }
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Serve { config, node, join } => {
            let config = Config::load(&config)?;
            let start = Start {
                join,
                ..Start::default()
            };
            let node = Node::start_with(&config, &node, start).await?;
            // A long-running server must not die because its stdout closed.
            say(&format!("{} serving on {}", node.id, node.url()));
            tokio::select! {
                _ = stop_signal() => {}
                _ = node.left() => say(&format!("{} left the ring", node.id)),
            }
            node.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { url } => status::show(&url).await,
        Command::Leave { url } => status::leave(&url).await,
        Command::Remove { node, url } => status::remove(&url, &node).await,
        Command::Dev { base_port, data } => {
            let config = Config::dev(3, base_port, &data);
            let mut nodes = Vec::new();
            for n in &config.nodes {
                nodes.push(Node::start(&config, &n.id).await?);
            }
            // A node that called another before it was listening holds it
            // down until a later call gets through: wait (briefly) until
            // none does, so the first write tried below is not refused.
            let ids: Vec<String> = config.nodes.iter().map(|n| n.id.clone()).collect();
            let settled = || {
                nodes.iter().all(|n| {
                    ids.iter().all(|id| {
                        n.cluster().detector().liveness(id) != chorus::membership::Liveness::Down
                    })
                })
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !settled() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!(
                "chorus dev: {} node(s), data under {}",
                nodes.len(),
                data.display()
            );
            for n in &nodes {
                println!("  {}  {}", n.id, n.url());
            }
            let url = nodes.first().map(Node::url).unwrap_or_default();
            println!("\nTry:");
            println!(
                "  curl -i -X PUT -H 'Content-Type: application/json' -d '{{\"hello\":\"world\"}}' {url}/kv/greeting"
            );
            println!("  curl -i {url}/kv/greeting");
            println!("  cargo run --release -- get greeting --url {url}");
            println!("  cargo run --release -- status --url {url}");
            println!("  curl {url}/metrics\n\nCtrl-C stops the cluster.");
            stop_signal().await;
            for n in nodes {
                n.shutdown().await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Put {
            key,
            json,
            context,
            if_none_match,
            if_match,
            ttl_ms,
            url,
        } => {
            let mut headers = vec![("content-type", "application/json")];
            headers.extend(context.as_deref().map(|c| (CONTEXT_HEADER, c)));
            headers.extend(if_none_match.then_some(("if-none-match", "*")));
            headers.extend(if_match.as_deref().map(|c| ("if-match", c)));
            let path = match ttl_ms {
                Some(ms) => format!("{}?ttl_ms={ms}", key_path(&key)),
                None => key_path(&key),
            };
            let reply = Client::cli(&url)?
                .request(Method::PUT, &path, &headers, json.into())
                .await?;
            Ok(print_reply(&reply))
        }
        Command::Get { key, url } => Ok(print_reply(&Client::cli(&url)?.get(&key).await?)),
        Command::Delete {
            key,
            context,
            if_match,
            url,
        } => {
            let mut headers = Vec::new();
            headers.extend(context.as_deref().map(|c| (CONTEXT_HEADER, c)));
            headers.extend(if_match.as_deref().map(|c| ("if-match", c)));
            let reply = Client::cli(&url)?
                .request(
                    Method::DELETE,
                    &key_path(&key),
                    &headers,
                    Default::default(),
                )
                .await?;
            Ok(print_reply(&reply))
        }
        Command::Watch {
            key,
            context,
            follow,
            url,
        } => verbs::watch(&Client::cli(&url)?, &key, context, follow).await,
        Command::Changes {
            prefix,
            since,
            follow,
            url,
        } => verbs::changes(&Client::cli(&url)?, &prefix, since, follow).await,
        Command::Incr {
            key,
            n,
            field,
            idempotency_key,
            url,
        } => {
            let update = serde_json::json!({"type": "counter", "increment": n});
            let body = verbs::in_field(update, field.as_deref());
            verbs::incr(&Client::cli(&url)?, &key, &body, idempotency_key.as_deref()).await
        }
        Command::Sadd {
            key,
            members,
            field,
            url,
        } => {
            let update = serde_json::json!({"type": "set", "add": members});
            let body = verbs::in_field(update, field.as_deref());
            let reply = Client::cli(&url)?.crdt_update(&key, &body, None).await?;
            Ok(print_reply(&reply))
        }
        Command::Srem {
            key,
            members,
            field,
            context,
            url,
        } => {
            let update = serde_json::json!({"type": "set", "remove": members});
            let body = verbs::in_field(update, field.as_deref());
            verbs::srem(&Client::cli(&url)?, &key, &body, context).await
        }
        Command::Crdt { key, url } => Ok(print_reply(&Client::cli(&url)?.crdt(&key).await?)),
        Command::Scan {
            prefix,
            start,
            end,
            limit,
            mut cursor,
            all,
            keys_only,
            url,
        } => {
            let client = Client::cli(&url)?;
            let limit = limit.to_string();
            loop {
                let path = chorus::client::scan_path(&[
                    ("prefix", prefix.as_deref()),
                    ("start", start.as_deref()),
                    ("end", end.as_deref()),
                    ("limit", Some(&limit)),
                    ("keys_only", keys_only.then_some("true")),
                    ("cursor", cursor.as_deref()),
                ]);
                let reply = client
                    .request(Method::GET, &path, &[], Default::default())
                    .await?;
                let page = match (reply.status, reply.json()) {
                    (StatusCode::OK, Some(page)) => page,
                    _ => return Ok(print_reply(&reply)),
                };
                print_page(&page);
                cursor = page["next"].as_str().map(str::to_string);
                match (&cursor, all) {
                    (Some(_), true) => continue,
                    (Some(next), false) => println!("next: {next}"),
                    (None, _) => {}
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        Command::Sim(sim) => Ok(sim_cli::run(sim).await?),
        Command::Bench(options) if options.watchers > 0 => {
            let summary = bench::watchers::run(&options).await?;
            eprint!("{}", bench::watchers::table(&summary));
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(options) => {
            let out = options.out.clone();
            let summary = bench::run(options).await?;
            if let Some(load) = &summary.load {
                eprintln!(
                    "loaded {} records in {:.1} s ({:.0}/s, {} errors)",
                    load.records, load.seconds, load.records_per_sec, load.errors
                );
            }
            eprint!("{}", bench::table(&summary));
            let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
            println!("{json}");
            if let Some(out) = &out {
                std::fs::write(out, format!("{json}\n")).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("writing {}: {e}", out.display()))
                })?;
                match bench::plot::write(&summary, out) {
                    Ok(plots) => {
                        for plot in plots {
                            eprintln!("wrote {}", plot.display());
                        }
                    }
                    Err(e) => eprintln!("plots not written: {e}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
