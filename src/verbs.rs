//! The client verbs that are more than one request, and how the command
//! line shows what a node answered.

use std::process::ExitCode;

use http::{Method, StatusCode};

use chorus::api::CONTEXT_HEADER;
use chorus::client::{Client, Reply, crdt_path, key_path};
use chorus::error::Error;

/// How `watch` and `changes` follow: long polls, one after another, until
/// enough changes were printed.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Follow {
    /// Changes to print before exiting.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// How long one request waits for a change before asking again, in ms.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
}

/// `chorus watch`: prints each of the next `count` changes of `key` after
/// `context`, watching again whenever a watch times out (304).
pub async fn watch(
    client: &Client,
    key: &str,
    mut context: Option<String>,
    Follow { count, timeout_ms }: Follow,
) -> Result<ExitCode, Error> {
    let path = format!("{}?watch=true&timeout_ms={timeout_ms}", key_path(key));
    let mut printed = 0;
    while printed < count {
        let headers: Vec<_> = context
            .as_deref()
            .map(|c| (CONTEXT_HEADER, c))
            .into_iter()
            .collect();
        let reply = client
            .request(Method::GET, &path, &headers, Default::default())
            .await?;
        match reply.status {
            // Nothing new within the timeout: watch again.
            StatusCode::NOT_MODIFIED => continue,
            StatusCode::OK | StatusCode::MULTIPLE_CHOICES | StatusCode::NOT_FOUND => {
                print_reply(&reply);
                context = reply.context().map(str::to_string);
                printed += 1;
            }
            _ => return Ok(print_reply(&reply)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `chorus changes`: follows the feed from `since`, printing each change
/// as a line of JSON, until `count` were printed; then the cursor to
/// resume from, on stderr.
pub async fn changes(
    client: &Client,
    prefix: &str,
    mut since: String,
    Follow { count, timeout_ms }: Follow,
) -> Result<ExitCode, Error> {
    let mut printed = 0;
    while printed < count {
        let reply = client.changes(prefix, &since, timeout_ms).await?;
        let page = match reply.status {
            StatusCode::OK => reply.json().unwrap_or_default(),
            _ => return Ok(print_reply(&reply)),
        };
        for change in page["changes"].as_array().into_iter().flatten() {
            println!("{change}");
            printed += 1;
        }
        match page["next"].as_str() {
            Some(next) => since = next.to_string(),
            None => return Ok(print_reply(&reply)),
        }
    }
    eprintln!("resume with --since {since}");
    Ok(ExitCode::SUCCESS)
}

/// `chorus incr`: applies `body` (an increment, or a map's update of a
/// counter field) and prints the state as the replica that applied it holds it.
pub async fn incr(
    client: &Client,
    key: &str,
    body: &serde_json::Value,
    idempotency_key: Option<&str>,
) -> Result<ExitCode, Error> {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(idempotency_key.map(|k| ("idempotency-key", k)));
    let path = format!("{}?returnbody=true", crdt_path(key));
    let reply = client
        .request(Method::POST, &path, &headers, body.to_string().into())
        .await?;
    Ok(print_reply(&reply))
}

/// A counter's or a set's update, or with `field` the update of a map
/// that applies it to that field.
pub fn in_field(update: serde_json::Value, field: Option<&str>) -> serde_json::Value {
    match field {
        None => update,
        Some(field) => serde_json::json!({"type": "map", "update": {field: update}}),
    }
}

/// `chorus srem`: removes what the read that gave `context` saw, or
/// without one what a read made now sees.
pub async fn srem(
    client: &Client,
    key: &str,
    body: &serde_json::Value,
    context: Option<String>,
) -> Result<ExitCode, Error> {
    let context = match context {
        Some(context) => Some(context),
        None => client.crdt(key).await?.context().map(str::to_string),
    };
    let reply = client.crdt_update(key, body, context.as_deref()).await?;
    Ok(print_reply(&reply))
}

/// A scan's page: a line per key, with its value or its siblings.
pub fn print_page(page: &serde_json::Value) {
    for item in page["items"].as_array().into_iter().flatten() {
        let key = item["key"].as_str().unwrap_or_default();
        match (item.get("value"), item.get("siblings")) {
            (Some(value), _) => println!("{key}\t{value}"),
            (None, Some(siblings)) => println!("{key}\t{siblings} (siblings)"),
            (None, None) => println!("{key}"),
        }
    }
}

/// Prints a reply for a person: the value or each sibling, then the context.
/// Exit code 0 on success, 1 when the key is absent, 2 on an error reply,
/// 3 when a conditional write's condition did not hold (412).
pub fn print_reply(reply: &Reply) -> ExitCode {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let code = match reply.status {
        StatusCode::OK => {
            match reply.json() {
                Some(v) => println!("{}", pretty(&v)),
                None => println!("{}", String::from_utf8_lossy(&reply.body)),
            }
            ExitCode::SUCCESS
        }
        StatusCode::NO_CONTENT => {
            println!("ok");
            ExitCode::SUCCESS
        }
        StatusCode::MULTIPLE_CHOICES => {
            let siblings = reply
                .json()
                .and_then(|v| v.get("siblings").and_then(|s| s.as_array()).cloned())
                .unwrap_or_default();
            println!(
                "{} siblings (concurrent writes; write with this context to resolve):",
                siblings.len()
            );
            for (i, s) in siblings.iter().enumerate() {
                match s.get("value") {
                    Some(v) => println!("  [{}] {}", i + 1, pretty(v).replace('\n', "\n      ")),
                    None => println!("  [{}] (deleted)", i + 1),
                }
            }
            ExitCode::SUCCESS
        }
        StatusCode::NOT_FOUND if reply.context().is_some() => {
            println!("not found (deleted)");
            ExitCode::from(1)
        }
        StatusCode::NOT_FOUND => {
            println!("not found");
            ExitCode::from(1)
        }
        StatusCode::PRECONDITION_FAILED => {
            eprintln!("not written: {}", String::from_utf8_lossy(&reply.body));
            ExitCode::from(3)
        }
        status => {
            eprintln!("{status}: {}", String::from_utf8_lossy(&reply.body));
            ExitCode::from(2)
        }
    };
    if let Some(context) = reply.context() {
        println!("context: {context}");
    }
    if let Some(expires) = reply
        .headers
        .get(chorus::api::EXPIRES_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        println!("expires: {expires}");
    }
    code
}

/// Prints a line, ignoring a closed stdout.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
