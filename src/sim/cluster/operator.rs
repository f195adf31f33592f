//! The operator: the membership changes of the schedule that go through
//! the API, made at their time by a client of the simulation as a person
//! at a terminal would (`chorus leave`, `chorus remove`); and a prober that
//! writes blind through every node the moment it is back from a restart
//! (see [`Worker::probe`]).

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::nemesis::{Event, Fault};
use super::net::SimConnector;
use super::workload::Worker;
use crate::client::Client;

/// How often a refused or lost request is tried again, a second apart.
const TRIES: usize = 5;

pub async fn run(
    schedule: Vec<Event>,
    clients: Vec<Client<SimConnector>>,
    names: Vec<String>,
    prober: Worker,
    keys: Vec<String>,
) -> turmoil::Result {
    let started = tokio::time::Instant::now();
    let mut probes = Vec::new();
    for event in schedule {
        let (to, path) = match event.fault {
            Fault::Leave { node } => (node, "/admin/leave".to_string()),
            Fault::Remove { node, via } => (via, format!("/admin/remove/{}", names[node])),
            Fault::Restart { node } if event.at <= prober.until => {
                // Probes run beside the membership changes: a probe of a
                // node that died again at once takes its tries' timeouts,
                // and a removal behind it came after the final check
                // (seed 849: the removed node was still a member of the
                // final ring, its keys unreadable at r=all).
                let (prober, client, keys) = (prober.clone(), clients[node].clone(), keys.clone());
                probes.push(tokio::spawn(async move {
                    tokio::time::sleep_until(started + event.at).await;
                    prober.probe(&client, &keys).await;
                }));
                continue;
            }
            _ => continue,
        };
        tokio::time::sleep_until(started + event.at).await;
        for _ in 0..TRIES {
            let call = clients[to].request(Method::POST, &path, &[], Bytes::new());
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Ok(reply)) if reply.status.is_success() => break,
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    // The host ends with this function and drops what it spawned: a probe
    // cut off there may have sent a write it never recorded (seed 642: a
    // value in the final read that no client wrote).
    for probe in probes {
        let _ = probe.await;
    }
    Ok(())
}
