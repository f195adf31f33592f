use bytes::Bytes;

use super::*;
use crate::store::MemoryStore;
use crate::version::Actor;

fn replica() -> Replica {
    let store = Arc::new(MemoryStore::new());
    Replica::new(
        store,
        Arc::new(Identity::ephemeral("n1")),
        &Limits::default(),
        true,
        Clock::system(),
    )
}

fn set_of(value: &str) -> SiblingSet {
    let mut set = SiblingSet::new();
    let dot = Dot::new(Actor::new("n9", 1), 1);
    let content = Content::Value(Bytes::from(value.to_string()));
    set.write(&Context::default(), dot, content);
    set
}

/// A batch of the replica's frames is answered in order, one reply per
/// frame; a frame of a service that may not travel in a batch fails
/// alone, and nothing of a batch over the limit runs.
#[tokio::test]
async fn a_batch_is_answered_in_order_one_reply_per_frame() {
    use crate::peer::batch::{Batch, Framed, MAX_BATCH};
    use crate::peer::rpc::reply;
    use crate::peer::{Frame, Rpc, Services};
    let replica = Arc::new(replica());
    let services = Services::new();
    replica.serve(&services);
    let framed = |frame: Frame| Framed {
        service: frame.service.to_string(),
        version: frame.version,
        body: frame.body,
    };
    let merge = rpc::Merge {
        key: "a".into(),
        set: rpc::EncodedSet::encode(&set_of("1")).expect("encode"),
    };
    let read = |key: &str| rpc::Read { key: key.into() };
    let frames = vec![
        framed(Frame::of(&merge).expect("encode")),
        framed(Frame::of(&read("a")).expect("encode")),
        framed(Frame::of(&read("b")).expect("encode")),
        framed(Frame::of(&rpc::Fetch(vec!["a".into()])).expect("encode")),
    ];
    let run = |frames: Vec<Framed>| {
        let frame = Frame::of(&Batch(frames)).expect("encode");
        crate::peer::dispatch(&services, Batch::SERVICE.name, 1, false, frame.body)
    };
    let bytes = run(frames).expect("a batch").await.expect("answered");
    let replies = reply::<Batch>("n1", &bytes).expect("replies");
    assert_eq!(replies.len(), 4);
    let merged = reply::<rpc::Merge>("n1", replies[0].as_ref().expect("merged"));
    assert_eq!(merged.expect("merged"), rpc::Merged { durable: true });
    // Frames in one batch run concurrently: the read of `a` may or may
    // not see the merge, but a read after the batch does.
    let b = reply::<rpc::Read>("n1", replies[2].as_ref().expect("read b"));
    assert_eq!(b.expect("read b"), None);
    let refused = replies[3].as_ref().expect_err("fetch is not batchable");
    assert!(refused.message.contains("batch"), "{refused:?}");
    assert_eq!(replica.stored("a").expect("get"), Some(set_of("1")));
    // A read from a peer is answered with the stored bytes, a read from
    // this node with the set: the same answer either way.
    let frame = Frame::of(&read("a")).expect("encode");
    let bytes = services
        .dispatch(frame.service, frame.version, false, frame.body)
        .expect("dispatched")
        .await
        .expect("answered");
    let local = services.local::<rpc::Read>().expect("registered");
    assert_eq!(
        reply::<rpc::Read>("n1", &bytes).expect("read a"),
        local(read("a")).await.expect("read a here")
    );
    assert_eq!(
        reply::<rpc::Read>("n1", &bytes).expect("read a"),
        Some(set_of("1"))
    );

    let too_many = vec![framed(Frame::of(&read("a")).expect("encode")); MAX_BATCH + 1];
    let e = run(too_many).err().expect("refused whole");
    assert!(e.to_string().contains("at most"), "{e}");
    let merge_c = rpc::v1::Merge {
        key: "c".into(),
        set: set_of("1"),
    };
    let mut too_many = vec![framed(Frame::of(&merge_c).expect("encode"))];
    too_many.extend(vec![
        framed(Frame::of(&read("a")).expect("encode"));
        MAX_BATCH
    ]);
    assert!(run(too_many).is_err());
    assert_eq!(
        replica.stored("c").expect("get"),
        None,
        "a refused batch ran"
    );
}

/// Issue 19, hole 6: a record another replica still holds does not
/// come back through a merge once it has expired; a fresh one does.
#[tokio::test]
async fn an_expired_idempotency_record_does_not_grow_back_through_a_merge() {
    let replica = replica();
    let mut set = set_of("1");
    let dot = set.siblings()[0].dot.clone();
    set.record_request("old", dot.clone(), 1);
    set.record_request("new", dot, crate::clock::system_ms());
    replica
        .handoff(vec![("k".into(), set)])
        .await
        .expect("merge");
    let stored = replica.stored("k").expect("get").expect("stored");
    assert!(
        stored.request("old", 0).is_none(),
        "the expired record came back"
    );
    assert!(stored.request("new", 0).is_some());
}

/// A node hands a key off (the ring moved it away) and drops its copy;
/// the ring moves it back and the node coordinates a blind write before
/// the key's data returns. Minted by the same actor on top of the empty
/// copy, the new dot would claim the first write, which the other
/// replicas hold, and delete it there: the actor is retired on release.
#[tokio::test]
async fn a_write_after_dropping_a_handed_off_key_never_claims_the_dropped_writes() {
    let replica = replica();
    let value = |v: &str| Content::Value(Bytes::from(v.to_string()));
    let Minted {
        set: first,
        durable,
        ..
    } = replica
        .coordinate("k".into(), Context::default(), value("1"), None)
        .await
        .expect("first write");
    durable.wait().await.expect("durable");
    let elsewhere = first.clone();
    assert_eq!(replica.release(vec![("k".into(), first)]).await, 1);
    assert_eq!(replica.stored("k").expect("get"), None);
    let Minted { set: second, .. } = replica
        .coordinate("k".into(), Context::default(), value("2"), None)
        .await
        .expect("second write");
    let mut merged = elsewhere;
    merged.merge(&second);
    assert_eq!(
        merged.siblings().len(),
        2,
        "the second write deleted the first: {merged:?}"
    );
}

/// Every change the replica commits reaches every subscriber, in
/// order, with its cause and the set the key holds after it.
#[tokio::test]
async fn every_committed_change_is_published_with_its_cause() {
    use crate::peer::Services;
    use events::{Cause, Event, Subscriber};

    #[derive(Default)]
    struct Heard(parking_lot::Mutex<Vec<(String, Cause, SiblingSet)>>);
    impl Subscriber for Heard {
        fn changed(&self, e: &Event<'_>) {
            self.0.lock().push((e.key.into(), e.cause, e.set.clone()));
        }
    }

    let replica = Arc::new(replica());
    let (first, second) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
    replica.events().subscribe(first.clone());
    replica.events().subscribe(second.clone());
    let services = Services::new();
    replica.serve(&services);
    let value = Content::Value(Bytes::from_static(b"1"));
    let Minted { durable, .. } = replica
        .coordinate("a".into(), Context::default(), value, None)
        .await
        .expect("coordinated");
    durable.wait().await.expect("durable");
    let merge = services.local::<rpc::Merge>().expect("served");
    let encoded = rpc::EncodedSet::encode(&set_of("2")).expect("encode");
    merge(rpc::Merge {
        key: "b".into(),
        set: encoded,
    })
    .await
    .expect("merged");
    let hint = services.local::<rpc::Hint>().expect("served");
    hint(rpc::Hint {
        owner: "n3".into(),
        key: "c".into(),
        set: set_of("3"),
    })
    .await
    .expect("hinted");
    replica
        .handoff(vec![("d".into(), set_of("4"))])
        .await
        .expect("handed off");
    replica
        .purge(vec![("d".into(), set_of("4"))])
        .await
        .expect("purged");
    let causes: Vec<(String, Cause)> = first
        .0
        .lock()
        .iter()
        .map(|(k, c, _)| (k.clone(), *c))
        .collect();
    let expected = [
        ("a", Cause::Client),
        ("b", Cause::Merge),
        ("c", Cause::Hint),
        ("d", Cause::Handoff),
        ("d", Cause::Purge),
    ];
    assert_eq!(
        causes,
        expected.map(|(k, c)| (k.to_string(), c)).to_vec(),
        "every change, in order"
    );
    for (key, _, set) in first.0.lock().iter() {
        assert_eq!(
            replica.stored(key).expect("get").unwrap_or_default(),
            *set,
            "{key}: the set published is the set stored"
        );
    }
    assert_eq!(first.0.lock().len(), second.0.lock().len());
    // The change log keeps what the replica took part in as it was made
    // (its mint, a coordinator's set, a hint), not a handoff or a purge.
    use crate::store::changes::{Mark, ReadLimits};
    let limits = ReadLimits {
        max_bytes: usize::MAX,
        max_scanned: usize::MAX,
        settle_ms: 0,
    };
    let logged = replica
        .store
        .changes()
        .read(Mark::Since(0), &|_| true, limits, u64::MAX)
        .expect("read the log");
    let keys: Vec<_> = logged.entries.iter().map(|(_, e)| e.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

/// A fetch answers as many sets as fit half the peer message limit
/// (at least one), so its reply never passes the limit the asker reads
/// replies with; `by_bytes` cuts a repair or handoff the same way.
#[tokio::test]
async fn a_fetch_answers_a_prefix_within_the_message_budget() {
    use crate::peer::Services;
    let replica = Arc::new(replica());
    let budget = replica.message_budget();
    assert_eq!(budget, Limits::default().max_peer_message() / 2);
    let big = "x".repeat(1 << 20);
    let keys: Vec<String> = (0..40).map(|i| format!("big-{i}")).collect();
    let entries: Vec<(String, SiblingSet)> =
        keys.iter().map(|k| (k.clone(), set_of(&big))).collect();
    let runs = rpc::by_bytes(entries.clone(), budget);
    assert!(runs.len() >= 2, "40 MiB in one run of {budget} bytes");
    assert!(runs.iter().all(|r| !r.is_empty()));
    let sizes: Vec<usize> = runs
        .iter()
        .map(|r| r.iter().map(|(_, s)| s.value_bytes()).sum())
        .collect();
    assert!(sizes.iter().all(|&b| b <= budget), "{sizes:?}");
    assert_eq!(
        runs.concat(),
        entries,
        "by_bytes kept every entry, in order"
    );
    let alone = rpc::by_bytes(entries[..2].to_vec(), 10);
    assert_eq!(alone.len(), 2, "a set over the budget is a run of its own");
    for run in runs {
        replica.handoff(run).await.expect("stored");
    }
    let services = Services::new();
    replica.serve(&services);
    let fetch = services.local::<rpc::Fetch>().expect("served");
    let answered = fetch(rpc::Fetch(keys.clone())).await.expect("fetched");
    assert!(
        !answered.is_empty() && answered.len() < keys.len(),
        "{} of 40 sets of 1 MiB in one answer within {budget} bytes",
        answered.len()
    );
    let bytes: usize = answered.iter().flatten().map(|s| s.value_bytes()).sum();
    assert!(bytes <= budget, "{bytes} bytes answered");
}

/// A coordinator sends a CRDT update, never a state: a state sent to be
/// minted (only a corrupt peer makes one) is refused and nothing stored.
#[tokio::test]
async fn a_write_carrying_a_crdt_state_is_refused() {
    let replica = replica();
    let state = crate::version::Crdt::new(crate::version::Kind::Counter);
    let refused = replica
        .coordinate_until(
            "c".into(),
            Context::default(),
            Content::Crdt(state),
            None,
            Until::Durable,
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), "protocol_error", "{refused}");
    assert!(replica.store.get("c").expect("read").is_none());
}

/// A write coordinated settled (no other replica to send its set to, or a
/// peer that answers only once it is durable) is durable here when it is
/// answered: its `durable` is ready, on the real engine, whose fsync comes
/// after the set.
#[tokio::test]
async fn a_write_coordinated_settled_is_durable_when_answered() {
    use futures_util::FutureExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = crate::config::StorageConfig::default();
    let store = Arc::new(crate::store::FjallStore::open(dir.path(), &config).expect("open fjall"));
    let replica = Replica::new(
        store,
        Arc::new(Identity::ephemeral("n1")),
        &Limits::default(),
        true,
        Clock::system(),
    );
    for i in 0..20 {
        let value = Content::Value(Bytes::from(format!("\"{i}\"")));
        let minted = replica
            .coordinate_until(
                format!("k{i}"),
                Context::default(),
                value,
                None,
                Until::Durable,
            )
            .await
            .expect("minted");
        let durable = minted.durable.wait().now_or_never();
        assert!(
            matches!(durable, Some(Ok(()))),
            "write {i} answered before its fsync: {durable:?}"
        );
    }
}
