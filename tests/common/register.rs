//! Recorded writes and reads against a real cluster, checked by the same
//! checkers the simulation uses (`chorus::check`).
//!
//! Every write stores a value unique to it (`"w<id>"`); a write with a
//! context records which writes the read that gave the context returned,
//! so the lost-writes checker knows what it may supersede. The final
//! state is read at r=3 through every node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus::api::CONTEXT_HEADER;
use chorus::check::record::{Recorder, read_values};
use chorus::check::{History, Op, Violation, write_of};
use chorus::client::{Client, key_path};
use http::Method;
use parking_lot::Mutex;

/// How long one request may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Register {
    recorder: Recorder,
    /// Per key: the context of the last read and the writes it returned.
    known: Mutex<HashMap<String, (String, Vec<u64>)>>,
}

/// What one write got back.
pub struct Outcome {
    pub id: u64,
    pub status: u16,
}

impl Register {
    pub fn new() -> Arc<Register> {
        Arc::default()
    }

    /// Reads `key` at `r` through `client`, remembering its context for the
    /// next write with context; the values read, or `None` if it failed.
    pub async fn read(&self, client: &Client, key: &str, r: &str) -> Option<Vec<String>> {
        let path = format!("{}?r={r}", key_path(key));
        let call = client.request(Method::GET, &path, &[], Bytes::new());
        let reply = tokio::time::timeout(TIMEOUT, call).await.ok()?.ok()?;
        let values = read_values(reply.status.as_u16(), &reply.body)?;
        self.recorder.record(Op::Read {
            client: 0,
            key: key.to_string(),
            values: values.clone(),
            session: false,
            at_ms: chorus::check::record::now_ms(),
        });
        if let Some(context) = reply.context() {
            let saw = values.iter().filter_map(|v| write_of(v)).collect();
            self.known
                .lock()
                .insert(key.to_string(), (context.to_string(), saw));
        }
        Some(values)
    }

    /// Writes a new value to `key` through `client` at `w`: blind, or with
    /// the context of the last read of the key.
    pub async fn write(&self, client: &Client, key: &str, blind: bool, w: &str) -> Outcome {
        let (id, body) = self.recorder.next_write();
        let known = if blind {
            None
        } else {
            self.known.lock().get(key).cloned()
        };
        let mut headers = vec![("content-type", "application/json")];
        if let Some((context, _)) = &known {
            headers.push((CONTEXT_HEADER, context.as_str()));
        }
        let path = format!("{}?w={w}", key_path(key));
        let call = client.request(Method::PUT, &path, &headers, Bytes::from(body));
        let status = match tokio::time::timeout(TIMEOUT, call).await {
            Ok(Ok(reply)) => reply.status.as_u16(),
            _ => 0,
        };
        self.recorder.record(Op::Write {
            id,
            client: 0,
            key: key.to_string(),
            saw: known.map(|(_, saw)| saw).unwrap_or_default(),
            acked: (200..300).contains(&status),
            delete: false,
            ttl: None,
            refused: false,
        });
        Outcome { id, status }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> usize {
        self.recorder.counts().acked
    }

    /// Reads every key at r=3 through every client; every read must
    /// succeed and all must agree. The key's values, from the first client.
    pub async fn finals(
        &self,
        clients: &[Client],
        keys: &[String],
    ) -> BTreeMap<String, Vec<String>> {
        let mut finals = BTreeMap::new();
        for key in keys {
            let mut seen: Option<Vec<String>> = None;
            for (i, client) in clients.iter().enumerate() {
                let path = format!("{}?r=3", key_path(key));
                let call = client.request(Method::GET, &path, &[], Bytes::new());
                let reply = tokio::time::timeout(TIMEOUT, call)
                    .await
                    .unwrap_or_else(|_| panic!("n{}: the final read of {key} hung", i + 1))
                    .unwrap_or_else(|e| panic!("n{}: the final read of {key}: {e}", i + 1));
                let mut values = read_values(reply.status.as_u16(), &reply.body)
                    .unwrap_or_else(|| panic!("n{}: final read of {key}: {}", i + 1, reply.status));
                values.sort();
                match &seen {
                    Some(first) => assert_eq!(first, &values, "n{} reads {key} differently", i + 1),
                    None => seen = Some(values),
                }
            }
            finals.insert(key.clone(), seen.unwrap_or_default());
        }
        finals
    }

    /// Every lost-write and sibling violation in the history with these
    /// final values, and the number of acknowledged writes checked.
    pub fn check(&self, finals: BTreeMap<String, Vec<String>>) -> (Vec<Violation>, usize) {
        let history: History = self
            .recorder
            .history(finals, chorus::check::record::now_ms());
        let lost = chorus::check::lost_writes::check(&history);
        let (gone, _) = chorus::check::deletes::check(&history);
        let siblings = chorus::check::siblings::check(&history);
        let checked = lost.examined;
        let violations = [lost, gone, siblings]
            .into_iter()
            .flat_map(|v| v.violations)
            .collect();
        (violations, checked)
    }
}
