//! The end of a run: the final state read through the nodes, and every
//! checker's verdict over the recorded history.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Method;

use super::workload::{CLIENT_TIMEOUT, MAP_FIELDS, MAP_KEYS};
use crate::check::record::{Recorder, crdt_held, read_values, scan_page};
use crate::check::{self, History, Verdict, Violation};
use crate::client::{Client, crdt_path, key_path};
use crate::config::Config;
use crate::ring::{Ring, position};

/// What the final checker client found.
#[derive(Default)]
pub struct Final {
    pub finals: BTreeMap<String, Vec<String>>,
    /// When the final reads began ([`check::record::now_ms`]).
    pub at_ms: u64,
    pub replicas: BTreeMap<String, check::convergence::Held>,
    /// A scan of every key at r=all after the final reads, if it completed.
    pub scan: Option<BTreeMap<String, Vec<String>>>,
    /// What each CRDT key of the workload held, read at r=all.
    pub crdts: BTreeMap<String, check::crdts::Held>,
    pub errors: Vec<Violation>,
}

impl Final {
    /// Whether every replica of every key holds the same set.
    pub fn converged(&self) -> bool {
        check::convergence::check(&self.replicas)
            .violations
            .is_empty()
    }
}

/// Every checker over a recorded history and the final state, and the
/// history: one verdict per checker, then `liveness` for what the final
/// state could not be read for.
pub fn verdicts(recorder: &Recorder, found: Final) -> (History, Vec<Verdict>) {
    let mut history = recorder.history(found.finals, found.at_ms);
    history.final_scan = found.scan;
    history.crdts.finals = found.crdts;
    let (deletes, _) = check::deletes::check(&history);
    let verdicts = vec![
        check::lost_writes::check(&history),
        deletes,
        check::convergence::check(&found.replicas),
        check::sessions::check(&history),
        check::siblings::check(&history),
        check::expiry::check(&history),
        check::conditions::check(&history),
        check::scans::check(&history),
        check::crdts::check(&history),
        Verdict {
            checker: "liveness",
            examined: found.replicas.len(),
            violations: found.errors,
        },
    ];
    (history, verdicts)
}

/// After the settle: every key read at r=all, and every replica's own set
/// (`clients[i]` talks to `config.nodes[i]`).
/// The replicas asked are each key's preference list on `ring`.
pub async fn final_state<C>(
    config: &Config,
    ring: &Ring,
    clients: &[Client<C>],
    keys: &[String],
) -> Final
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut out = Final {
        at_ms: check::record::now_ms(),
        ..Final::default()
    };
    let crdt_keys = super::workload::crdt_keys();
    let all = keys
        .iter()
        .map(|k| (k, false))
        .chain(crdt_keys.iter().map(|k| (k, true)));
    for (k, (key, crdt)) in all.enumerate() {
        let path = match crdt {
            false => format!("{}?r=all", key_path(key)),
            true => format!("{}?r=all", crdt_path(key)),
        };
        let mut read = None;
        for attempt in 0..5 {
            let client = &clients[(k + attempt) % clients.len()];
            let call = client.request(Method::GET, &path, &[], Bytes::new());
            if let Ok(Ok(reply)) = tokio::time::timeout(CLIENT_TIMEOUT, call).await {
                let (status, body) = (reply.status.as_u16(), &reply.body);
                let done = match crdt {
                    false => read_values(status, body).map(|v| {
                        out.finals.insert(key.clone(), v);
                    }),
                    true => {
                        crdt_held(status, body).map(|held| match MAP_KEYS.contains(&key.as_str()) {
                            true => out.crdts.extend(held.fields(key, &MAP_FIELDS)),
                            false => {
                                out.crdts.insert(key.clone(), held);
                            }
                        })
                    }
                };
                if done.is_some() {
                    read = Some(());
                    break;
                }
            }
        }
        if read.is_none() {
            out.errors
                .push(failed(key, "the final read at r=all failed 5 times".into()));
        }
        let mut held = Vec::new();
        for replica in ring.preference_list(position(key.as_bytes()), config.cluster.n) {
            let Some(i) = config.nodes.iter().position(|n| n.id == replica) else {
                continue;
            };
            let path = format!("/admin/replica/{}", &key_path(key)["/kv/".len()..]);
            let call = clients[i].request(Method::GET, &path, &[], Bytes::new());
            match tokio::time::timeout(CLIENT_TIMEOUT, call).await {
                Ok(Ok(reply)) if reply.status == 200 => {
                    held.push((replica.to_string(), Some(reply.body.to_vec())))
                }
                Ok(Ok(reply)) if reply.status == 404 => held.push((replica.to_string(), None)),
                _ => out
                    .errors
                    .push(failed(key, format!("{replica} did not show its replica"))),
            }
        }
        out.replicas.insert(key.clone(), held);
    }
    out.scan = final_scan(clients).await.map(|mut scan| {
        // Another workload's keys (the nemesis runs two at once) are not
        // this history's to judge.
        scan.retain(|key, _| keys.contains(key));
        scan
    });
    out
}

/// Every key at r=all, in pages of 4 so that a run's few keys take several
/// pages; a failed page starts the scan again through the next node, at
/// most 5 times.
async fn final_scan<C>(clients: &[Client<C>]) -> Option<BTreeMap<String, Vec<String>>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    'attempt: for attempt in 0..5 {
        let client = &clients[attempt % clients.len()];
        let (mut found, mut cursor) = (BTreeMap::new(), None::<String>);
        for _page in 0..1000 {
            let path = match &cursor {
                Some(c) => format!("/kv?r=all&limit=4&cursor={c}"),
                None => "/kv?r=all&limit=4".to_string(),
            };
            let call = client.request(Method::GET, &path, &[], Bytes::new());
            let Ok(Ok(reply)) = tokio::time::timeout(CLIENT_TIMEOUT, call).await else {
                continue 'attempt;
            };
            let Some((items, next)) = scan_page(reply.status.as_u16(), &reply.body) else {
                continue 'attempt;
            };
            for (key, values) in items {
                // Twice in one scan: kept as a value no client wrote, which
                // the checker reports.
                if found.insert(key.clone(), values).is_some() {
                    found.insert(key, vec!["(returned twice)".to_string()]);
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Some(found),
            }
        }
    }
    None
}

fn failed(key: &str, message: String) -> Violation {
    Violation {
        checker: "liveness",
        key: key.to_string(),
        message,
    }
}
