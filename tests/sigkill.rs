//! The classic Dynamo loss against real processes: four clients make 1,000
//! read-modify-write adds to one set at r=2, w=2 while one of the three
//! `chorus serve` processes is SIGKILLed and started again on the same data.
//! Every acknowledged add must be in the union of the final siblings, read
//! from every node, once the killed node is back.

mod common;

use bytes::Bytes;
use chorus::client::key_path;
use common::processes::{Processes, serve};
use common::set_adds::{self, SetAdds};
use http::Method;

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
