//! etcd as a bench target, through its v3 JSON gateway (`POST /v3/kv/put`
//! and `POST /v3/kv/range`, keys and values base64 in JSON), so the same
//! HTTP/1.1 client and connection pool drive it as drive chorus. etcd
//! replicates every write through Raft to a majority and fsyncs its log:
//! the durable, strongly consistent reference a chorus user would otherwise
//! pick.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Method;

use crate::client::{Client, Reply};
use crate::error::Result;

/// Writes `value` under `key`.
pub async fn put(client: &Client, key: &str, value: &[u8]) -> Result<Reply> {
    let body = serde_json::json!({
        "key": STANDARD.encode(key),
        "value": STANDARD.encode(value),
    });
    post(client, "/v3/kv/put", &body).await
}

/// Reads `key` (a linearizable read, etcd's default).
pub async fn get(client: &Client, key: &str) -> Result<Reply> {
    let body = serde_json::json!({ "key": STANDARD.encode(key) });
    post(client, "/v3/kv/range", &body).await
}

async fn post(client: &Client, path: &str, body: &serde_json::Value) -> Result<Reply> {
    let headers = [("content-type", "application/json")];
    client
        .request(Method::POST, path, &headers, Bytes::from(body.to_string()))
        .await
}

/// Whether a range reply holds the key: etcd answers 200 either way and
/// leaves `kvs` out when there is none.
pub fn found(reply: &Reply) -> bool {
    reply.body.windows(5).any(|w| w == b"\"kvs\"")
}
