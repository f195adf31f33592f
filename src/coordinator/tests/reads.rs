//! Which replicas a read asks, and when it asks the others.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;

#[tokio::test(start_paused = true)]
async fn a_read_asks_r_replicas_itself_first_and_spreads_the_rest() {
    let setup = setup(Duration::from_millis(10));
    let written = put(&setup, "k", b"1").await;
    for _ in 0..40 {
        assert_eq!(read(&setup, "k", 2, None).await, written);
    }
    let t = &setup.transport;
    assert_eq!(t.reads("n1"), 40, "the coordinator reads itself each time");
    assert_eq!(
        t.reads("n2") + t.reads("n3"),
        40,
        "one other replica per read"
    );
    // Chance 2^-39 that random order sends all 40 to one replica.
    assert!(t.reads("n2") > 0 && t.reads("n3") > 0);

    for _ in 0..10 {
        read(&setup, "k", 1, None).await;
    }
    assert_eq!(t.total_reads(), 90, "r = 1 asks only this node");
}

#[tokio::test(start_paused = true)]
async fn no_speculative_delay_asks_every_replica_at_once() {
    let setup = setup(Duration::ZERO);
    put(&setup, "k", b"1").await;
    for _ in 0..10 {
        read(&setup, "k", 1, None).await;
    }
    for node in ["n1", "n2", "n3"] {
        assert_eq!(setup.transport.reads(node), 10, "{node}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_replica_widens_the_read_to_the_rest() {
    let setup = setup(Duration::from_secs(60));
    let written = put(&setup, "k", b"1").await;
    setup.transport.set("n2", Answer::Fail);
    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(read(&setup, "k", 2, None).await, written);
    }
    // No read waited for the 60 s speculative delay: a failure asks at once.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let t = &setup.transport;
    assert_eq!(t.reads("n3"), 30, "n3 answered every read");
    assert!(t.reads("n2") > 0, "random order asked n2 first sometimes");
}

/// A set a replica answers that breaks its invariants (here a map whose
/// counter field holds a set: only a corrupt peer makes one) fails that
/// replica's answer; it is neither merged nor served.
#[tokio::test(start_paused = true)]
async fn a_replica_answering_a_malformed_set_fails_its_answer() {
    use crate::store::Store;
    use crate::version::crdt::map::{FieldKey, FieldMap, FieldOp};
    use crate::version::{Actor, Crdt, Dot, Kind};
    use crdts::CmRDT;
    let setup = setup(Duration::from_secs(60));
    let written = put(&setup, "k", b"1").await;
    let mut map = FieldMap::new();
    let key = FieldKey {
        name: "n".into(),
        kind: Kind::Counter,
    };
    let actor = Actor::new("n2", 1);
    let add = map.read_ctx().derive_add_ctx(actor.clone());
    let op = map.update(key, add, |_, add| {
        FieldOp::Set(crdts::Orswot::new().add("x".to_string(), add))
    });
    map.apply(op);
    let mut bad = SiblingSet::new();
    bad.write(
        &Context::default(),
        Dot::new(actor, 1),
        Content::Crdt(Crdt::Map(map)),
    );
    setup.stores["n2"]
        .update("k", Box::new(move |_| Ok(bad)))
        .wait()
        .await
        .expect("stored");
    let all = setup
        .coordinator
        .read("k", quorum(3), deadline(), None, true, None)
        .await;
    assert!(all.is_err(), "r = 3 cannot count n2: {all:?}");
    assert_eq!(read(&setup, "k", 2, None).await, written);
}

#[tokio::test(start_paused = true)]
async fn a_slow_replica_is_overtaken_after_the_speculative_delay() {
    let setup = setup(Duration::from_millis(10));
    let written = put(&setup, "k", b"1").await;
    setup
        .transport
        .set("n3", Answer::After(Duration::from_secs(3)));
    for _ in 0..30 {
        let started = Instant::now();
        assert_eq!(read(&setup, "k", 2, None).await, written);
        let took = started.elapsed();
        // Either n2 was asked first (no wait), or n3 was and n2 was asked
        // 10 ms later: never the 3 s n3 takes.
        assert!(took <= Duration::from_millis(11), "a read took {took:?}");
    }
    let t = &setup.transport;
    assert_eq!(t.reads("n2"), 30, "every read ended up asking n2");
    assert!(t.reads("n3") > 0, "random order asked n3 first sometimes");
}

#[tokio::test(start_paused = true)]
async fn a_session_the_first_answers_have_not_seen_asks_the_rest() {
    let setup = setup(Duration::from_secs(60));
    let started = Instant::now();
    for i in 0..30 {
        // A newer write that only n3 holds (the others missed it); one key
        // each, as the read repairs the others.
        let key = format!("k{i}");
        put(&setup, &key, b"1").await;
        let value = Content::Value(Bytes::from_static(b"2"));
        let minted = setup.replicas["n3"].coordinate(key.clone(), Context::default(), value, None);
        let crate::replica::Minted {
            set: newer,
            durable,
            ..
        } = minted.await.expect("n3 mints");
        durable.wait().await.expect("stored");
        let session = Context::read(newer.context().clone());
        let seen = read(&setup, &key, 2, Some(session.clone())).await;
        assert!(
            session.is_seen_by(seen.context()),
            "{key}: the read saw the session"
        );
    }
    // No read waited for the 60 s speculative delay.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let t = &setup.transport;
    assert_eq!(t.reads("n3"), 30, "n3 was asked every time");
    assert!(t.reads("n2") > 0, "random order asked n2 first sometimes");
}
