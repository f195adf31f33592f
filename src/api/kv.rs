//! `/kv/{key}`: GET, PUT and DELETE of one key.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::Api;
use tokio::time::Instant;

use super::response::{self, Body, CONTEXT_HEADER, QUORUM_HEADER};
use crate::coordinator::quorum::Quorum;
use crate::coordinator::{Condition, Write};
use crate::error::{Error, Result};
use crate::peer::versions;
use crate::version::{Content, Context, MAX_REQUEST_ID, REQUEST_DIGEST_CHARS, SiblingSet};

/// The header that makes a write safe to retry.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub use crate::config::{MAX_TIMEOUT_MS, MAX_TTL_MS};

pub async fn handle(api: &Api, raw_key: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let key = decode_key(raw_key, api.limits.max_key_bytes)?;
    let query = req.uri().query();
    match *req.method() {
        Method::GET => {
            // `watch=true` is routed to `watching.rs`; `watch=false` is a GET.
            let p = params(api, query, &["r", "pr", "timeout_ms", "watch"])?;
            let session = req
                .headers()
                .contains_key(CONTEXT_HEADER)
                .then(|| context(api, req.headers(), &key))
                .transpose()?;
            get(api, &key, &p, session).await
        }
        Method::PUT => {
            let known = ["returnbody", "r", "w", "pw", "dw", "timeout_ms", "ttl_ms"];
            let p = params(api, query, &known)?;
            check_content_type(req.headers())?;
            let context = context(api, req.headers(), &key)?;
            let condition = condition(api, req.headers(), &key, &context, true)?;
            let request_id = request_id(req.headers())?;
            let if_match = header_bytes(req.headers(), "if-match").to_vec();
            let if_none = header_bytes(req.headers(), "if-none-match").to_vec();
            let sent_context = header_bytes(req.headers(), CONTEXT_HEADER).to_vec();
            let body =
                read_body(req, api.limits.max_value_bytes, api.limits.body_timeout_ms).await?;
            check_json(&body)?;
            let ttl = p.ttl_ms.unwrap_or(0).to_le_bytes();
            let parts: [&[u8]; 6] = [b"PUT /kv", &body, &sent_context, &if_match, &if_none, &ttl];
            let request_id = with_digest(api, request_id, &parts);
            let write = Write {
                context,
                content: content(api, body, p.ttl_ms)?,
                request_id,
                outbox: None,
            };
            put_or_delete(api, &key, write, condition, &p).await
        }
        Method::DELETE => {
            let p = params(api, query, &["r", "w", "pw", "dw", "timeout_ms"])?;
            let context = context(api, req.headers(), &key)?;
            let condition = condition(api, req.headers(), &key, &context, false)?;
            let parts: [&[u8]; 3] = [
                b"DELETE /kv",
                header_bytes(req.headers(), CONTEXT_HEADER),
                header_bytes(req.headers(), "if-match"),
            ];
            let request_id = with_digest(api, request_id(req.headers())?, &parts);
            let write = Write {
                context,
                content: Content::Tombstone,
                request_id,
                outbox: None,
            };
            put_or_delete(api, &key, write, condition, &p).await
        }
        ref other => Err(super::routes::not_allowed(super::Handler::Key, other)),
    }
}

async fn get(api: &Api, key: &str, p: &Params, session: Option<Context>) -> Result<Response<Body>> {
    let read = api
        .coordinator
        .read(key, p.quorum, p.deadline, session, false, None)
        .await?;
    answer(api, key, p, read)
}

/// What a GET answers for the set a read found.
pub(super) fn answer(
    api: &Api,
    key: &str,
    p: &Params,
    read: Option<SiblingSet>,
) -> Result<Response<Body>> {
    let Some(set) = read else {
        let mut response = response::not_found_key();
        set_quorum(&mut response, &p.quorum);
        return Ok(response);
    };
    set.check_plain()?;
    static SIBLINGS: crate::metrics::Handles<(), metrics::Histogram> =
        crate::metrics::Handles::new();
    SIBLINGS
        .get((), || metrics::histogram!(crate::metrics::READ_SIBLINGS))
        .record(set.siblings().len() as f64);
    let mut response = response::siblings(&set);
    response::set_context(
        &mut response,
        &Context::read(set.context().clone()),
        &api.seal,
        key,
    );
    set_quorum(&mut response, &p.quorum);
    Ok(response)
}

async fn put_or_delete(
    api: &Api,
    key: &str,
    write: Write,
    condition: Option<Condition>,
    p: &Params,
) -> Result<Response<Body>> {
    let (written, context) = api
        .coordinator
        .write_if(key, write, condition.as_ref(), p.quorum, p.deadline)
        .await?;
    let expires = p.ttl_ms.and(
        written
            .set
            .siblings()
            .iter()
            .find(|s| s.dot == written.dot)
            .and_then(|s| s.content.expires_ms()),
    );
    let (mut response, context) = if p.returnbody {
        let full = Context::read(written.set.context().clone());
        (response::siblings(&written.set), full)
    } else {
        (
            response::empty(StatusCode::NO_CONTENT),
            context.after_write(written.dot),
        )
    };
    if let Some(at) = expires {
        response::set_expires(&mut response, at);
    }
    response::set_context(&mut response, &context, &api.seal, key);
    set_quorum(&mut response, &p.quorum);
    Ok(response)
}

pub(super) fn set_quorum(response: &mut Response<Body>, quorum: &Quorum) {
    if let Ok(value) = HeaderValue::from_str(&quorum.header()) {
        response.headers_mut().insert(QUORUM_HEADER, value);
    }
}

/// The key from the path: percent-decoded UTF-8, non-empty, within the limit.
pub(super) fn decode_key(raw: &str, max: usize) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::BadKey("the key is empty; use /kv/{key}".into()));
    }
    let key = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadKey("the key is not UTF-8 after percent-decoding".into()))?;
    if key.len() > max {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(key.into_owned())
}

pub(super) struct Params {
    pub(super) returnbody: bool,
    /// `timeout_ms` as the client sent it.
    pub(super) timeout_ms: Option<u64>,
    pub(super) quorum: Quorum,
    pub(super) deadline: Instant,
    /// `ttl_ms`: the value expires this long after the write.
    ttl_ms: Option<u64>,
}

/// Parses the query string, refusing parameters the route does not know.
pub(super) fn params(api: &Api, query: Option<&str>, known: &[&str]) -> Result<Params> {
    let mut quorum = api.quorum;
    let mut returnbody = false;
    let mut timeout_ms = api.timeout_ms;
    let mut asked_timeout = None;
    let mut ttl_ms = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(Error::bad_parameter(
                &name,
                format!("unknown parameter; this route takes: {}", known.join(", ")),
            ));
        }
        match name.as_ref() {
            "returnbody" | "watch" => {
                let flag = match value.as_ref() {
                    "true" | "" => true,
                    "false" => false,
                    other => {
                        return Err(Error::bad_parameter(
                            &name,
                            format!("`{other}` is not true or false"),
                        ));
                    }
                };
                // `watch` was routed on (`api::is_watch`): only checked here.
                if name == "returnbody" {
                    returnbody = flag;
                }
            }
            "timeout_ms" => {
                timeout_ms = value
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
                    .ok_or_else(|| {
                        Error::bad_parameter(
                            "timeout_ms",
                            format!(
                                "`{value}` is not a number of ms between 1 and {MAX_TIMEOUT_MS}"
                            ),
                        )
                    })?;
                asked_timeout = Some(timeout_ms);
            }
            "ttl_ms" => ttl_ms = Some(parse_ttl(&value)?),
            quorum_name => quorum.set(quorum_name, &value, &api.quorum)?,
        }
    }
    quorum.consistent(&api.quorum, known)?;
    // Asked of a cluster that cannot give it, `dw` could only ever fail,
    // after storing the write: refuse it before. (The config refuses a
    // default `dw` above 0 for such a cluster.)
    if quorum.dw > 0 && !api.replica.is_durable() {
        return Err(Error::bad_parameter(
            "dw",
            "no replica of this cluster fsyncs each write (storage.engine = \"memory\" or storage.sync = \"interval\"), so none can acknowledge dw; send dw=0",
        ));
    }
    Ok(Params {
        returnbody,
        timeout_ms: asked_timeout,
        quorum,
        deadline: Instant::now() + Duration::from_millis(timeout_ms),
        ttl_ms,
    })
}

/// A `ttl_ms`: a whole number of ms from 1 to [`MAX_TTL_MS`].
pub(super) fn parse_ttl(text: &str) -> Result<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|ms| (1..=MAX_TTL_MS).contains(ms))
        .ok_or_else(|| {
            Error::bad_parameter(
                "ttl_ms",
                format!("`{text}` is not a number of ms between 1 and {MAX_TTL_MS} (20 years)"),
            )
        })
}

/// What a PUT stores: the value, with its expiry instant stamped here
/// when it has a TTL (so every replica agrees on it). A TTL needs every
/// member to speak the protocol that carries it.
pub(super) fn content(api: &Api, value: Bytes, ttl_ms: Option<u64>) -> Result<Content> {
    let Some(ttl_ms) = ttl_ms else {
        return Ok(Content::Value(value));
    };
    super::cluster_speaks(
        api,
        crate::peer::versions::EXPIRING_PROTOCOL,
        "a write with ttl_ms",
    )?;
    Ok(Content::Expiring {
        value,
        expires_ms: api.replica.now_ms().saturating_add(ttl_ms),
    })
}

/// The `Idempotency-Key` header: printable ASCII, at most 128 bytes.
pub(super) fn request_id(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|t| {
            !t.is_empty() && t.len() <= MAX_REQUEST_ID && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            Error::bad_parameter(
                "Idempotency-Key",
                format!("must be 1 to {MAX_REQUEST_ID} printable ASCII characters"),
            )
        })?;
    Ok(Some(text.to_string()))
}

/// The request id `key` with a digest of the request it names (`parts`:
/// the route, body, context, conditions and TTL, each as sent), so that
/// the key reused for another request is a 422 and not a silent replay of
/// the first outcome (`version::Request`). Without a digest while some
/// member cannot take one (peer protocol 8 and before).
pub(super) fn with_digest(api: &Api, key: Option<String>, parts: &[&[u8]]) -> Option<String> {
    let key = key?;
    let speaks = super::cluster_speaks(api, versions::DIGEST_PROTOCOL, "").is_ok();
    if !speaks {
        return Some(key);
    }
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let hex = hasher.finalize().to_hex();
    Some(format!("{key} {}", &hex[..REQUEST_DIGEST_CHARS]))
}

/// A header's bytes as sent, empty when absent: a part of a digest.
pub(super) fn header_bytes<'h>(headers: &'h HeaderMap, name: &str) -> &'h [u8] {
    headers.get(name).map_or(&[], HeaderValue::as_bytes)
}

pub(super) fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("(not text)");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(text.to_string()))
    }
}

/// The `X-Chorus-Context` of a request on `key`: none, or one this cluster
/// sealed for that key.
pub(super) fn context(api: &Api, headers: &HeaderMap, key: &str) -> Result<Context> {
    match context_text(headers)? {
        None => Ok(Context::default()),
        Some(text) => Ok(Context::decode(text, &api.seal, key)?),
    }
}

/// The text of the `X-Chorus-Context` header; `None` when absent or empty
/// (a client that has seen nothing).
pub(super) fn context_text(headers: &HeaderMap) -> Result<Option<&str>> {
    let Some(value) = headers.get(CONTEXT_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::MalformedContext(crate::version::ContextError::NotBase64))?;
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

/// The write's condition from the `If-None-Match` and `If-Match` headers
/// (see [`parse_condition`]); a header sent twice is refused.
fn condition(
    api: &Api,
    headers: &HeaderMap,
    key: &str,
    context: &Context,
    none_match: bool,
) -> Result<Option<Condition>> {
    let text = |name: &str| -> Result<Option<&str>> {
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return match headers.contains_key(name) {
                true => Err(Error::bad_parameter(name, "send it once")),
                false => Ok(None),
            };
        };
        let text = value
            .to_str()
            .map_err(|_| Error::bad_parameter(name, "not ASCII"))?;
        Ok(Some(text))
    };
    let (if_none_match, if_match) = (text("if-none-match")?, text("if-match")?);
    parse_condition(api, key, context, none_match, if_none_match, if_match)
}

/// A write's condition: `if_none_match` (a PUT's only, when `none_match`;
/// `*` is the one value: create only) or `if_match` (`*`, or a context
/// this cluster sealed for the key, bare or as a quoted entity tag). A
/// context in `if_match` is also the write's context: a `context` beside
/// it must be the same one. Errors name the header.
pub(super) fn parse_condition(
    api: &Api,
    key: &str,
    context: &Context,
    none_match: bool,
    if_none_match: Option<&str>,
    if_match: Option<&str>,
) -> Result<Option<Condition>> {
    let unquote = |text: &str| {
        let text = text.trim();
        let text = text.strip_prefix("W/").unwrap_or(text);
        text.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text)
            .to_string()
    };
    match (if_none_match.map(unquote), if_match.map(unquote)) {
        (Some(_), Some(_)) => Err(Error::bad_parameter(
            "If-None-Match",
            "send If-None-Match or If-Match, not both",
        )),
        (Some(_), None) if !none_match => Err(Error::bad_parameter(
            "If-None-Match",
            "a DELETE takes If-Match only",
        )),
        (Some(star), None) if star == "*" => Ok(Some(Condition::Absent)),
        (Some(_), None) => Err(Error::bad_parameter(
            "If-None-Match",
            "the one value is `*` (write only if the key has no value)",
        )),
        (None, Some(star)) if star == "*" => Ok(Some(Condition::Present)),
        (None, Some(token)) => {
            let given = Context::decode(&token, &api.seal, key).map_err(|e| {
                Error::bad_parameter(
                    "If-Match",
                    format!("{e}; send `*` or the X-Chorus-Context of a read of this key"),
                )
            })?;
            if !context.is_empty() && *context != given {
                return Err(Error::bad_parameter(
                    "If-Match",
                    "differs from X-Chorus-Context; the context in If-Match is the write's, send it once",
                ));
            }
            Ok(Some(Condition::Unchanged(given)))
        }
        (None, None) => Ok(None),
    }
}

/// Checks that a value is one JSON text, without building it. The UTF-8
/// check comes first and covers the whole body: serde_json's `IgnoredAny`
/// skips over the bytes of a string without validating them, so `"\xff"`
/// would otherwise be stored and handed to every reader.
fn check_json(body: &[u8]) -> Result<()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidJson(
            "the body is empty; a value is one JSON document (to store JSON null, send the body `null`)"
                .into(),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Error::InvalidJson(format!(
            "the body is not UTF-8 (RFC 8259 §8.1): invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| Error::InvalidJson(e.to_string()))
}

/// Reads the body into an exact-size buffer, refusing it as soon as it
/// passes `max` bytes and giving up when it does not arrive in time.
pub(super) async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout_ms: u64,
) -> Result<Bytes> {
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        match len.parse::<u64>() {
            Ok(len) if len > max as u64 => return Err(Error::ValueTooLarge { max }),
            Ok(_) => {}
            Err(_) => return Err(Error::BodyRead("Content-Length is not a number".into())),
        }
    }
    let limited = Limited::new(req.into_body(), max);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), limited.collect()).await {
        Err(_) => Err(Error::BodyTimeout(timeout_ms)),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Error::ValueTooLarge { max }),
        Ok(Err(e)) => Err(Error::BodyRead(e.to_string())),
        // A copy, so the value does not pin hyper's whole read buffer.
        Ok(Ok(collected)) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
    }
}
