//! The classic Dynamo loss against real processes: four clients make 1,000
//! read-modify-write adds to one set at r=2, w=2 while one of the three
//! `chorus serve` processes is SIGKILLed and started again on the same data.
//! Every acknowledged add must be in the union of the final siblings, read
//! from every node, once the killed node is back. And watchers and a feed
//! reader waiting on a node that is SIGKILLed carry on through the others.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chorus::client::{Client, key_path};
use common::processes::{Processes, serve};
use common::set_adds::{self, SetAdds};
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_set_adds_survive_a_sigkill_at_r2_w2() {
    let mut cluster = Processes::start(3).await;
    let (path, clients) = (cluster.config.clone(), cluster.clients.clone());
    // Clients 0 and 1 go through n1, 2 and 3 through n2; n3 is killed while
    // it holds a replica of the set and coordinates nothing.
    let writers = (0..4).map(|c| clients[c / 2].clone()).collect();
    let adds = SetAdds::start(writers, "set", 250, "2", "2");
    adds.await_acked(200).await;
    cluster.children[2].start_kill().expect("SIGKILL n3");
    cluster.children[2].wait().await.expect("reap n3");
    adds.await_acked(500).await;
    cluster.children[2] = serve(&path, "n3").await;
    let acked = adds.finish().await;

    // Every node, the restarted one included, answers a quorum read that
    // holds every acknowledged add; at r=3 the read also sees n3's own copy.
    for (i, client) in clients.iter().enumerate() {
        for r in ["2", "3"] {
            let read = client
                .request(
                    Method::GET,
                    &format!("{}?r={r}", key_path("set")),
                    &[],
                    Bytes::new(),
                )
                .await
                .expect("read the set");
            assert!(
                read.status.is_success() || read.status.as_u16() == 300,
                "n{} r={r}: {}",
                i + 1,
                read.status
            );
            set_adds::assert_none_lost(&acked, &set_adds::union(&read), 500);
        }
    }
    cluster.kill_all().await;
}

/// Watchers and a feed reader while the node they wait on is SIGKILLed:
/// the killed node's watchers get an error at once (their connection
/// closes), not a hang; they watch again through another node with the
/// context they had and, like the watchers of the surviving node, are
/// answered by the next write; the feed reader is not left hanging either,
/// resumes through another node from its cursor and finds that write, and
/// through the killed node once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_and_a_feed_reader_carry_on_past_a_sigkilled_node() {
    const WATCHERS: usize = 20;
    let mut cluster = Processes::start(3).await;
    let (path, clients) = (cluster.config.clone(), cluster.clients.clone());
    let first = clients[0].put("w", "1", None).await.expect("put");
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    let seen = common::read_context(&clients[0], "w").await;
    // The third replica's copy lands after the acknowledgement: a cursor
    // taken before it would show it as a change (as it should).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cursor = {
        let page = clients[0].changes("w", "now", 0).await.expect("changes");
        page.json().expect("page")["next"]
            .as_str()
            .expect("next")
            .to_string()
    };
    // Half the watchers wait on n3, half on n1; a feed reader on n3.
    let watch = |client: Client, seen: String| {
        tokio::spawn(async move {
            let path = format!("{}?watch=true&timeout_ms=30000", key_path("w"));
            let headers = [("x-chorus-context", seen.as_str())];
            client
                .request(Method::GET, &path, &headers, Bytes::new())
                .await
        })
    };
    let on_n3: Vec<_> = (0..WATCHERS / 2)
        .map(|_| watch(clients[2].clone(), seen.clone()))
        .collect();
    let on_n1: Vec<_> = (0..WATCHERS / 2)
        .map(|_| watch(clients[0].clone(), seen.clone()))
        .collect();
    let reader = {
        let (client, cursor) = (clients[2].clone(), cursor.clone());
        tokio::spawn(async move { client.changes("w", &cursor, 30_000).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(on_n3.iter().chain(&on_n1).all(|w| !w.is_finished()));

    cluster.children[2].start_kill().expect("SIGKILL n3");
    cluster.children[2].wait().await.expect("reap n3");
    // n3's watchers and reader fail at once, with an error to retry on.
    let mut again = Vec::new();
    for w in on_n3 {
        let ended = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a watcher of the killed node is not left hanging")
            .expect("task");
        assert!(ended.is_err(), "the killed node answered: {ended:?}");
        again.push(watch(clients[1].clone(), seen.clone()));
    }
    // The reader ends too: with an error, or (when the third replica's
    // copy of the first write was logged after the cursor, as a loaded
    // machine makes likely) with that change before the kill.
    let reader = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader is not left hanging")
        .expect("task");
    let resume = match &reader {
        Ok(page) => {
            assert_eq!(page.status, StatusCode::OK, "{page:?}");
            let body = page.json().expect("page");
            body["next"].as_str().expect("next").to_string()
        }
        Err(_) => cursor.clone(),
    };

    // The next write, through n2 (w = 2 of the two left), answers them all.
    let update = clients[1].put("w", "2", Some(&seen)).await.expect("put");
    assert_eq!(update.status, StatusCode::NO_CONTENT);
    let mut answered = 0;
    for w in on_n1.into_iter().chain(again) {
        let reply = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("answered")
            .expect("task")
            .expect("watch");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.json(), Some(serde_json::json!(2)));
        answered += 1;
    }
    assert_eq!(answered, WATCHERS, "every watcher checked");
    // The reader resumes from its cursor through n1 and finds the write.
    let found = clients[0]
        .changes("w", &resume, 20_000)
        .await
        .expect("changes");
    let page = found.json().expect("page");
    let keys: Vec<_> = page["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["key"].clone())
        .collect();
    assert!(keys.contains(&serde_json::json!("w")), "{page}");
    // n3 comes back; the feed goes on through it from the cursor it had.
    cluster.children[2] = serve(&path, "n3").await;
    let next = page["next"].as_str().expect("next").to_string();
    clients[2].put("w2", "1", None).await.expect("put");
    let after = clients[2]
        .changes("w", &next, 20_000)
        .await
        .expect("changes");
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
    let text = String::from_utf8_lossy(&after.body).into_owned();
    assert!(text.contains("\"w2\""), "{text}");
    cluster.kill_all().await;
}
