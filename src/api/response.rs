//! Building responses: JSON errors, JSON bodies, sibling sets.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::Error;
use crate::version::context::Seal;
use crate::version::{Content, Context, Crdt, SiblingSet, View};

pub type Body = Full<Bytes>;

pub const CONTEXT_HEADER: &str = "x-chorus-context";
/// The quorum a request ran with: `n=3 r=2 w=2 overlap=true`.
pub const QUORUM_HEADER: &str = "x-chorus-quorum";
/// When a value written with a TTL expires (RFC 3339, UTC).
pub const EXPIRES_HEADER: &str = "x-chorus-expires";
const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// `{"error": code, "message": what and how to fix}` with the error's status.
pub fn error(e: &Error) -> Response<Body> {
    let mut body = serde_json::json!({ "error": e.code(), "message": e.to_string() });
    if let Error::QuorumNotMet {
        needed,
        acked,
        primary_acked,
        failed,
    } = e
    {
        body["needed"] = (*needed).into();
        body["acked"] = (*acked).into();
        body["primary_acked"] = (*primary_acked).into();
        body["failed"] = failed
            .iter()
            .map(|(node, reason)| serde_json::json!({ "node": node, "reason": reason }))
            .collect();
    }
    if let Error::CursorExpired { next } = e {
        body["next"] = next.as_str().into();
    }
    let mut response = json(e.status(), Bytes::from(body.to_string()));
    match e {
        Error::MethodNotAllowed { allowed, .. } => {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allowed));
        }
        Error::Overloaded { .. } => {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Error::Unauthenticated(_) => {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chorus\""),
            );
        }
        _ => {}
    }
    response
}

/// Sets `X-Chorus-Context` (base64url, always a valid header value).
pub fn set_context(response: &mut Response<Body>, context: &Context, seal: &Seal, key: &str) {
    if let Ok(value) = HeaderValue::from_str(&context.encode(seal, key)) {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
}

pub fn not_found_key() -> Response<Body> {
    let body = r#"{"error":"not_found","message":"no value is stored under this key"}"#;
    json(StatusCode::NOT_FOUND, Bytes::from_static(body.as_bytes()))
}

/// A live sibling set as a client sees it: 200 with the value when there is
/// one sibling, 300 with every sibling when there are several, 404 when all
/// are tombstones. Stored values are spliced in as they are, never re-encoded.
pub fn siblings(set: &SiblingSet) -> Response<Body> {
    if set.is_deleted() {
        return not_found_key();
    }
    if let [only] = set.siblings()
        && let Some(v) = only.content.value()
    {
        let mut response = json(StatusCode::OK, v.clone());
        if let Some(at) = only.content.expires_ms() {
            set_expires(&mut response, at);
        }
        return response;
    }
    let mut out = BytesMut::with_capacity(set.value_bytes() + 16 * set.siblings().len() + 16);
    out.put_slice(br#"{"siblings":"#);
    put_siblings(&mut out, set);
    out.put_u8(b'}');
    json(StatusCode::MULTIPLE_CHOICES, out.freeze())
}

/// The siblings of `set` as a JSON array: `[{"value":…},{"deleted":true},…]`.
pub fn put_siblings(out: &mut BytesMut, set: &SiblingSet) {
    out.put_u8(b'[');
    for (i, s) in set.siblings().iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        match &s.content {
            Content::Value(v) => {
                out.put_slice(br#"{"value":"#);
                out.put_slice(v);
                out.put_u8(b'}');
            }
            Content::Expiring { value, expires_ms } => {
                out.put_slice(br#"{"value":"#);
                out.put_slice(value);
                out.put_slice(br#","expires":""#);
                out.put_slice(rfc3339(*expires_ms).as_bytes());
                out.put_slice(br#""}"#);
            }
            Content::Tombstone => out.put_slice(br#"{"deleted":true}"#),
            Content::Crdt(state) => {
                out.put_slice(br#"{"crdt":"#);
                put_crdt(out, state);
                out.put_u8(b'}');
            }
            // Never stored (`SiblingSet::is_well_formed`).
            Content::Update(_) => out.put_slice(br#"{"update":true}"#),
        }
    }
    out.put_u8(b']');
}

/// A CRDT state as clients see it: `{"type":"counter","value":12}` (a
/// JSON number of any size), `{"type":"set","value":["a","b"]}` (members
/// in order), `{"type":"map","value":{"visits":{"type":"counter",
/// "value":3}}}` (fields by name, each shown as its type is).
pub fn put_crdt(out: &mut BytesMut, state: &Crdt) {
    put_view(out, &state.view());
}

fn put_view(out: &mut BytesMut, view: &View) {
    out.put_slice(br#"{"type":""#);
    out.put_slice(view.kind().name().as_bytes());
    out.put_slice(br#"","value":"#);
    match view {
        View::Counter(digits) => out.put_slice(digits.as_bytes()),
        View::Set(members) => {
            out.put_u8(b'[');
            for (i, member) in members.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                put_json_str(out, member);
            }
            out.put_u8(b']');
        }
        View::Map(fields) => {
            out.put_u8(b'{');
            for (i, (name, field)) in fields.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                put_json_str(out, name);
                out.put_u8(b':');
                put_view(out, field);
            }
            out.put_u8(b'}');
        }
    }
    out.put_u8(b'}');
}

/// `ms` since the Unix epoch as an RFC 3339 instant in UTC, to the
/// millisecond: `2026-12-06T05:50:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(format).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_string())
}

/// Sets `X-Chorus-Expires` to the instant `ms`.
pub fn set_expires(response: &mut Response<Body>, ms: u64) {
    if let Ok(value) = HeaderValue::from_str(&rfc3339(ms)) {
        response.headers_mut().insert(EXPIRES_HEADER, value);
    }
}

/// `,"expires":"<RFC 3339>"` when there is an instant.
pub fn put_expires(out: &mut BytesMut, expires: Option<u64>) {
    if let Some(at) = expires {
        out.put_slice(br#","expires":"#);
        put_json_str(out, &rfc3339(at));
    }
}

/// `text` as a JSON string. Keys and contexts rarely hold a character
/// JSON escapes: those go in as they are, without the escaper's pass.
pub fn put_json_str(out: &mut BytesMut, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(text.len() + 2);
        out.put_u8(b'"');
        out.put_slice(text.as_bytes());
        out.put_u8(b'"');
        return;
    }
    // Serializing a str cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), text);
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the text, what goes out is the JSON string of it,
        /// byte for byte what serde_json writes.
        #[test]
        fn a_json_str_is_what_serde_json_writes(text in ".*", plain in "[a-zA-Z0-9_/+=-]*") {
            for text in [text, plain] {
                let mut out = bytes::BytesMut::new();
                super::put_json_str(&mut out, &text);
                let want = serde_json::to_string(&text).expect("a str serializes");
                prop_assert_eq!(&out[..], want.as_bytes());
            }
        }
    }

    #[test]
    fn instants_are_rfc_3339_in_utc_to_the_millisecond() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_535_000_123), "2026-12-06T05:30:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        // Past what a date can say: the last instant, not a panic.
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
