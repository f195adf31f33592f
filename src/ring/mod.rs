//! The ring: where keys sit on the 64-bit hash circle.
//!
//! Only the stable key hash lives here so far; placement, tokens and the
//! Chord routing state arrive with the cluster. The hash must never change
//! between versions or platforms: storage layout, Merkle ranges and placement
//! all depend on it.

/// A point on the ring.
pub type Position = u64;

/// The ring position of a key: the first eight bytes of its blake3 hash, big-endian.
pub fn position(key: &[u8]) -> Position {
    let hash = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_stable() {
        // Pinned: changing the hash would misplace every stored key.
        assert_eq!(position(b""), 0xaf13_49b9_f5f9_a1a6);
        assert_ne!(position(b"a"), position(b"b"));
    }
}
