//! The request records a set keeps for idempotent retries: how they
//! merge and expire, and how a lookup tells a retry (the same request
//! again) from a reuse of its `Idempotency-Key` for another request.

use proptest::prelude::*;

use super::*;

#[test]
fn request_records_merge_by_id_keeping_the_smaller_dot_and_expire_by_age() {
    let (a, b) = (Actor::new("a", 1), Actor::new("b", 2));
    let mut x = SiblingSet::default();
    x.record_request("r1", Dot::new(b.clone(), 4), 100);
    x.record_request("r2", Dot::new(a.clone(), 1), 50);
    let mut y = SiblingSet::default();
    y.record_request("r1", Dot::new(a.clone(), 9), 200);
    y.record_request("r3", Dot::new(b.clone(), 1), 300);
    let mut xy = x.clone();
    xy.merge(&y);
    let mut yx = y.clone();
    yx.merge(&x);
    assert_eq!(xy, yx, "commutative");
    let mut again = xy.clone();
    again.merge(&xy);
    assert_eq!(again, xy, "idempotent");
    // Two attempts raced under one id: every replica keeps the same one.
    assert_eq!(
        xy.request("r1", 0).map(|r| r.dot.clone()),
        Some(Dot::new(a, 9))
    );
    assert!(xy.request("r3", 0).is_some() && xy.is_well_formed());
    // A record older than the cut is expired before any prune.
    assert!(xy.request("r2", 51).is_none());
    assert!(xy.request("r2", 50).is_some());
    xy.expire_requests(150);
    assert!(xy.request("r2", 0).is_none(), "older than the cut");
    assert!(xy.request("r3", 0).is_some());
}

#[test]
fn a_request_is_found_by_its_key_and_a_reuse_by_its_digest() {
    let a = Actor::new("a", 1);
    let mut set = SiblingSet::default();
    // Keys that sort around each other: "k" < "k d" (the space) < "k!" < "kk".
    for (i, id) in ["k!", "kk 00ff", "k 1111", "j 2222", "legacy"]
        .iter()
        .enumerate()
    {
        set.record_request(id, Dot::new(a.clone(), i as u64 + 1), 100);
    }
    assert!(set.is_well_formed());
    let found_in =
        |set: &SiblingSet, id: &str| set.request(id, 0).map(|r| (r.id.clone(), r.reused_by(id)));
    let found = |id: &str| found_in(&set, id);
    assert_eq!(found("k 1111"), Some(("k 1111".into(), false)), "a retry");
    assert_eq!(found("k 9999"), Some(("k 1111".into(), true)), "a reuse");
    assert_eq!(
        found("k"),
        Some(("k 1111".into(), false)),
        "no digest: a retry"
    );
    assert_eq!(
        found("legacy 1234"),
        Some(("legacy".into(), false)),
        "an old record"
    );
    assert_eq!(found("k!"), Some(("k!".into(), false)));
    assert_eq!(found("kk 00ff"), Some(("kk 00ff".into(), false)));
    assert_eq!(found("kj 00ff"), None);
    assert_eq!(found("kkk"), None);
    // Two records of one key (attempts that raced, or a reuse recorded by
    // a node that could not tell): the exact one wins.
    set.record_request("k 2222", Dot::new(a.clone(), 9), 100);
    assert_eq!(found_in(&set, "k 2222"), Some(("k 2222".into(), false)));
    assert_eq!(found_in(&set, "k 1111"), Some(("k 1111".into(), false)));
    assert!(set.request("k 1111", 101).is_none(), "expired");
    // Beside a record without a digest, one with a digest tells a reuse.
    set.record_request("k", Dot::new(a.clone(), 12), 100);
    assert_eq!(found_in(&set, "k").map(|f| f.0), Some("k".to_string()));
    assert_eq!(found_in(&set, "k 9999").map(|f| f.1), Some(true));
    let long = format!(
        "{} {}",
        "x".repeat(MAX_REQUEST_ID),
        "0".repeat(REQUEST_DIGEST_CHARS)
    );
    set.record_request(&long, Dot::new(a.clone(), 10), 100);
    assert!(set.is_well_formed(), "a key and a digest fit");
    set.record_request(&format!("{long}0"), Dot::new(a, 11), 100);
    assert!(!set.is_well_formed(), "longer does not");
}

proptest! {
    /// Whatever keys and digests are recorded, a lookup finds a record
    /// of the key it asks for exactly when one is kept.
    #[test]
    fn a_lookup_finds_a_record_of_its_key_when_there_is_one(
        ids in proptest::collection::vec(("[!-~]{1,4}", proptest::option::of("[0-9a-f]{2}")), 0..20),
        asked in ("[!-~]{1,4}", proptest::option::of("[0-9a-f]{2}")),
    ) {
        let a = Actor::new("a", 1);
        let id = |(key, digest): &(String, Option<String>)| match digest {
            Some(d) => format!("{key} {d}"),
            None => key.clone(),
        };
        let mut set = SiblingSet::default();
        for (i, pair) in ids.iter().enumerate() {
            set.record_request(&id(pair), Dot::new(a.clone(), i as u64 + 1), 7);
        }
        let asked_id = id(&asked);
        let found = set.request(&asked_id, 0);
        let has_key = ids.iter().any(|(key, _)| *key == asked.0);
        prop_assert_eq!(found.is_some(), has_key);
        if let Some(r) = found {
            prop_assert_eq!(request_key(&r.id), asked.0.as_str());
            let exact = ids.iter().any(|pair| id(pair) == asked_id);
            prop_assert!(!exact || r.id == asked_id, "an exact record wins");
        }
    }
}
