//! `GET /admin/replica/{key}`: this node's own stored sibling set of a key,
//! not a quorum read. For operators and tests that compare replicas: the
//! body is canonical (context entries by actor, siblings by dot, values
//! re-serialised from their JSON) and holds nothing about the node that
//! answered (that is the `X-Chorus-Node` header), so two replicas that hold
//! the same data return byte-identical bodies. 404 when this node holds
//! nothing for the key.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use super::Api;
use super::kv::decode_key;
use super::response::{self, Body};
use crate::error::Result;
use crate::version::{Content, Dot, SiblingSet};

/// The header naming the node that answered.
pub const NODE_HEADER: &str = "x-chorus-node";

pub fn get(api: &Api, raw_key: &str) -> Result<Response<Body>> {
    let key = decode_key(raw_key, api.limits.max_key_bytes)?;
    let mut response = match api.replica.stored(&key)? {
        Some(set) => response::json(StatusCode::OK, Bytes::from(view(&key, &set).to_string())),
        None => response::not_found_key(),
    };
    if let Ok(node) = HeaderValue::from_str(&api.node) {
        response.headers_mut().insert(NODE_HEADER, node);
    }
    Ok(response)
}

/// The canonical JSON of a stored set.
pub fn view(key: &str, set: &SiblingSet) -> Value {
    let dot = |d: &Dot| json!({ "node": d.actor.node, "incarnation": d.actor.incarnation.to_string(), "counter": d.counter });
    let context: Vec<Value> = set
        .context()
        .iter()
        .map(|d| dot(&Dot::new(d.actor.clone(), d.counter)))
        .collect();
    let siblings: Vec<Value> = set
        .siblings()
        .iter()
        .map(|s| match &s.content {
            // Values were validated as JSON when written; a stored value
            // that no longer parses is shown as its text.
            Content::Value(bytes) | Content::Expiring { value: bytes, .. } => {
                let mut shown = json!({
                    "dot": dot(&s.dot),
                    "value": serde_json::from_slice::<Value>(bytes).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(bytes).into_owned())
                    }),
                });
                if let Some(at) = s.content.expires_ms() {
                    shown["expires"] = super::response::rfc3339(at).into();
                }
                shown
            }
            Content::Tombstone => json!({ "dot": dot(&s.dot), "deleted": true }),
            Content::Crdt(state) => {
                let mut out = bytes::BytesMut::new();
                super::response::put_crdt(&mut out, state);
                let state = serde_json::from_slice::<Value>(&out).unwrap_or(Value::Null);
                json!({ "dot": dot(&s.dot), "crdt": state })
            }
            Content::Update(_) => json!({ "dot": dot(&s.dot), "update": true }),
        })
        .collect();
    json!({ "key": key, "context": context, "siblings": siblings })
}
