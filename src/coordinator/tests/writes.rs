//! How a write is minted once, replicated, hinted and retried (issue 19,
//! holes 3, 6 and 7).

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::store::disk::Faults;

fn write_quorum(w: usize) -> Quorum {
    Quorum {
        n: 3,
        r: 2,
        pr: 0,
        w,
        pw: 0,
        dw: 0,
    }
}

fn value(v: &'static [u8], request_id: Option<&str>) -> Write {
    Write {
        context: Context::default(),
        content: Content::Value(Bytes::from_static(v)),
        request_id: request_id.map(str::to_string),
        outbox: None,
    }
}

fn stored(setup: &Setup, node: &str, key: &str) -> Option<SiblingSet> {
    setup.replicas[node].stored(key).expect("stored")
}

/// Hole 3: the first replica asked to mint cannot store at all, the second
/// mints and hands the set on but its fsync fails. The write exists once,
/// under the second's dot: the third replica merges that set and mints
/// nothing (before, it minted the write a second time, and the failed
/// replica's copy, still in its page cache, made a false sibling).
#[tokio::test(start_paused = true)]
async fn a_minter_whose_fsync_fails_is_not_replaced_by_a_second_minter() {
    let setup = setup(Duration::from_millis(10));
    // n1 (the coordinator) is asked first, then the others in preference order.
    let others: Vec<String> = setup
        .cluster
        .routes()
        .preference_list("k")
        .into_iter()
        .filter(|n| n != "n1")
        .collect();
    let (second, third) = (others[0].as_str(), others[1].as_str());
    setup.disks["n1"].set_faults(Faults {
        write_error: Some("EIO"),
        ..Faults::default()
    });
    setup.disks[second].set_faults(Faults {
        failing_syncs: 1,
        ..Faults::default()
    });
    let written = setup
        .coordinator
        .write("k", value(b"1", None), write_quorum(1), deadline(), true)
        .await
        .expect("the third replica holds the write");
    let minter = setup.replicas[second].actor().clone();
    assert_eq!(written.dot.actor, minter, "{second} minted the write");
    let at_third = stored(&setup, third, "k").expect("the third holds the set");
    let dots: Vec<_> = at_third.siblings().iter().map(|s| s.dot.clone()).collect();
    assert_eq!(
        dots,
        std::slice::from_ref(&written.dot),
        "one write, one dot"
    );
    assert_eq!(stored(&setup, "n1", "k"), None, "n1 could not write");
    // The second minted it and kept it in its page cache, under that dot.
    let at_second = stored(&setup, second, "k").expect("it applied the write");
    assert_eq!(at_second.siblings().len(), 1);
    assert_eq!(at_second.siblings()[0].dot, written.dot);
}

/// Hole 3, the other side: a minter whose copy failed counts toward no
/// quorum, so a write that needs it fails.
#[tokio::test(start_paused = true)]
async fn a_minter_that_could_not_keep_its_copy_counts_for_nothing() {
    let setup = setup(Duration::from_millis(10));
    setup.disks["n1"].set_faults(Faults {
        failing_syncs: 1,
        ..Faults::default()
    });
    let err = setup
        .coordinator
        .write("k", value(b"1", None), write_quorum(3), deadline(), true)
        .await
        .expect_err("w=3 cannot be met with n1's copy lost");
    assert!(
        err.to_string().contains("n1: storage failed: fsync"),
        "{err}"
    );
    // n2 and n3 get it all the same: the write is not lost, only not
    // acknowledged.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in ["n2", "n3"] {
        assert!(stored(&setup, node, "k").is_some(), "{node}");
    }
}

/// Hole 7: a primary that fails after the write quorum is met is hinted
/// like one that failed before: the fallback holds the set for it.
#[tokio::test(start_paused = true)]
async fn a_replica_that_fails_after_the_quorum_is_hinted() {
    let setup = setup_with(4, Duration::from_millis(10));
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            setup
                .cluster
                .routes()
                .preference_list(k)
                .first()
                .map(String::as_str)
                == Some("n1")
        })
        .expect("a key n1 coordinates");
    let primaries = setup.cluster.routes().preference_list(&key);
    let late = primaries[2].clone();
    let fallback = setup.cluster.fallbacks(&key)[0].clone();
    setup
        .transport
        .set(&late, Answer::FailAfter(Duration::from_secs(2)));
    let started = Instant::now();
    setup
        .coordinator
        .write(&key, value(b"1", None), write_quorum(2), deadline(), true)
        .await
        .expect("n1 and the other primary acknowledge");
    assert!(started.elapsed() < Duration::from_secs(1), "did not wait");
    assert_eq!(stored(&setup, &fallback, &key), None, "no hint yet");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hinted = stored(&setup, &fallback, &key).expect("the fallback holds a hint");
    assert_eq!(hinted.siblings().len(), 1);
    assert_eq!(setup.replicas[&fallback].hints_pending(), 1);
}

/// Hole 6: a retry (same `Idempotency-Key`) of a write the replicas hold
/// answers only once the quorum the retry asks for holds it; it mints
/// nothing new.
#[tokio::test(start_paused = true)]
async fn an_idempotent_retry_is_counted_to_its_own_quorum() {
    let setup = setup(Duration::from_millis(10));
    for node in ["n2", "n3"] {
        setup.transport.set(node, Answer::Fail);
    }
    let first = setup
        .coordinator
        .write(
            "k",
            value(b"1", Some("req-1")),
            write_quorum(1),
            deadline(),
            true,
        )
        .await
        .expect("n1 alone holds it");
    assert_eq!(stored(&setup, "n2", "k"), None);

    // n3 is still down: a retry at w=3 cannot be met.
    setup.transport.set("n2", Answer::Now);
    let err = setup
        .coordinator
        .write(
            "k",
            value(b"1", Some("req-1")),
            write_quorum(3),
            deadline(),
            true,
        )
        .await
        .expect_err("w=3 with n3 down");
    assert!(err.to_string().contains("of the 3"), "{err}");

    setup.transport.set("n3", Answer::Now);
    let retry = setup
        .coordinator
        .write(
            "k",
            value(b"1", Some("req-1")),
            write_quorum(3),
            deadline(),
            true,
        )
        .await
        .expect("w=3 once every replica answers");
    assert_eq!(retry.dot, first.dot, "the retry is the first write");
    for node in ["n1", "n2", "n3"] {
        let set = stored(&setup, node, "k").expect("held");
        let dots: Vec<_> = set.siblings().iter().map(|s| s.dot.clone()).collect();
        assert_eq!(
            dots,
            std::slice::from_ref(&first.dot),
            "{node}: one write, one dot"
        );
        assert!(set.request("req-1", 0).is_some(), "{node} keeps the record");
    }
}
