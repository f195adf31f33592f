//! The frames of a peer stream, and the MAC each one carries. Pure: bytes
//! in, messages out.
//!
//! ```text
//! frame   := len:u32 (big-endian, what follows) | kind:u8 | id:u64 | payload | tag?
//! call    := version:u16 | name_len:u8 | name | request bytes
//! reply   := ok:u8 | reply bytes (ok = 1) or a postcard `WireError` (ok = 0)
//! ping, pong: no payload
//! tag     := the first 16 bytes of BLAKE3, keyed by the stream's session
//!            key, over (direction, sequence number, kind..payload)
//! ```
//!
//! The sequence number is implicit: each direction counts its frames from
//! zero, and a receiver checks frame n against the n it expects. So a frame
//! dropped, repeated, reordered or carried over from another stream or
//! direction fails its tag, and the stream is closed. Without a session key
//! (a cluster with no secret) frames carry no tag.
//!
//! A frame longer than the receiver's limit is refused from its first four
//! bytes, before its body is buffered.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::peer::WireError;
use crate::peer::rpc::MAX_SERVICE_NAME;

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;
/// Bytes of a frame's kind and call id.
const HEAD_BYTES: usize = 1 + 8;
/// Bytes of a frame's tag, when the stream has a key.
pub const TAG_BYTES: usize = 16;
/// What a frame adds to the bytes it carries, at most: length, kind, id,
/// version, service name, reply flag and tag.
pub const OVERHEAD: usize = LEN_BYTES + HEAD_BYTES + 2 + 1 + MAX_SERVICE_NAME + TAG_BYTES;

const CALL: u8 = 1;
const REPLY: u8 = 2;
const PING: u8 = 3;
const PONG: u8 = 4;

/// One frame of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A request for `service` at `version`; answered by the reply with
    /// the same id.
    Call {
        id: u64,
        service: Cow<'static, str>,
        version: u16,
        body: Bytes,
    },
    /// The answer to call `id`: the reply's bytes, or why the receiver
    /// refused the call before its handler ran.
    Reply {
        id: u64,
        reply: Result<Bytes, WireError>,
    },
    /// Are you there? Answered by a pong with the same id.
    Ping {
        id: u64,
    },
    Pong {
        id: u64,
    },
}

/// Why a stream's bytes cannot be read: the stream is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("a frame of {len} bytes; at most {max} are taken")]
    TooLarge { len: usize, max: usize },
    #[error("a malformed frame: {0}")]
    Malformed(&'static str),
    #[error("a frame's MAC does not match (changed, dropped, reordered or replayed)")]
    BadTag,
}

/// One direction's MAC state: the session key, which direction, and the
/// sequence number of the next frame.
#[derive(Clone)]
pub struct Seal {
    key: Option<[u8; 32]>,
    direction: u8,
    seq: u64,
}

/// Frames from the side that opened the stream.
pub const OPENER: u8 = 0;
/// Frames from the side that accepted it.
pub const ACCEPTER: u8 = 1;

impl Seal {
    /// The seal of `direction` ([`OPENER`] or [`ACCEPTER`]) under `key`;
    /// `None` for a stream whose frames carry no tag.
    pub fn new(key: Option<[u8; 32]>, direction: u8) -> Seal {
        Seal {
            key,
            direction,
            seq: 0,
        }
    }

    fn tag_len(&self) -> usize {
        if self.key.is_some() { TAG_BYTES } else { 0 }
    }

    /// The tag of the next frame, whose bytes after the length are `body`.
    fn next_tag(&mut self, body: &[u8]) -> Option<[u8; TAG_BYTES]> {
        let key = self.key.as_ref()?;
        let mut hasher = blake3::Hasher::new_keyed(key);
        hasher.update(&[self.direction]);
        hasher.update(&self.seq.to_be_bytes());
        hasher.update(body);
        self.seq += 1;
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_BYTES]);
        Some(tag)
    }
}

/// Appends `message` as one frame to `out`, tagged by `seal`.
pub fn encode(message: &Message, seal: &mut Seal, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    let (kind, id) = match message {
        Message::Call { id, .. } => (CALL, *id),
        Message::Reply { id, .. } => (REPLY, *id),
        Message::Ping { id } => (PING, *id),
        Message::Pong { id } => (PONG, *id),
    };
    out.put_u8(kind);
    out.put_u64(id);
    match message {
        Message::Call {
            service,
            version,
            body,
            ..
        } => {
            // Service names are this build's constants, at most 64 bytes.
            let name = &service.as_bytes()[..service.len().min(MAX_SERVICE_NAME)];
            out.put_u16(*version);
            out.put_u8(name.len() as u8);
            out.put_slice(name);
            out.put_slice(body);
        }
        Message::Reply { reply, .. } => match reply {
            Ok(bytes) => {
                out.put_u8(1);
                out.put_slice(bytes);
            }
            Err(e) => {
                out.put_u8(0);
                // A WireError of strings and numbers always encodes.
                out.put_slice(&postcard::to_allocvec(e).unwrap_or_default());
            }
        },
        Message::Ping { .. } | Message::Pong { .. } => {}
    }
    if let Some(tag) = seal.next_tag(&out[start + LEN_BYTES..]) {
        out.put_slice(&tag);
    }
    let len = (out.len() - start - LEN_BYTES) as u32;
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_be_bytes());
}

/// How many bytes the frame at the front of `buf` needs in all, once its
/// length is there; refused when over `max` (the bytes it may carry, to
/// which the frame's own overhead is added).
pub fn needs(buf: &[u8], max: usize) -> Result<Option<usize>, Broken> {
    if buf.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max + OVERHEAD {
        return Err(Broken::TooLarge {
            len,
            max: max + OVERHEAD,
        });
    }
    Ok(Some(LEN_BYTES + len))
}

/// Takes the next whole frame off the front of `buf`: `None` until all of
/// it is there. `max` bounds the bytes a frame carries.
pub fn decode(buf: &mut BytesMut, max: usize, seal: &mut Seal) -> Result<Option<Message>, Broken> {
    let Some(total) = needs(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(LEN_BYTES);
    let tag_len = seal.tag_len();
    if frame.len() < HEAD_BYTES + tag_len {
        return Err(Broken::Malformed("shorter than its head"));
    }
    let body_len = frame.len() - tag_len;
    if let Some(expected) = seal.next_tag(&frame[..body_len]) {
        // Constant time: a forger learns nothing from how long it took.
        if !constant_time_eq::constant_time_eq(&expected, &frame[body_len..]) {
            return Err(Broken::BadTag);
        }
    }
    frame.truncate(body_len);
    let kind = frame.get_u8();
    let id = frame.get_u64();
    // Copied out, so what is kept never pins the read buffer.
    let rest = |frame: &[u8]| Bytes::copy_from_slice(frame);
    Ok(Some(match kind {
        CALL => {
            if frame.len() < 3 {
                return Err(Broken::Malformed("a call without its service"));
            }
            let version = frame.get_u16();
            let name_len = usize::from(frame.get_u8());
            if name_len > MAX_SERVICE_NAME || frame.len() < name_len {
                return Err(Broken::Malformed("a service name too long"));
            }
            let name = std::str::from_utf8(&frame[..name_len])
                .map_err(|_| Broken::Malformed("a service name not UTF-8"))?
                .to_string();
            frame.advance(name_len);
            Message::Call {
                id,
                service: Cow::Owned(name),
                version,
                body: rest(&frame),
            }
        }
        REPLY => {
            if frame.is_empty() {
                return Err(Broken::Malformed("a reply without its flag"));
            }
            let ok = frame.get_u8();
            let reply = match ok {
                1 => Ok(rest(&frame)),
                0 => Err(postcard::from_bytes(&frame)
                    .map_err(|_| Broken::Malformed("a refusal that does not decode"))?),
                _ => return Err(Broken::Malformed("a reply flag neither 0 nor 1")),
            };
            Message::Reply { id, reply }
        }
        PING | PONG if !frame.is_empty() => {
            return Err(Broken::Malformed("a ping or pong with a payload"));
        }
        PING => Message::Ping { id },
        PONG => Message::Pong { id },
        _ => return Err(Broken::Malformed("an unknown kind")),
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message() -> impl Strategy<Value = Message> {
        let body = proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        prop_oneof![
            (any::<u64>(), "[a-z.]{1,64}", any::<u16>(), body.clone()).prop_map(
                |(id, service, version, body)| Message::Call {
                    id,
                    service: Cow::Owned(service),
                    version,
                    body,
                }
            ),
            (any::<u64>(), body).prop_map(|(id, b)| Message::Reply { id, reply: Ok(b) }),
            (any::<u64>(), any::<u16>(), ".{0,40}", any::<bool>()).prop_map(
                |(id, status, message, retryable)| Message::Reply {
                    id,
                    reply: Err(WireError {
                        status,
                        code: "overloaded".into(),
                        message,
                        retryable,
                    }),
                }
            ),
            any::<u64>().prop_map(|id| Message::Ping { id }),
            any::<u64>().prop_map(|id| Message::Pong { id }),
        ]
    }

    fn key() -> impl Strategy<Value = Option<[u8; 32]>> {
        proptest::option::of(any::<[u8; 32]>())
    }

    proptest! {
        /// Whatever is written is read back, frame by frame and in order,
        /// however the bytes are cut as they arrive.
        #[test]
        fn frames_round_trip_across_any_cuts(
            messages in proptest::collection::vec(message(), 1..8),
            key in key(),
            cut in 1usize..64,
        ) {
            let (mut out, mut write) = (BytesMut::new(), Seal::new(key, OPENER));
            for m in &messages {
                encode(m, &mut write, &mut out);
            }
            let (mut buf, mut read, mut got) = (BytesMut::new(), Seal::new(key, OPENER), vec![]);
            for chunk in out.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(m) = decode(&mut buf, 300, &mut read).expect("a frame") {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, messages);
            prop_assert!(buf.is_empty());
        }

        /// With a key, any changed byte, a frame dropped or repeated, or a
        /// frame read in the other direction is refused.
        #[test]
        fn a_tampered_stream_is_refused(
            messages in proptest::collection::vec(message(), 2..5),
            key in any::<[u8; 32]>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut frames = vec![];
            let mut write = Seal::new(Some(key), OPENER);
            for m in &messages {
                let mut out = BytesMut::new();
                encode(m, &mut write, &mut out);
                frames.push(out);
            }
            let read_all = |bytes: &[u8], direction| {
                let (mut buf, mut seal) = (BytesMut::from(bytes), Seal::new(Some(key), direction));
                let mut n = 0;
                loop {
                    match decode(&mut buf, 300, &mut seal) {
                        Ok(Some(_)) => n += 1,
                        Ok(None) => return Ok(n),
                        Err(e) => return Err(e),
                    }
                }
            };
            let all: Vec<u8> = frames.concat();
            prop_assert_eq!(read_all(&all, OPENER), Ok(messages.len()));
            prop_assert!(read_all(&all, ACCEPTER).is_err(), "the other direction");
            // A bit flipped anywhere past the first length: refused, or (a
            // length made longer) still waiting for bytes that never come.
            let mut flipped = all.clone();
            let at = LEN_BYTES + flip.index(flipped.len() - LEN_BYTES);
            flipped[at] ^= 1 << bit;
            prop_assert_ne!(read_all(&flipped, OPENER), Ok(messages.len()), "a flipped bit at {}", at);
            let dropped: Vec<u8> = frames[1..].concat();
            prop_assert!(read_all(&dropped, OPENER).is_err(), "the first frame dropped");
            let repeated: Vec<u8> = [&frames[0][..], &frames[0][..]].concat();
            prop_assert!(read_all(&repeated, OPENER).is_err(), "a frame repeated");
        }

        /// Bytes that are not frames never panic; they are read as frames
        /// or refused.
        #[test]
        fn noise_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), key in key()) {
            let (mut buf, mut seal) = (BytesMut::from(&bytes[..]), Seal::new(key, ACCEPTER));
            while let Ok(Some(_)) = decode(&mut buf, 100, &mut seal) {}
        }
    }

    /// A frame over the limit is refused from its length alone, before
    /// its body arrives.
    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_length() {
        let mut buf = BytesMut::new();
        buf.put_u32((1000 + OVERHEAD + 1) as u32);
        let e = decode(&mut buf, 1000, &mut Seal::new(None, OPENER)).unwrap_err();
        assert!(matches!(e, Broken::TooLarge { .. }), "{e}");
        let mut ok = BytesMut::new();
        let big = Message::Reply {
            id: 7,
            reply: Ok(Bytes::from(vec![1; 1000])),
        };
        encode(&big, &mut Seal::new(Some([3; 32]), ACCEPTER), &mut ok);
        let back = decode(&mut ok, 1000, &mut Seal::new(Some([3; 32]), ACCEPTER)).expect("a frame");
        assert_eq!(back, Some(big));
    }
}
