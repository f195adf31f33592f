//! Everything that decodes bytes a client or a peer sent, fed arbitrary
//! and damaged input: the context header, the node-to-node messages, the
//! stored sibling sets (through the same postcard decoding), and the
//! config file. Each must answer with an error, never panic, and never
//! believe a length prefix it has no bytes for.

use bytes::Bytes;
use chorus::config::Config;
use chorus::peer::batch::Batch;
use chorus::peer::rpc::reply;
use chorus::replica::rpc::{EncodedSet, Fetch, Handoff, Merge, Purge, Read, v1};
use chorus::version::context::Seal;
use chorus::version::{Actor, Content, Context, Dot, SiblingSet};
use proptest::prelude::*;

fn seal() -> Seal {
    Seal::new("decoders", Some(b"a secret of 32 bytes or more......"))
}

/// A sibling set built by real writes: `writes` of (actor, value, saw-all).
fn set_of(writes: &[(u8, u16, bool)]) -> SiblingSet {
    let mut set = SiblingSet::new();
    let mut counters = [0u64; 4];
    for &(actor, value, saw) in writes {
        let a = usize::from(actor % 4);
        counters[a] += 1;
        let dot = Dot::new(Actor::new(format!("n{a}"), 7 + a as u64), counters[a]);
        let ctx = if saw {
            Context::read(set.context().clone())
        } else {
            Context::default()
        };
        set.write(&ctx, dot, Content::Value(Bytes::from(value.to_string())));
    }
    set
}

fn writes() -> impl Strategy<Value = Vec<(u8, u16, bool)>> {
    prop::collection::vec((any::<u8>(), any::<u16>(), any::<bool>()), 0..12)
}

proptest! {
    #[test]
    fn any_context_header_decodes_or_is_refused(text in ".{0,300}") {
        let _ = Context::decode(&text, &seal(), "k");
    }

    #[test]
    fn contexts_round_trip_and_damage_is_refused(w in writes(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let ctx = Context::read(set_of(&w).context().clone());
        let text = ctx.encode(&seal(), "k");
        prop_assert_eq!(Context::decode(&text, &seal(), "k").ok(), Some(ctx.clone()));
        // Another cluster's context is refused.
        prop_assert!(Context::decode(&text, &Seal::new("elsewhere", None), "k").is_err());
        // So is the context of another key.
        prop_assert!(Context::decode(&text, &seal(), "other").is_err());
        // A strict prefix never decodes to the same context.
        let short = &text[..cut.index(text.len().max(1))];
        prop_assert_ne!(Context::decode(short, &seal(), "k").ok(), Some(ctx.clone()));
        // A changed character decodes to an error or to some context, never a panic.
        let mut bytes = text.into_bytes();
        let at = flip.index(bytes.len().max(1));
        if let Some(b) = bytes.get_mut(at) {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        let _ = Context::decode(&String::from_utf8_lossy(&bytes), &seal(), "k");
    }

    #[test]
    fn any_bytes_decode_as_a_peer_message_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(merge) = postcard::from_bytes::<Merge>(&bytes) {
            // The set inside is bytes too, decoded by the receiver.
            let _ = merge.set.decode();
        }
        let _ = postcard::from_bytes::<v1::Merge>(&bytes);
        let _ = postcard::from_bytes::<Handoff>(&bytes);
        let _ = postcard::from_bytes::<Batch>(&bytes);
        let _ = reply::<Read>("n2", &bytes);
        let _ = reply::<Batch>("n2", &bytes);
    }

    #[test]
    fn peer_messages_round_trip_and_every_truncation_is_an_error(w in writes(), keys in prop::collection::vec("[a-z]{0,12}", 0..6)) {
        let set = set_of(&w);
        let entries: Vec<(String, SiblingSet)> = keys.iter().map(|k| (k.clone(), set.clone())).collect();
        let key = keys.first().cloned().unwrap_or_default();
        let encoded = EncodedSet::encode(&set).expect("encode");
        prop_assert_eq!(&encoded.decode().expect("decode"), &set);
        round_trip(&Merge { key: key.clone(), set: encoded })?;
        round_trip(&v1::Merge { key, set: set.clone() })?;
        round_trip(&Handoff(entries.clone()))?;
        round_trip(&Fetch(keys.clone()))?;
        round_trip(&Purge(entries))?;
        // A reply, as the sender decodes it.
        let answer: Result<Option<SiblingSet>, chorus::peer::WireError> = Ok(Some(set.clone()));
        let bytes = postcard::to_allocvec(&answer).expect("encode");
        prop_assert_eq!(reply::<Read>("n2", &bytes).expect("decode"), Some(set));
        for cut in 0..bytes.len() {
            prop_assert!(reply::<Read>("n2", &bytes[..cut]).is_err());
        }
    }

    #[test]
    fn any_config_text_parses_or_names_its_problem(text in "[a-z_\\[\\]=\" 0-9.\n]{0,400}") {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// A message, encoded, decodes to itself, and every truncation of it is an
/// error.
fn round_trip<T>(message: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = postcard::to_allocvec(message).expect("encode");
    prop_assert_eq!(&postcard::from_bytes::<T>(&bytes).expect("decode"), message);
    for cut in 0..bytes.len() {
        prop_assert!(
            postcard::from_bytes::<T>(&bytes[..cut]).is_err(),
            "{} of {} bytes decoded",
            cut,
            bytes.len()
        );
    }
    Ok(())
}

/// A length prefix claiming far more entries than there are bytes: an
/// error at once, with no allocation of the claimed size.
#[test]
fn a_huge_length_prefix_is_refused_without_trusting_it() {
    // The Vec's varint length: claim 2^62 keys.
    let mut hostile = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
    hostile.extend(b"\x01a");
    assert!(postcard::from_bytes::<Fetch>(&hostile).is_err());
    assert!(postcard::from_bytes::<Batch>(&hostile).is_err());
    // The same for a key claiming to be 2^62 bytes long.
    let mut hostile = vec![1];
    hostile.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    hostile.extend(b"abc");
    assert!(postcard::from_bytes::<Fetch>(&hostile).is_err());
}

/// Every config in `config/` and a broken copy of each: the first parse
/// and validate, the second is refused with the key named.
#[test]
fn the_shipped_configs_parse_and_a_wrong_type_names_the_key() {
    for entry in std::fs::read_dir("config").expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("read");
            let config = Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            config
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let broken = text.replacen("n = 3", "n = \"three\"", 1);
            if broken != text {
                let error = Config::parse(&broken)
                    .expect_err("a string for n")
                    .to_string();
                assert!(error.contains('n'), "{error}");
            }
        }
    }
}
