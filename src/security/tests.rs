use std::collections::HashSet;

use proptest::prelude::*;

use super::peer_auth::{Refusal, Replays, Secret, Stamp, WINDOW};
use super::tokens::{Denied, Scope, Tokens};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn stamp(node: &str, boot: u64, seq: u64, ts_ms: u64) -> Stamp {
    let (len, digest) = Stamp::body(b"body");
    Stamp {
        node: node.into(),
        to: "n2".into(),
        rpc: "replica.merge/1".into(),
        boot,
        seq,
        ts_ms,
        len,
        digest,
    }
}

#[test]
fn a_signed_request_checks_once_and_a_replay_is_refused() {
    let secret = Secret::new(SECRET);
    let s = stamp("n1", 7, 1, 1_000_000);
    let header = secret.sign(&s);
    assert_eq!(secret.check(&header), Ok(s.clone()));
    let mut replays = Replays::new(30_000, 0);
    assert_eq!(replays.admit(&s, 1_000_500), Ok(()));
    assert_eq!(replays.admit(&s, 1_000_600), Err(Refusal::Replayed));
}

#[test]
fn a_wrong_secret_or_a_changed_field_is_a_bad_mac() {
    let secret = Secret::new(SECRET);
    let header = secret.sign(&stamp("n1", 7, 1, 5));
    let other = Secret::new(b"another secret of thirty-two bytes!");
    assert_eq!(other.check(&header), Err(Refusal::BadMac));
    let digest = header
        .split(' ')
        .find_map(|f| f.strip_prefix("digest="))
        .expect("a digest");
    let other_digest = format!("digest={}", "ab".repeat(32));
    for (from, to) in [
        ("seq=1", "seq=2"),
        ("boot=7", "boot=8"),
        ("node=n1", "node=n3"),
        ("to=n2", "to=n3"),
        ("to=n2", "to=*"),
        ("rpc=replica.merge/1", "rpc=replica.hint/1"),
        ("ts=5", "ts=6"),
        ("len=4", "len=5"),
        (&format!("digest={digest}"), &other_digest),
    ] {
        let forged = header.replace(from, to);
        assert_ne!(forged, header, "{from}");
        assert_eq!(secret.check(&forged), Err(Refusal::BadMac), "{forged}");
    }
}

/// A request captured on its way to one node and replayed to another, or
/// to another service, is refused there before its window is touched and
/// before its body is read; one sent to an address passes for any
/// receiver, and the route lets only a join through. The body read must
/// be the one signed.
#[test]
fn a_verifier_lets_through_only_what_was_signed_for_its_node_and_service() {
    use super::peer::{Signer, Verified, Verifier};
    let clock = crate::clock::Clock::system();
    let signer = Signer::new(SECRET, "n1", 1, clock.clone());
    let n2 = Verifier::new("n2", Some(SECRET), 30_000, clock.clone());
    let n3 = Verifier::new("n3", Some(SECRET), 30_000, clock.clone());
    let merge = "replica.merge/1";
    let to_n2 = signer.sign("n2", "replica.merge/1", b"body");
    let head = n2
        .verify_head(Some(to_n2.as_bytes()), merge)
        .expect("signed for n2");
    assert_eq!(head.verified, Verified::ToMe);
    assert_eq!(head.signed_len(), Some(4));
    assert_eq!(n2.verify_body(&head, b"body"), Ok(()));
    assert_eq!(n2.verify_body(&head, b"bodY"), Err(Refusal::BadBody));
    assert_eq!(n2.verify_body(&head, b"body!"), Err(Refusal::BadBody));
    assert_eq!(
        n3.verify_head(Some(to_n2.as_bytes()), merge),
        Err(Refusal::Misdirected)
    );
    let again = signer.sign("n2", "replica.merge/1", b"body");
    assert_eq!(
        n2.verify_head(Some(again.as_bytes()), "replica.hint/1"),
        Err(Refusal::Misrouted)
    );
    let join = "membership.join/1";
    let to_any = signer.sign(super::peer_auth::ANY_RECEIVER, "membership.join/1", b"join");
    let head = n3
        .verify_head(Some(to_any.as_bytes()), join)
        .expect("signed for anyone");
    assert_eq!(head.verified, Verified::ToAny);
    // The replay windows hold for requests to any receiver too.
    assert_eq!(
        n3.verify_head(Some(to_any.as_bytes()), join),
        Err(Refusal::Replayed)
    );
    let open = Verifier::new("n2", None, 30_000, clock);
    let head = open.verify_head(None, "replica.merge/1").expect("open");
    assert_eq!(head.verified, Verified::Open);
    assert_eq!(head.signed_len(), None);
    assert_eq!(open.verify_body(&head, b"anything"), Ok(()));
}

#[test]
fn malformed_headers_are_refused_without_a_panic() {
    let secret = Secret::new(SECRET);
    let d = "00".repeat(32);
    for header in [
        String::new(),
        "node=n1".into(),
        format!("node=n1 to=n2 rpc=- boot=x seq=1 ts=1 len=0 digest={d} mac=00"),
        format!("node=n1 to=n2 rpc=- boot=1 seq=1 ts=1 len=0 digest={d} mac=0"),
        format!("node=n1 to=n2 rpc=- boot=1 seq=1 ts=1 len=0 digest={d} mac=zz"),
        format!("node=n1 to=n2 rpc=- boot=1 seq=0 ts=1 len=0 digest={d} mac=00"),
        format!("node=n1 to=n2 rpc=- boot=1 seq=1 ts=1 len=-1 digest={d} mac=00"),
        "node=n1 to=n2 rpc=- boot=1 seq=1 ts=1 len=0 digest=00 mac=00".into(),
        format!("node= to=n2 rpc=- boot=1 seq=1 ts=1 len=0 digest={d} mac=00"),
        format!("node=n1 to= rpc=- boot=1 seq=1 ts=1 len=0 digest={d} mac=00"),
        format!("node=n1 to=n2 rpc= boot=1 seq=1 ts=1 len=0 digest={d} mac=00"),
        format!("node=n1 to=n2 boot=1 seq=1 ts=1 len=0 digest={d} mac=00"),
        format!("boot=1 node=n1 to=n2 rpc=- seq=1 ts=1 len=0 digest={d} mac=00"),
        "x".repeat(10_000),
    ] {
        assert!(
            matches!(secret.check(&header), Err(Refusal::Malformed(_))),
            "{header:.40}"
        );
    }
}

#[test]
fn timestamps_outside_the_skew_are_stale() {
    let mut replays = Replays::new(30_000, 0);
    let now = 10_000_000;
    assert!(matches!(
        replays.admit(&stamp("n1", 1, 1, now - 30_001), now),
        Err(Refusal::Stale { .. })
    ));
    assert!(matches!(
        replays.admit(&stamp("n1", 1, 2, now + 30_001), now),
        Err(Refusal::Stale { .. })
    ));
    assert_eq!(replays.admit(&stamp("n1", 1, 3, now + 30_000), now), Ok(()));
}

/// A receiver's windows die with it; what it refuses after a restart is
/// everything signed before it started, even a nonce its new windows
/// never saw, while a request signed after is accepted.
#[test]
fn a_stamp_from_before_the_receiver_started_is_refused() {
    let started = 10_000_000;
    let mut replays = Replays::new(30_000, started);
    assert_eq!(
        replays.admit(&stamp("n1", 1, 1, started - 1), started + 5),
        Err(Refusal::BeforeStart)
    );
    assert_eq!(
        replays.admit(&stamp("n1", 1, 2, started), started + 5),
        Ok(())
    );
}

#[test]
fn an_older_boot_is_a_replay_and_a_newer_one_starts_a_new_window() {
    let mut replays = Replays::new(30_000, 0);
    assert_eq!(replays.admit(&stamp("n1", 100, 5, 0), 0), Ok(()));
    assert_eq!(replays.admit(&stamp("n1", 200, 1, 0), 0), Ok(()));
    // The restarted sender's old messages are no good any more.
    assert_eq!(
        replays.admit(&stamp("n1", 100, 6, 0), 0),
        Err(Refusal::Replayed)
    );
    assert_eq!(
        replays.admit(&stamp("n1", 200, 1, 0), 0),
        Err(Refusal::Replayed)
    );
    // Another sender has its own window.
    assert_eq!(replays.admit(&stamp("n2", 100, 1, 0), 0), Ok(()));
}

#[test]
fn senders_are_bounded() {
    let mut replays = Replays::new(30_000, 0);
    for i in 0..super::peer_auth::MAX_SENDERS + 50 {
        assert_eq!(replays.admit(&stamp(&format!("n{i}"), 1, 1, 0), 0), Ok(()));
    }
    assert_eq!(replays.senders(), super::peer_auth::MAX_SENDERS);
}

proptest! {
    /// The window against a model that remembers every nonce: each
    /// (boot, seq) is accepted at most once; a newer boot resets; within a
    /// boot, a seq is accepted iff unseen and within WINDOW of the highest.
    #[test]
    fn the_replay_window_accepts_each_nonce_at_most_once(
        arrivals in prop::collection::vec((0u64..3, 1u64..3000), 1..600),
    ) {
        let mut replays = Replays::new(30_000, 0);
        let mut seen = HashSet::new();
        let (mut boot, mut top) = (0u64, 0u64);
        let mut first = true;
        for (b, seq) in arrivals {
            let got = replays.admit(&stamp("n1", b, seq, 0), 0).is_ok();
            let expected = if first || b > boot {
                true
            } else if b < boot {
                false
            } else {
                !seen.contains(&(b, seq)) && seq + WINDOW > top
            };
            prop_assert_eq!(got, expected, "boot {} seq {} (model boot {} top {})", b, seq, boot, top);
            if got {
                if first || b > boot {
                    boot = b;
                    top = 0;
                    first = false;
                }
                top = top.max(seq);
                seen.insert((b, seq));
            }
        }
    }

    /// Whatever a MAC-holding sender sends in order is accepted exactly once.
    #[test]
    fn in_order_and_shuffled_within_the_window_is_accepted_once(
        count in 1u64..3000,
        swaps in prop::collection::vec((any::<prop::sample::Index>(), 0usize..64), 0..15),
    ) {
        let mut order: Vec<u64> = (1..=count).collect();
        for (at, by) in swaps {
            let i = at.index(order.len());
            let j = (i + by).min(order.len() - 1);
            order.swap(i, j);
        }
        let mut replays = Replays::new(30_000, 0);
        for &seq in &order {
            prop_assert_eq!(replays.admit(&stamp("n1", 1, seq, 0), 0), Ok(()), "seq {}", seq);
        }
        for &seq in order.iter().rev().take(5) {
            prop_assert_eq!(replays.admit(&stamp("n1", 1, seq, 0), 0), Err(Refusal::Replayed));
        }
    }
}

#[test]
fn tokens_authorize_by_scope() {
    let tokens = Tokens::new([
        (
            "app",
            "app-token-0123456789",
            &[Scope::Read, Scope::Write][..],
        ),
        ("ops", "ops-token-0123456789", &[Scope::Admin][..]),
    ]);
    let bearer = |t: &str| format!("Bearer {t}").into_bytes();
    assert_eq!(
        tokens.authorize(Some(&bearer("app-token-0123456789")), &[Scope::Write]),
        Ok("app")
    );
    assert_eq!(
        tokens.authorize(Some(&bearer("app-token-0123456789")), &[Scope::Admin]),
        Err(Denied::Forbidden {
            token: "app".into(),
            needs: Scope::Admin
        })
    );
    assert!(matches!(
        tokens.authorize(None, &[Scope::Read]),
        Err(Denied::Unauthenticated(_))
    ));
    assert!(matches!(
        tokens.authorize(Some(&bearer("app-token-012345678")), &[Scope::Read]),
        Err(Denied::Unauthenticated(_))
    ));
    // The scheme in any case, and more than one space before the token.
    for header in [
        "bearer app-token-0123456789",
        "BEARER app-token-0123456789",
        "bEaReR   app-token-0123456789",
    ] {
        assert_eq!(
            tokens.authorize(Some(header.as_bytes()), &[Scope::Read]),
            Ok("app"),
            "{header}"
        );
    }
    for header in ["Bearer", "Bearer ", "Bearerapp-token-0123456789"] {
        assert!(
            matches!(
                tokens.authorize(Some(header.as_bytes()), &[Scope::Read]),
                Err(Denied::Unauthenticated(_))
            ),
            "{header}"
        );
    }
    assert!(matches!(
        tokens.authorize(Some(b"Basic app-token-0123456789"), &[Scope::Read]),
        Err(Denied::Unauthenticated(_))
    ));
    assert!(matches!(
        tokens.authorize(Some(&[0xff, 0xfe]), &[Scope::Read]),
        Err(Denied::Unauthenticated(_))
    ));
}
