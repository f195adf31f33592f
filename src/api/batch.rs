//! `POST /batch`: many independent key operations in one request.
//!
//! The body is `{"ops": [...]}`, at most [`MAX_BATCH_OPS`] ops and
//! `limits.max_batch_bytes` bytes; each op is a `get`, `put` or `delete` of
//! one key, with what the single route takes in headers as fields
//! (`context`, `if_match`, `if_none_match`, `ttl_ms`). The query's `r`, `pr`, `w`,
//! `pw`, `dw` and `timeout_ms` apply to every op.
//!
//! The answer is 200 `{"results": [...]}`, one result per op in the order
//! of the ops, each with the status the single route would have given and
//! what it would have said (`context`, `value` or `siblings`, or `error`
//! and `message`). One bad op fails alone. The ops are independent: they
//! run concurrently, in no order among them, and a batch is not atomic.
//! That concurrency is what makes a batch cheaper than its ops one by one:
//! one HTTP request instead of many, their replica calls travel together
//! on each peer stream, and the merges of its writes and the reads of its
//! reads go to each replica in one message each (`coordinator::outbox`).
//!
//! Bounds: the body in bytes before it is parsed; the ops in count while
//! they are parsed (the 1,001st is not kept); the answer's values in bytes
//! (`limits.max_batch_bytes`: a read whose value would pass it answers 413
//! alone); at most [`CONCURRENT_OPS`] ops in flight, each beyond the first
//! holding one of the node's `limits.max_inflight` permits as a single
//! request would.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Api;
use super::kv::{Params, check_content_type, params, parse_condition, parse_ttl, read_body};
use super::response::{self, Body};
use crate::coordinator::Write;
use crate::coordinator::outbox::{Outbox, Tracked};
use crate::error::{Error, Result};
use crate::security::tokens::{Denied, Scope};
use crate::version::{Content, Context, SiblingSet};

/// Most ops one batch may carry.
pub const MAX_BATCH_OPS: usize = 1000;
/// Most ops of one batch running at once.
pub const CONCURRENT_OPS: usize = 128;

/// The parameters every op of a batch takes from the query.
const KNOWN: [&str; 6] = ["r", "pr", "w", "pw", "dw", "timeout_ms"];

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    let p = params(api, req.uri().query(), &KNOWN)?;
    check_content_type(req.headers())?;
    let scopes = scopes(api, &req)?;
    let max = api.limits.max_batch_bytes;
    let body = read_body(req, max, api.limits.body_timeout_ms)
        .await
        .map_err(|e| match e {
            Error::ValueTooLarge { .. } => Error::BatchTooLarge(format!(
                "the body is over limits.max_batch_bytes ({max} bytes)"
            )),
            other => other,
        })?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        Error::InvalidJson(format!(
            "the body is not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    let batch: Batch = serde_json::from_str(text).map_err(|e| {
        Error::InvalidJson(format!(
            "{e}; send {{\"ops\": [{{\"op\": \"get\", \"key\": \"…\"}}, …]}}"
        ))
    })?;
    if batch.ops.too_many {
        return Err(Error::BatchTooLarge(format!(
            "more than {MAX_BATCH_OPS} ops; split it"
        )));
    }
    let mut budget = max;
    let mut out = BytesMut::with_capacity(64 * batch.ops.kept.len() + 16);
    out.put_slice(br#"{"results":["#);
    // The batch holds one of the node's `limits.max_inflight` permits; each
    // op running beside the first takes one more, as a request of its own
    // would, so a batch never multiplies the node's bound on requests (and
    // on the memory their answers hold). With fewer free, fewer at once.
    let wanted = batch.ops.kept.len().clamp(1, CONCURRENT_OPS) - 1;
    let free = wanted.min(api.inflight.available_permits());
    let extra = u32::try_from(free)
        .ok()
        .and_then(|n| api.inflight.try_acquire_many(n).ok());
    let at_once = 1 + extra.as_ref().map_or(0, |p| p.num_permits());
    // In order, at most `at_once` at a time. Boxed: a future that borrows
    // the request, named by its type, keeps the handler `Send`.
    let outbox = api.coordinator.outbox();
    let start = |op| -> Tracked<BoxFuture<'_, Outcome>> {
        outbox.track(Box::pin(run(api, op, &p, &scopes, &outbox)))
    };
    let mut waiting = batch.ops.kept.iter().copied();
    let mut running: FuturesOrdered<_> = waiting.by_ref().take(at_once).map(start).collect();
    let mut first = true;
    // After each poll, what the ops posted to the outbox leaves once they
    // are settled: reads once every op was polled, merges once every
    // write has minted.
    while let Some(result) = std::future::poll_fn(|cx| {
        let next = running.poll_next_unpin(cx);
        outbox.flush_if_settled();
        next
    })
    .await
    {
        if let Some(op) = waiting.next() {
            running.push_back(start(op));
        }
        if !first {
            out.put_u8(b',');
        }
        first = false;
        result.encode(api, &mut out, &mut budget);
    }
    out.put_slice(b"]}");
    outbox.finish_in_background();
    Ok(response::json(StatusCode::OK, out.freeze()))
}

/// What the token may do, for each op to check its own scope; `None`: no
/// tokens are configured and everything is allowed. A token with neither
/// `read` nor `write` is a 403 for the whole batch.
fn scopes(api: &Api, req: &Request<Incoming>) -> Result<Option<(String, Vec<Scope>)>> {
    if api.tokens.is_empty() {
        return Ok(None);
    }
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes);
    match api.tokens.identify(header) {
        // A token that may neither read nor write could do no op at all.
        Ok((name, scopes)) if !scopes.contains(&Scope::Read) && !scopes.contains(&Scope::Write) => {
            Err(Error::Forbidden {
                token: name.to_string(),
                needs: Scope::Read.name(),
            })
        }
        Ok((name, scopes)) => Ok(Some((name.to_string(), scopes.to_vec()))),
        Err(Denied::Unauthenticated(why)) => Err(Error::Unauthenticated(why)),
        Err(Denied::Forbidden { token, needs }) => Err(Error::Forbidden {
            token,
            needs: needs.name(),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    ops: Ops<'a>,
}

/// The ops as they were sent, each parsed on its own so that one bad op
/// fails alone; past [`MAX_BATCH_OPS`] they are skipped, not kept.
struct Ops<'a> {
    kept: Vec<&'a RawValue>,
    too_many: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Ops<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Ops<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_BATCH_OPS} ops")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Ops<'a>, A::Error> {
                let mut kept = Vec::new();
                while kept.len() < MAX_BATCH_OPS {
                    match seq.next_element::<&'a RawValue>()? {
                        Some(op) => kept.push(op),
                        None => {
                            return Ok(Ops {
                                kept,
                                too_many: false,
                            });
                        }
                    }
                }
                let mut too_many = false;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    too_many = true;
                }
                Ok(Ops { kept, too_many })
            }
        }
        d.deserialize_seq(Visitor(std::marker::PhantomData))
    }
}

/// One op as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Op<'a> {
    op: Kind,
    key: String,
    #[serde(borrow, default, deserialize_with = "present")]
    value: Option<&'a RawValue>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    if_match: Option<String>,
    #[serde(default)]
    if_none_match: Option<String>,
    /// A put's TTL, as the route's `ttl_ms`.
    #[serde(default)]
    ttl_ms: Option<u64>,
}

/// A field that is there holds a value, JSON `null` included: an
/// `Option` reads `null` as absent, and a put of `null` would be "a put
/// without a value". (An absent field is `None` by `default`.)
fn present<'de: 'a, 'a, D>(from: D) -> std::result::Result<Option<&'a RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&'a RawValue>::deserialize(from).map(Some)
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Get,
    Put,
    Delete,
}

/// What one op came to.
struct Outcome {
    key: Option<String>,
    result: Result<Done>,
}

enum Done {
    /// A read: the merged set (`None`: no replica had the key).
    Read(Option<SiblingSet>),
    /// A write: the client's context after it, and its expiry instant
    /// when it has a TTL.
    Wrote(Context, Option<u64>),
}

async fn run(
    api: &Api,
    raw: &RawValue,
    p: &Params,
    scopes: &Option<(String, Vec<Scope>)>,
    outbox: &Arc<Outbox>,
) -> Outcome {
    let op: Op = match serde_json::from_str(raw.get()) {
        Ok(op) => op,
        Err(e) => {
            #[derive(Deserialize)]
            struct KeyOnly {
                key: Option<String>,
            }
            let key = serde_json::from_str::<KeyOnly>(raw.get())
                .ok()
                .and_then(|k| k.key);
            return Outcome {
                key,
                result: Err(Error::bad_parameter(
                    "ops",
                    format!(
                        "{e}; an op is {{\"op\": \"get\"|\"put\"|\"delete\", \"key\": …, \"value\": … (put), \"context\", \"if_match\", \"if_none_match\"}}"
                    ),
                )),
            };
        }
    };
    let key = op.key.clone();
    let result = execute(api, op, p, scopes, outbox).await;
    Outcome {
        key: Some(key),
        result,
    }
}

async fn execute(
    api: &Api,
    op: Op<'_>,
    p: &Params,
    scopes: &Option<(String, Vec<Scope>)>,
    outbox: &Arc<Outbox>,
) -> Result<Done> {
    let needs = match op.op {
        Kind::Get => Scope::Read,
        Kind::Put | Kind::Delete => Scope::Write,
    };
    if let Some((token, scopes)) = scopes
        && !scopes.contains(&needs)
    {
        return Err(Error::Forbidden {
            token: token.clone(),
            needs: needs.name(),
        });
    }
    let key = op.key;
    if key.is_empty() {
        return Err(Error::BadKey("the key is empty".into()));
    }
    if key.len() > api.limits.max_key_bytes {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: api.limits.max_key_bytes,
        });
    }
    let context = match op.context.as_deref().map(str::trim) {
        None | Some("") => Context::default(),
        Some(text) => Context::decode(text, &api.seal, &key)?,
    };
    let condition = parse_condition(
        api,
        &key,
        &context,
        matches!(op.op, Kind::Put),
        op.if_none_match.as_deref(),
        op.if_match.as_deref(),
    )?;
    // `null` on a get or a delete is a field left unset (as generated
    // clients send it), not a value.
    let value = op
        .value
        .filter(|v| matches!(op.op, Kind::Put) || v.get() != "null");
    let content = match (op.op, value) {
        (Kind::Get, None) if condition.is_none() && context.is_empty() => {
            let read = api
                .coordinator
                .read(&key, p.quorum, p.deadline, None, false, Some(outbox))
                .await?;
            return Ok(Done::Read(read));
        }
        (Kind::Get, _) => {
            return Err(Error::bad_parameter(
                "ops",
                "a get takes a key only (no value, context or condition)",
            ));
        }
        (Kind::Put, Some(value)) if value.get().len() > api.limits.max_value_bytes => {
            return Err(Error::ValueTooLarge {
                max: api.limits.max_value_bytes,
            });
        }
        (Kind::Put, Some(value)) => {
            let ttl_ms = op.ttl_ms.map(|ms| parse_ttl(&ms.to_string())).transpose()?;
            let value = Bytes::copy_from_slice(value.get().as_bytes());
            super::kv::content(api, value, ttl_ms)?
        }
        (Kind::Put, None) => return Err(Error::bad_parameter("ops", "a put needs a value")),
        (Kind::Delete, None) if op.ttl_ms.is_some() => {
            return Err(Error::bad_parameter("ttl_ms", "a delete takes no TTL"));
        }
        (Kind::Delete, None) => Content::Tombstone,
        (Kind::Delete, Some(_)) => {
            return Err(Error::bad_parameter("ops", "a delete takes no value"));
        }
    };
    let expires = content.expires_ms();
    let write = Write {
        context,
        content,
        request_id: None,
        outbox: Some(Arc::clone(outbox)),
    };
    let (written, context) = api
        .coordinator
        .write_if(&key, write, condition.as_ref(), p.quorum, p.deadline)
        .await?;
    Ok(Done::Wrote(context.after_write(written.dot), expires))
}

impl Outcome {
    /// Appends this op's result; a read whose values would take `budget`
    /// below zero answers 413 instead.
    fn encode(self, api: &Api, out: &mut BytesMut, budget: &mut usize) {
        out.put_slice(br#"{"key":"#);
        match &self.key {
            Some(key) => response::put_json_str(out, key),
            None => out.put_slice(b"null"),
        }
        let key = self.key.as_deref().unwrap_or("");
        let result = match self.result {
            Ok(Done::Read(Some(set))) if set.value_bytes() > *budget => {
                Err(Error::BatchTooLarge(format!(
                    "this key's value would take the answer past limits.max_batch_bytes ({} bytes); read it alone",
                    api.limits.max_batch_bytes
                )))
            }
            // A CRDT key: a 409, as `GET /kv` of it answers.
            Ok(Done::Read(Some(set))) => match set.check_plain() {
                Ok(()) => Ok(Done::Read(Some(set))),
                Err(e) => Err(e.into()),
            },
            other => other,
        };
        match result {
            Ok(Done::Wrote(context, expires)) => {
                out.put_slice(br#","status":204,"context":"#);
                response::put_json_str(out, &context.encode(&api.seal, key));
                response::put_expires(out, expires);
            }
            Ok(Done::Read(None)) => {
                out.put_slice(br#","status":404,"error":"not_found","message":"no value is stored under this key""#);
            }
            Ok(Done::Read(Some(set))) => {
                *budget -= set.value_bytes();
                let context = Context::read(set.context().clone()).encode(&api.seal, key);
                if set.is_deleted() {
                    out.put_slice(br#","status":404,"error":"not_found","message":"no value is stored under this key""#);
                } else if let [only] = set.siblings()
                    && let Some(v) = only.content.value()
                {
                    out.put_slice(br#","status":200,"value":"#);
                    out.put_slice(v);
                    response::put_expires(out, only.content.expires_ms());
                } else {
                    out.put_slice(br#","status":300,"siblings":"#);
                    response::put_siblings(out, &set);
                }
                out.put_slice(br#","context":"#);
                response::put_json_str(out, &context);
            }
            Err(e) => {
                out.put_slice(br#","status":"#);
                out.put_slice(e.status().as_str().as_bytes());
                out.put_slice(br#","error":"#);
                response::put_json_str(out, e.code());
                out.put_slice(br#","message":"#);
                response::put_json_str(out, &e.to_string());
            }
        }
        out.put_u8(b'}');
    }
}
