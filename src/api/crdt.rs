//! `/crdt/{key}`: counters, sets and maps that merge by their own laws
//! (`version::crdt` has the idea; docs/api.md, CRDT keys, the contract).
//!
//! `POST` applies one update: `{"type":"counter","increment":5}`,
//! `{"type":"set","add":["a","b"]}`, `{"type":"set","remove":["a"]}`
//! (with the `X-Chorus-Context` of a read: a remove removes what that
//! read saw), or `{"type":"map","update":{"visits":{"type":"counter",
//! "increment":1}}}` (any number of fields, each a counter's or a set's
//! update). It is a write like a PUT: one replica mints it, applying
//! the update to its own copy as its own actor, and `w` replicas
//! acknowledge it. `GET` folds the key's siblings into one state and
//! answers `{"type":"counter","value":12}`,
//! `{"type":"set","value":["b"]}` or `{"type":"map","value":{"visits":
//! {"type":"counter","value":3}}}`, with the context a remove needs.
//!
//! A CRDT key never shows siblings. Its type is fixed by its first write:
//! `/crdt` on a plain key, `/kv` on a CRDT key and an update of another
//! type are `409 type_mismatch`.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::Api;
use super::kv::{self, Params};
use super::response::{self, Body, CONTEXT_HEADER};
use crate::coordinator::Write;
use crate::error::{Error, Result};
use crate::peer::versions;
use crate::version::{
    Content, Context, Crdt, CrdtContext, FieldUpdate, Kind, Op, SiblingSet, Update,
};

pub async fn handle(api: &Api, raw_key: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let key = kv::decode_key(raw_key, api.limits.max_key_bytes)?;
    let query = req.uri().query();
    match *req.method() {
        Method::GET => {
            let p = kv::params(api, query, &["r", "pr", "timeout_ms"])?;
            get(api, &key, &p).await
        }
        Method::POST => {
            let known = ["returnbody", "w", "pw", "dw", "timeout_ms"];
            let p = kv::params(api, query, &known)?;
            kv::check_content_type(req.headers())?;
            let seen = context(api, req.headers(), &key)?;
            let request_id = kv::request_id(req.headers())?;
            let sent_context = kv::header_bytes(req.headers(), CONTEXT_HEADER).to_vec();
            super::cluster_speaks(api, versions::CRDT_PROTOCOL, "a CRDT update")?;
            let body =
                kv::read_body(req, api.limits.max_value_bytes, api.limits.body_timeout_ms).await?;
            let update = parse(&body)?;
            let parts: [&[u8]; 3] = [b"POST /crdt", &body, &sent_context];
            let request_id = kv::with_digest(api, request_id, &parts);
            if update.kind() == Kind::Map {
                super::cluster_speaks(api, versions::MAP_PROTOCOL, "a map's update")?;
            }
            let write = Write {
                context: Context::default(),
                content: Content::Update(Op {
                    update,
                    seen: seen.clock,
                }),
                request_id,
                outbox: None,
            };
            let written = api
                .coordinator
                .write(&key, write, p.quorum, p.deadline, false)
                .await?;
            // The state at the replica that applied the update: it holds
            // the update and everything that replica had folded (not
            // shown, nor its clock handed out, if it breaks its invariants:
            // a corrupt peer's).
            let state = written
                .set
                .is_well_formed()
                .then(|| written.set.crdt())
                .flatten();
            let mut response = match (p.returnbody, &state) {
                (true, Some(state)) => render(state),
                _ => response::empty(StatusCode::NO_CONTENT),
            };
            let clock = state.map(|s| s.clock()).unwrap_or_default();
            set_context(api, &mut response, &key, clock);
            kv::set_quorum(&mut response, &p.quorum);
            Ok(response)
        }
        ref other => Err(super::routes::not_allowed(super::Handler::Crdt, other)),
    }
}

async fn get(api: &Api, key: &str, p: &Params) -> Result<Response<Body>> {
    let read = api
        .coordinator
        .read(key, p.quorum, p.deadline, None, false, None)
        .await?;
    let found = read.as_ref().map(SiblingSet::crdt_read).transpose()?;
    let mut response = match found {
        Some(Some(state)) => {
            let mut response = render(&state);
            set_context(api, &mut response, key, state.clock());
            response
        }
        _ => not_found(),
    };
    kv::set_quorum(&mut response, &p.quorum);
    Ok(response)
}

fn render(state: &Crdt) -> Response<Body> {
    let mut out = BytesMut::with_capacity(64);
    response::put_crdt(&mut out, state);
    response::json(StatusCode::OK, out.freeze())
}

fn not_found() -> Response<Body> {
    let body = r#"{"error":"not_found","message":"no counter, set or map is stored under this key; its first POST /crdt creates it"}"#;
    response::json(StatusCode::NOT_FOUND, Bytes::from_static(body.as_bytes()))
}

fn set_context(
    api: &Api,
    response: &mut Response<Body>,
    key: &str,
    clock: crate::version::VersionVector,
) {
    let context = CrdtContext { clock }.encode(&api.seal, key);
    if let Ok(value) = http::HeaderValue::from_str(&context) {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
}

/// The `X-Chorus-Context` of an update: none (a remove then removes
/// nothing), or the context of a `GET /crdt` (or a POST) of this key.
fn context(api: &Api, headers: &HeaderMap, key: &str) -> Result<CrdtContext> {
    match kv::context_text(headers)? {
        None => Ok(CrdtContext::default()),
        Some(text) => Ok(CrdtContext::decode(text, &api.seal, key)?),
    }
}

/// An update as a client sends it; exactly the fields its type takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    #[serde(rename = "type")]
    kind: String,
    increment: Option<i64>,
    add: Option<Vec<String>>,
    remove: Option<Vec<String>>,
    update: Option<Fields>,
}

/// A map's field updates by name. A name sent twice is refused: a JSON
/// object keeps one of two equal names, silently dropping the other.
struct Fields(BTreeMap<String, Posted>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Fields, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of field updates by name")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> std::result::Result<Fields, M::Error> {
                let mut fields = BTreeMap::new();
                while let Some((name, update)) = map.next_entry::<String, Posted>()? {
                    if fields.contains_key(&name) {
                        let e = format!("the field `{name}` is named twice in `update`");
                        return Err(serde::de::Error::custom(e));
                    }
                    fields.insert(name, update);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

const EXAMPLES: &str = "send one update: {\"type\":\"counter\",\"increment\":5}, \
     {\"type\":\"set\",\"add\":[\"a\"]}, {\"type\":\"set\",\"remove\":[\"a\"]} or \
     {\"type\":\"map\",\"update\":{\"field\":{\"type\":\"counter\",\"increment\":1}}}";

/// The update in a POST body; every refusal names the field.
fn parse(body: &[u8]) -> Result<Update> {
    let body: Posted =
        serde_json::from_slice(body).map_err(|e| Error::InvalidJson(format!("{e}; {EXAMPLES}")))?;
    update(body, None)
}

/// One update, at the top (`field` is `None`) or of a map's field.
fn update(body: Posted, field: Option<&str>) -> Result<Update> {
    // A refusal names the parameter as `update.<field>.<name>` inside a map.
    let name = |param: &str| match field {
        None => param.to_string(),
        Some(f) => format!("update.{f}.{param}"),
    };
    let bad = |param: &str, why: &str| Error::bad_parameter(&name(param), why.to_string());
    let members = |param: &str, members: Vec<String>| {
        if members.is_empty() {
            return Err(bad(param, "names no member"));
        }
        Ok(members)
    };
    let Posted {
        kind,
        increment,
        add,
        remove,
        update: fields,
    } = body;
    match (kind.as_str(), increment, add, remove, fields) {
        ("counter", Some(n), None, None, None) => Ok(Update::Increment(n)),
        ("counter", None, None, None, None) => Err(bad(
            "increment",
            "a counter's update is {\"type\":\"counter\",\"increment\":N} (N may be negative)",
        )),
        ("counter", ..) => Err(bad(
            "type",
            "a counter takes `increment` only; `add` and `remove` are a set's, `update` a map's",
        )),
        ("set", None, Some(add), None, None) => Ok(Update::Add(members("add", add)?)),
        ("set", None, None, Some(remove), None) => Ok(Update::Remove(members("remove", remove)?)),
        ("set", ..) => Err(bad(
            "type",
            "a set's update has one of `add` or `remove` (a list of strings), not both, and no `increment` or `update`",
        )),
        ("map", None, None, None, Some(Fields(fields))) if field.is_none() => {
            if fields.is_empty() {
                return Err(bad("update", "names no field"));
            }
            let mut out = Vec::with_capacity(fields.len());
            for (f, posted) in fields {
                if f.is_empty() {
                    return Err(bad("update", "a field's name is empty"));
                }
                let u = match update(posted, Some(&f))? {
                    Update::Increment(n) => FieldUpdate::Increment(n),
                    Update::Add(members) => FieldUpdate::Add(members),
                    Update::Remove(members) => FieldUpdate::Remove(members),
                    // Refused by `update` for a field.
                    Update::Map(_) => return Err(bad("type", "maps do not nest")),
                };
                out.push((f, u));
            }
            Ok(Update::Map(out))
        }
        ("map", ..) if field.is_some() => Err(bad(
            "type",
            "a map's field is a counter or a set; maps do not nest",
        )),
        ("map", ..) => Err(bad(
            "update",
            "a map's update is {\"type\":\"map\",\"update\":{\"<field>\":<a counter's or a set's update>}}",
        )),
        (other, ..) => Err(bad(
            "type",
            &format!("`{other}` is not a CRDT type chorus has; the types are counter, set and map"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_parse_and_every_refusal_names_what_is_wrong() {
        assert_eq!(
            parse(br#"{"type":"counter","increment":-3}"#).expect("parses"),
            Update::Increment(-3)
        );
        assert_eq!(
            parse(br#"{"type":"set","add":["a","b"]}"#).expect("parses"),
            Update::Add(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse(br#"{"type":"set","remove":["a"]}"#).expect("parses"),
            Update::Remove(vec!["a".into()])
        );
        assert_eq!(
            parse(br#"{"type":"map","update":{"n":{"type":"counter","increment":2},"s":{"type":"set","add":["x"]}}}"#)
                .expect("parses"),
            Update::Map(vec![
                ("n".into(), FieldUpdate::Increment(2)),
                ("s".into(), FieldUpdate::Add(vec!["x".into()]))
            ])
        );
        for (body, code, names) in [
            (&br#"{"type":"counter"}"#[..], "bad_parameter", "increment"),
            (
                br#"{"type":"counter","add":["a"]}"#,
                "bad_parameter",
                "increment",
            ),
            (br#"{"type":"set","add":[]}"#, "bad_parameter", "add"),
            (
                br#"{"type":"set","add":["a"],"remove":["b"]}"#,
                "bad_parameter",
                "remove",
            ),
            (br#"{"type":"map"}"#, "bad_parameter", "update"),
            (
                br#"{"type":"map","update":{}}"#,
                "bad_parameter",
                "no field",
            ),
            (
                br#"{"type":"map","update":{"f":{"type":"map","update":{}}}}"#,
                "bad_parameter",
                "update.f.type",
            ),
            (
                br#"{"type":"map","update":{"f":{"type":"set","add":[]}}}"#,
                "bad_parameter",
                "update.f.add",
            ),
            (
                br#"{"type":"map","update":{"f":{"type":"counter","increment":1,"x":2}}}"#,
                "invalid_json",
                "x",
            ),
            (
                br#"{"type":"hll"}"#,
                "bad_parameter",
                "counter, set and map",
            ),
            (
                br#"{"type":"map","update":{"n":{"type":"counter","increment":1},"n":{"type":"counter","increment":2}}}"#,
                "invalid_json",
                "`n` is named twice",
            ),
            (
                br#"{"type":"counter","increment":1.5}"#,
                "invalid_json",
                "increment",
            ),
            (
                br#"{"type":"counter","increment":1,"x":1}"#,
                "invalid_json",
                "x",
            ),
            (
                br#"{"type":"counter","increment":99999999999999999999}"#,
                "invalid_json",
                "type",
            ),
            (br#"[1]"#, "invalid_json", "counter"),
        ] {
            let e = parse(body).expect_err("refused");
            assert_eq!(e.code(), code, "{}", String::from_utf8_lossy(body));
            assert!(
                e.to_string().contains(names),
                "{} -> {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
