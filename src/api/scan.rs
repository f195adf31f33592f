//! `GET /kv`: the keys of a range, in bytewise order, a page at a time.
//!
//! Parameters: `prefix`, `start` (inclusive), `end` (exclusive), `limit`
//! (1 to 1,000, default 100), `cursor` (the `next` of the page before),
//! `keys_only`, and `r` and `timeout_ms` as a GET takes them. The answer
//! is `{"items": [...], "next": cursor | null}`: each item is a key with
//! its value (or its siblings) and its context, as a GET of it would say;
//! deleted and expired keys are absent. `next` is null once the range is
//! done; a page may hold fewer than `limit` items and still have a `next`
//! (the coordinator's merge ends a page where the replicas' answers stop
//! being complete: `coordinator/scan.rs`).
//!
//! The cursor is sealed like a context and bound to the scan: it names
//! the key after which the next page starts, under a MAC over the scan's
//! `prefix`, `start` and `end` and the cluster's seal, so a cursor from
//! another scan, another cluster, or edited by hand is a 400.
//!
//! Bounds: `limit` keys per page; the answer's bytes at
//! `limits.max_batch_bytes`, its cursor included (a page is cut before the
//! item that would pass it, and always holds at least one item).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, BytesMut};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Api;
use super::kv::params;
use super::response::{self, Body};
use crate::coordinator::scan::{Page, after};
use crate::error::{Error, Result};
use crate::replica::rpc::MAX_SCAN_KEYS;
use crate::store::KeyRange;
use crate::version::Context;
use crate::version::context::Seal;

/// The page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 100;

/// The first byte of every cursor: the format.
const CURSOR_FORMAT: u8 = 0x53;

/// The parameters of a scan, as the client sent them.
#[derive(Debug, Default)]
struct Scan {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    keys_only: bool,
}

impl Scan {
    /// The keys the whole scan covers: `[start, end)` within the prefix.
    fn range(&self) -> KeyRange {
        let mut start = self.start.clone().unwrap_or_default().into_bytes();
        let mut end = self.end.clone().map(String::into_bytes);
        if let Some(prefix) = &self.prefix {
            start = start.max(prefix.clone().into_bytes());
            end = match (end, prefix_end(prefix.as_bytes())) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        KeyRange { start, end }
    }

    /// What the cursor is bound to: the scan, not its page size.
    fn identity(&self) -> String {
        format!(
            "scan prefix={:?} start={:?} end={:?}",
            self.prefix, self.start, self.end
        )
    }
}

/// The first byte string after every key that starts with `prefix`; none
/// when every key from the prefix on starts with it (a prefix of 0xff
/// bytes, which UTF-8 never has, or the empty prefix).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    let (scan, rest) = parse(api, req.uri().query())?;
    let p = params(api, rest.as_deref(), &["r", "timeout_ms"])?;
    let mut keys = scan.range();
    if let Some(cursor) = &scan.cursor {
        let from = open_cursor(cursor, &api.seal, &scan.identity())?;
        keys.start = keys.start.max(from);
    }
    let limit = scan.limit.unwrap_or(DEFAULT_LIMIT);
    let page = api
        .coordinator
        .scan(keys, limit, p.quorum.r, p.deadline)
        .await?;
    let body = encode(api, &scan, page);
    Ok(response::json(StatusCode::OK, body.freeze()))
}

/// The scan's own parameters, and the query left for `r` and `timeout_ms`.
fn parse(api: &Api, query: Option<&str>) -> Result<(Scan, Option<String>)> {
    let mut scan = Scan::default();
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let key = |name: &str, value: &str| -> Result<String> {
        if value.len() > api.limits.max_key_bytes {
            return Err(Error::bad_parameter(
                name,
                format!(
                    "longer than a key may be (limits.max_key_bytes = {})",
                    api.limits.max_key_bytes
                ),
            ));
        }
        Ok(value.to_string())
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "prefix" => scan.prefix = Some(key("prefix", &value)?),
            "start" => scan.start = Some(key("start", &value)?),
            "end" => scan.end = Some(key("end", &value)?),
            "cursor" => scan.cursor = Some(value.into_owned()),
            "limit" => {
                let limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_SCAN_KEYS).contains(n))
                    .ok_or_else(|| {
                        Error::bad_parameter(
                            "limit",
                            format!("`{value}` is not a number of keys from 1 to {MAX_SCAN_KEYS}"),
                        )
                    })?;
                scan.limit = Some(limit);
            }
            "keys_only" => {
                scan.keys_only = match value.as_ref() {
                    "true" | "" => true,
                    "false" => false,
                    other => {
                        return Err(Error::bad_parameter(
                            "keys_only",
                            format!("`{other}` is not true or false"),
                        ));
                    }
                }
            }
            "r" | "timeout_ms" => {
                rest.append_pair(&name, &value);
            }
            other => {
                return Err(Error::bad_parameter(
                    other,
                    "unknown parameter; GET /kv takes: prefix, start, end, limit, cursor, keys_only, r, timeout_ms",
                ));
            }
        }
    }
    let rest = rest.finish();
    Ok((scan, (!rest.is_empty()).then_some(rest)))
}

/// The answer: every item, cut before the one that would take the body
/// past `limits.max_batch_bytes`, and the cursor of the next page.
fn encode(api: &Api, scan: &Scan, page: Page) -> BytesMut {
    // Room for what follows the items: `],"next":`, the cursor (the last
    // key and a zero byte, the format and the seal, in base64) and `}`.
    let tail = 16 + (api.limits.max_key_bytes + 1 + 1 + 16) * 4 / 3 + 4;
    let max = api.limits.max_batch_bytes.saturating_sub(tail);
    let mut out = BytesMut::with_capacity(64 * page.items.len() + 32);
    out.put_slice(br#"{"items":["#);
    let mut next = page.next;
    let mut previous: Option<String> = None;
    for (i, (key, set)) in page.items.into_iter().enumerate() {
        let before = out.len();
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(br#"{"key":"#);
        response::put_json_str(&mut out, &key);
        if !scan.keys_only {
            if let [only] = set.siblings()
                && let Some(v) = only.content.value()
            {
                out.put_slice(br#","value":"#);
                out.put_slice(v);
                response::put_expires(&mut out, only.content.expires_ms());
            } else if let Some(state) = set.crdt() {
                // A CRDT key: its state, folded (its context is a plain
                // key's; `GET /crdt` gives the one a remove takes).
                out.put_slice(br#","crdt":"#);
                response::put_crdt(&mut out, &state);
            } else {
                out.put_slice(br#","siblings":"#);
                response::put_siblings(&mut out, &set);
            }
            // Base64url: a JSON string as it is, no escaping to look for.
            let context = Context::read(set.into_context()).encode(&api.seal, &key);
            out.put_slice(br#","context":""#);
            out.put_slice(context.as_bytes());
            out.put_u8(b'"');
        }
        out.put_u8(b'}');
        if i > 0 && out.len() > max {
            out.truncate(before);
            next = previous.as_deref().map(after);
            break;
        }
        previous = Some(key);
    }
    out.put_slice(br#"],"next":"#);
    match next {
        Some(from) => {
            response::put_json_str(&mut out, &seal_cursor(&from, &api.seal, &scan.identity()))
        }
        None => out.put_slice(b"null"),
    }
    out.put_u8(b'}');
    out
}

/// The cursor of the page that starts at `from`, for the scan `scan`.
fn seal_cursor(from: &[u8], seal: &Seal, scan: &str) -> String {
    let mut raw = Vec::with_capacity(from.len() + 24);
    raw.push(CURSOR_FORMAT);
    raw.extend_from_slice(from);
    let tag = seal.tag(&raw, scan);
    raw.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Where the page a cursor names starts; a 400 for any cursor this cluster
/// did not seal for this scan.
fn open_cursor(text: &str, seal: &Seal, scan: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::bad_parameter("cursor", why.to_string());
    // The longest key any node takes (a node's own limit may be lower
    // than the one that issued the cursor), its zero byte, the format and
    // the tag, in base64.
    if text.len() > (crate::config::MAX_KEY_BYTES + 1 + 1 + 16) * 4 / 3 + 4 {
        return Err(bad("longer than any cursor this node hands out"));
    }
    let raw = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| bad("not base64url"))?;
    let tag_at = raw
        .len()
        .checked_sub(16)
        .filter(|&at| at >= 1 && raw[0] == CURSOR_FORMAT)
        .ok_or_else(|| bad("not a cursor of this node's format"))?;
    let (sealed, tag) = raw.split_at(tag_at);
    let expected = seal.tag(sealed, scan);
    if !constant_time_eq::constant_time_eq(&expected, tag) {
        return Err(bad(
            "not sealed for this scan: it was issued for another prefix, start or end, by another cluster, or changed; start the scan again without it",
        ));
    }
    Ok(sealed[1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let scan = Scan {
            prefix: Some("user/".into()),
            start: Some("user/m".into()),
            end: Some("zzz".into()),
            ..Scan::default()
        };
        assert_eq!(
            scan.range(),
            KeyRange {
                start: b"user/m".to_vec(),
                end: Some(b"user0".to_vec())
            }
        );
    }

    #[test]
    fn a_cursor_opens_only_for_its_own_scan_and_cluster() {
        let seal = Seal::new("c1", None);
        let cursor = seal_cursor(b"k17\0", &seal, "scan a");
        assert_eq!(
            open_cursor(&cursor, &seal, "scan a").expect("opens"),
            b"k17\0"
        );
        assert!(
            open_cursor(&cursor, &seal, "scan b").is_err(),
            "another scan"
        );
        let other = Seal::new("c2", None);
        assert!(
            open_cursor(&cursor, &other, "scan a").is_err(),
            "another cluster"
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&cursor).expect("base64");
        raw[2] ^= 1;
        let edited = URL_SAFE_NO_PAD.encode(raw);
        assert!(open_cursor(&edited, &seal, "scan a").is_err(), "edited");
        for junk in ["", "!!", "AAAA", &"A".repeat(100_000)] {
            let e = open_cursor(junk, &seal, "scan a").expect_err(junk);
            assert_eq!(e.code(), "bad_parameter");
        }
    }
}
