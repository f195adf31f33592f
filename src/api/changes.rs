//! `GET /changes?prefix=P&since=now|<cursor>&timeout_ms=N`: the change
//! feed (`crate::feed` has the idea and what it promises).
//!
//! `since=now` answers at once with no changes and a cursor at the
//! present. `since=<cursor>` answers the changes under the prefix after
//! the cursor as soon as there is one, or none once `timeout_ms` passes
//! (default 0: at once; at most `limits.max_watch_ms`), with the cursor to
//! send next. A cursor some node's log no longer reaches back to is a
//! 410 `cursor_expired` carrying a fresh cursor; a cursor this cluster did
//! not seal is a 400 `bad_cursor`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Api;
use super::response::{self, Body};
use crate::config::MAX_TIMEOUT_MS;
use crate::error::{Error, Result};
use crate::feed::Cursor;
use crate::version::Context;

/// What a request asks.
#[derive(Debug, PartialEq, Eq)]
struct Params {
    prefix: String,
    /// `None`: `since=now`.
    since: Option<String>,
    timeout_ms: u64,
}

fn params(query: Option<&str>, max_key_bytes: usize) -> Result<Params> {
    let (mut prefix, mut since, mut timeout_ms) = (String::new(), None, 0);
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "prefix" if value.len() > max_key_bytes => {
                return Err(Error::bad_parameter(
                    "prefix",
                    format!("is {} bytes; a key is at most {max_key_bytes}", value.len()),
                ));
            }
            "prefix" => prefix = value.into_owned(),
            "since" if value.is_empty() => {
                return Err(Error::bad_parameter(
                    "since",
                    "is empty; send `now` or the `next` of an earlier answer",
                ));
            }
            "since" if value == "now" => since = Some(None),
            "since" => since = Some(Some(value.into_owned())),
            "timeout_ms" => {
                timeout_ms = value
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms <= MAX_TIMEOUT_MS)
                    .ok_or_else(|| {
                        Error::bad_parameter(
                            "timeout_ms",
                            format!(
                                "`{value}` is not a number of ms between 0 and {MAX_TIMEOUT_MS}"
                            ),
                        )
                    })?;
            }
            other => {
                return Err(Error::bad_parameter(
                    other,
                    "unknown parameter; this route takes: prefix, since, timeout_ms",
                ));
            }
        }
    }
    let since = since.ok_or_else(|| {
        Error::bad_parameter(
            "since",
            "is required: `now` for a cursor at the present, or the `next` of an earlier answer",
        )
    })?;
    Ok(Params {
        prefix,
        since,
        timeout_ms,
    })
}

pub async fn handle(api: &Api, req: Request<Incoming>) -> Result<Response<Body>> {
    let p = params(req.uri().query(), api.limits.max_key_bytes)?;
    let cursor = p
        .since
        .as_deref()
        .map(|text| Cursor::decode(text, &api.seal).map_err(Error::BadCursor))
        .transpose()?;
    // No protocol gate: a member that does not speak `changes.read` yet
    // (a rolling upgrade) fails its reads, and its mark waits for it.
    // Every feed request asks every member: `since=now` counts too.
    let _reader = api.feed.admit()?;
    let Some(cursor) = cursor else {
        let now = api.feed.now().await;
        return Ok(page(api, Vec::new(), &now));
    };
    let _waiting = Waiting::start();
    let wait = Duration::from_millis(p.timeout_ms.min(api.limits.max_watch_ms));
    let mut stopped = api.stopped.clone();
    // A node that stops answers its readers at once, with what it has.
    let stop = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    match api.feed.page(cursor, &p.prefix, wait, stop).await? {
        Some(answer) => {
            let changes = answer.page.into_changes();
            metrics::counter!(crate::metrics::FEED_CHANGES_TOTAL).increment(changes.len() as u64);
            Ok(page(api, changes, &answer.next))
        }
        None => {
            let next = api.feed.now().await.encode(&api.seal);
            Err(Error::CursorExpired { next })
        }
    }
}

/// The answer: the changes, each with a context good for its key, and the
/// cursor to send next.
fn page(api: &Api, changes: Vec<crate::feed::Change>, next: &Cursor) -> Response<Body> {
    let changes: Vec<_> = changes
        .into_iter()
        .map(|c| {
            let context = Context::read(c.context).encode(&api.seal, &c.key);
            serde_json::json!({ "key": c.key, "context": context, "deleted": c.deleted })
        })
        .collect();
    let body = serde_json::json!({ "changes": changes, "next": next.encode(&api.seal) });
    response::json(StatusCode::OK, Bytes::from(body.to_string()))
}

/// A request waiting on the feed, counted in `chorus_feed_readers` while
/// it lives.
struct Waiting;

impl Waiting {
    fn start() -> Waiting {
        metrics::gauge!(crate::metrics::FEED_READERS).increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::FEED_READERS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_by_name() {
        let p = params(Some("prefix=a%2F&since=now&timeout_ms=5"), 8).expect("valid");
        assert_eq!(
            p,
            Params {
                prefix: "a/".into(),
                since: None,
                timeout_ms: 5
            }
        );
        let message = |query: &str| match params(Some(query), 8) {
            Ok(p) => panic!("`{query}` was taken: {p:?}"),
            Err(e) => e.to_string(),
        };
        assert!(message("prefix=a").contains("`since`"), "since is required");
        assert!(message("since=").contains("`since`"));
        assert!(message("since=now&timeout_ms=-1").contains("`timeout_ms`"));
        assert!(message("since=now&prefix=123456789").contains("`prefix`"));
        assert!(message("since=now&watch=true").contains("`watch`"));
    }
}
