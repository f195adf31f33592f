//! The classic Dynamo loss as a workload: clients do read-modify-write of one
//! JSON set stored under one key, each adding its own elements and writing
//! back with the context it read. Every add a PUT acknowledged must be in the
//! union of the key's final siblings, whatever happened to the nodes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chorus::client::{Client, Reply, key_path};
use http::{Method, StatusCode};
use serde_json::Value;

/// How often one add is tried before the client gives it up (unacknowledged).
const ATTEMPTS: usize = 50;

/// Clients adding to one set, each with its own disjoint elements.
pub struct SetAdds {
    writers: Vec<tokio::task::JoinHandle<Vec<u64>>>,
    acked: Arc<AtomicUsize>,
}

impl SetAdds {
    /// Starts one writer per client, each making `adds` adds to `key` at
    /// the given read and write quorums.
    pub fn start(clients: Vec<Client>, key: &str, adds: usize, r: &str, w: &str) -> SetAdds {
        let acked = Arc::new(AtomicUsize::new(0));
        let writers = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| {
                let read_path = format!("{}?r={r}", key_path(key));
                let write_path = format!("{}?w={w}", key_path(key));
                let acked = acked.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0..adds {
                        let element = (c * adds + i) as u64;
                        if add(&client, &read_path, &write_path, element).await {
                            mine.push(element);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    mine
                })
            })
            .collect();
        SetAdds { writers, acked }
    }

    /// Waits until at least `count` adds were acknowledged (or every writer
    /// finished), so a fault lands in the middle of the workload.
    pub async fn await_acked(&self, count: usize) {
        while self.acked.load(Ordering::Relaxed) < count
            && self.writers.iter().any(|w| !w.is_finished())
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Every acknowledged element.
    pub async fn finish(self) -> BTreeSet<u64> {
        let mut acked = BTreeSet::new();
        for w in self.writers {
            acked.extend(w.await.expect("writer"));
        }
        acked
    }
}

/// One read-modify-write add, retried a bounded number of times when the
/// read or the write is refused; true when a PUT acknowledged it.
async fn add(client: &Client, read_path: &str, write_path: &str, element: u64) -> bool {
    for _ in 0..ATTEMPTS {
        let Ok(read) = client
            .request(Method::GET, read_path, &[], Bytes::new())
            .await
        else {
            continue;
        };
        let mut set = match read.status {
            StatusCode::OK | StatusCode::MULTIPLE_CHOICES => union(&read),
            StatusCode::NOT_FOUND => BTreeSet::new(),
            _ => continue,
        };
        set.insert(element);
        let body = serde_json::to_vec(&set).expect("json");
        let mut headers = vec![("content-type", "application/json")];
        if let Some(ctx) = read.context() {
            headers.push((chorus::api::CONTEXT_HEADER, ctx));
        }
        let written = client
            .request(Method::PUT, write_path, &headers, Bytes::from(body))
            .await;
        if written.is_ok_and(|w| w.status == StatusCode::NO_CONTENT) {
            return true;
        }
    }
    false
}

/// The union of the sets in a read's value or siblings.
pub fn union(read: &Reply) -> BTreeSet<u64> {
    let body = read.json().unwrap_or(Value::Null);
    let values: Vec<&Value> = match body.get("siblings").and_then(Value::as_array) {
        Some(siblings) => siblings.iter().map(|s| &s["value"]).collect(),
        None => vec![&body],
    };
    values
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}

/// Panics naming the lost elements if any acknowledged add is missing from
/// `found`, and if too few adds were acknowledged for the test to mean much.
pub fn assert_none_lost(acked: &BTreeSet<u64>, found: &BTreeSet<u64>, at_least: usize) {
    assert!(
        acked.len() >= at_least,
        "only {} adds acknowledged",
        acked.len()
    );
    let lost: Vec<_> = acked.difference(found).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged adds lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
