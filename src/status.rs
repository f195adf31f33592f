//! The cluster verbs of the CLI: `status`, `leave`, `remove`.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use chorus::client::{Client, Reply};
use chorus::error::Error;

/// Prints `GET /cluster` as a table, with each member's own hints pending
/// and anti-entropy lag (asked of the member itself; `-` where it does not
/// answer).
pub async fn show(url: &str) -> Result<ExitCode, Error> {
    let reply = Client::cli(url)?
        .request(Method::GET, "/cluster", &[], Bytes::new())
        .await?;
    let Some(mut body) = ok_json(&reply) else {
        return Ok(ExitCode::from(2));
    };
    // Each member over the scheme the operator used for the first.
    let scheme = url.split_once("://").map_or("http", |(s, _)| s);
    if let Some(members) = body["members"].as_array_mut() {
        for member in members.iter_mut() {
            let Some(addr) = member["addr"].as_str() else {
                continue;
            };
            let Ok(own) = Client::cli(&format!("{scheme}://{addr}")) else {
                continue;
            };
            let asked = own.request(Method::GET, "/cluster", &[], Bytes::new());
            if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), asked).await
                && let Ok(theirs) = serde_json::from_slice::<Value>(&reply.body)
            {
                member["hints_pending"] = theirs["hints_pending"].clone();
                member["antientropy_lag"] = theirs["antientropy"]["lag"].clone();
            }
        }
    }
    print!("{}", table(&body));
    Ok(ExitCode::SUCCESS)
}

/// The members and this node's routing state as text.
pub fn table(body: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let number = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    let mut out = format!(
        "ring as seen by {} (n = {}, anti-entropy {})\n\n{:<10} {:<22} {:<6} {:>6} {:>6} {:>9} {:<8} {:<8} {:>6} {:>7}\n",
        text(&body["node"]),
        body["n"],
        text(&body["antientropy"]["mode"]),
        "NODE",
        "ADDRESS",
        "ZONE",
        "WEIGHT",
        "TOKENS",
        "OWNS",
        "STATUS",
        "LIVENESS",
        "HINTS",
        "AE LAG"
    );
    for m in body["members"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<10} {:<22} {:<6} {:>6} {:>6} {:>8.1}% {:<8} {:<8} {:>6} {:>7}\n",
            text(&m["id"]),
            text(&m["addr"]),
            text(&m["zone"]),
            m["weight"].to_string(),
            m["tokens"].to_string(),
            m["ownership"].as_f64().unwrap_or(0.0) * 100.0,
            text(&m["status"]),
            text(&m["liveness"]),
            number(&m["hints_pending"]),
            number(&m["antientropy_lag"]),
        ));
    }
    out.push_str(
        "\nVNODE             PREDECESSOR          SUCCESSORS                         FINGERS\n",
    );
    for v in body["routing"].as_array().into_iter().flatten() {
        let name = |x: &Value| {
            format!(
                "{}@{}",
                text(&x["node"]),
                &text(&x["position"])[..6.min(text(&x["position"]).len())]
            )
        };
        let succs: Vec<String> = v["successors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(name)
            .collect();
        let fingers = v["fingers"].as_array().map_or(0, Vec::len);
        let pred = if v["predecessor"].is_null() {
            "-".to_string()
        } else {
            name(&v["predecessor"])
        };
        out.push_str(&format!(
            "{:<17} {:<20} {:<34} {}\n",
            text(&v["position"]),
            pred,
            succs.iter().take(3).cloned().collect::<Vec<_>>().join(" ")
                + if succs.len() > 3 { " …" } else { "" },
            fingers
        ));
    }
    out.push_str(&format!("\nleave: {}\n", text(&body["leave"]["state"])));
    out
}

/// Asks the node to leave and follows it until it is gone.
pub async fn leave(url: &str) -> Result<ExitCode, Error> {
    let client = Client::cli(url)?;
    let reply = client
        .request(Method::POST, "/admin/leave", &[], Bytes::new())
        .await?;
    if reply.status != StatusCode::ACCEPTED {
        eprintln!("{}: {}", reply.status, String::from_utf8_lossy(&reply.body));
        return Ok(ExitCode::from(2));
    }
    println!("leaving: handing off data to the new owners…");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = match client
            .request(Method::GET, "/cluster", &[], Bytes::new())
            .await
        {
            Ok(reply) => reply,
            // The node has handed everything off and stopped.
            Err(Error::Unreachable { .. }) => {
                println!("left the ring");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e),
        };
        let state = reply.json().map(|b| b["leave"].clone()).unwrap_or_default();
        match state["state"].as_str() {
            Some("left") => {
                println!("left the ring");
                return Ok(ExitCode::SUCCESS);
            }
            Some("failed") => {
                eprintln!("leave failed: {}", state["error"]);
                return Ok(ExitCode::from(2));
            }
            _ => {}
        }
    }
}

/// Takes a dead node out of the ring.
pub async fn remove(url: &str, node: &str) -> Result<ExitCode, Error> {
    let path = format!("/admin/remove/{node}");
    let reply = Client::cli(url)?
        .request(Method::POST, &path, &[], Bytes::new())
        .await?;
    match ok_json(&reply) {
        Some(_) => {
            println!("{node} removed; its ranges pass to the next nodes");
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::from(2)),
    }
}

fn ok_json(reply: &Reply) -> Option<Value> {
    if reply.status.is_success() {
        reply.json()
    } else {
        eprintln!("{}: {}", reply.status, String::from_utf8_lossy(&reply.body));
        None
    }
}
