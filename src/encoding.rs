//! Postcard bytes built once, at their exact size, and the few facts of
//! postcard's format that let bytes already encoded travel unchanged.
//!
//! Every write encodes its sibling set once (for the disk, the Merkle
//! trees, the row cache and the wire), and every peer message is encoded
//! once. `postcard::to_allocvec` grows its `Vec` from empty, doubling: a
//! set of a hundred-byte value took several allocations and copies, and
//! the row cache then cut the last one to size (issue 21: 2.7% of a
//! three-node PUT's CPU was that growth). Here the size is counted first,
//! a pass that writes nothing, and one buffer of that size is filled.
//!
//! postcard writes an enum's variant as its index (a varint) followed by
//! the variant's fields, and a byte string as its length followed by the
//! bytes. So `Some(x)` is `[1] ++ x`, `None` is `[0]`, and `Ok(x)` is
//! `[0] ++ x`: a replica that holds a set's bytes as stored can answer a
//! read with them, never decoding them, and the asker decodes exactly
//! what it would have had the replica decoded and encoded the set
//! ([`some`]). The tests below hold postcard to that.
use serde::Serialize;

/// `value` as postcard bytes in a buffer of exactly their size.
pub fn to_exact_vec<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(value)?;
    postcard::to_extend(value, Vec::with_capacity(size))
}

/// The postcard bytes of `Option<T>` from the postcard bytes of a `T` (or
/// `None`), after `prefix` (the bytes of whatever encloses the option,
/// such as a `Result`'s `Ok`): one copy, nothing decoded.
pub fn some(prefix: &[u8], encoded: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1 + encoded.map_or(0, <[u8]>::len));
    out.extend_from_slice(prefix);
    match encoded {
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(bytes);
        }
        None => out.push(0),
    }
    out
}

/// The postcard bytes of `Ok::<_, E>(x)` begin with these, then `x`'s.
pub const OK: &[u8] = &[0];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Set {
        values: Vec<Vec<u8>>,
        clock: std::collections::BTreeMap<String, u64>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Failure {
        code: String,
    }

    fn set() -> impl Strategy<Value = Set> {
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4),
            prop::collection::btree_map("[a-z]{1,8}", any::<u64>(), 0..5),
        )
            .prop_map(|(values, clock)| Set { values, clock })
    }

    proptest! {
        #[test]
        fn exact_bytes_are_postcards_bytes_in_a_buffer_of_their_size(set in set()) {
            let exact = to_exact_vec(&set).expect("encodes");
            prop_assert_eq!(exact.len(), exact.capacity());
            prop_assert_eq!(&exact, &postcard::to_allocvec(&set).expect("encodes"));
        }

        /// What a replica answers from stored bytes is what it would have
        /// answered by decoding and encoding them again.
        #[test]
        fn an_answer_built_from_stored_bytes_decodes_as_the_typed_answer(
            set in prop::option::of(set()),
        ) {
            let stored = set.as_ref().map(|s| to_exact_vec(s).expect("encodes"));
            let built = some(OK, stored.as_deref());
            let typed: Result<Option<Set>, Failure> = Ok(set);
            prop_assert_eq!(&built, &postcard::to_allocvec(&typed).expect("encodes"));
            let decoded: Result<Option<Set>, Failure> =
                postcard::from_bytes(&built).expect("decodes");
            prop_assert_eq!(decoded, typed);
        }
    }
}
