//! `GET /kv/{key}?watch=true`: a read that waits until the key holds a
//! write the client's `X-Chorus-Context` does not cover (`crate::watch`
//! has the idea and the bounds).
//!
//! Each pass reads the key at the request's `r`; a read that shows an
//! unseen write is answered as a GET is. Otherwise the watcher parks until
//! a replica rings the key (or, after a failed read, a second passes) and
//! reads again. When `timeout_ms` (default [`DEFAULT_WATCH_MS`], at most
//! 10 minutes and `limits.max_watch_ms`) passes first, the answer is
//! `304 Not Modified` with the context the client sent, to send back with
//! its next watch; so is a watcher of a node that stops.

use std::time::Duration;

use http::{Response, StatusCode};
use tokio::time::Instant;

use super::Api;
use super::kv::{self, Params};
use super::response::{self, Body};
use crate::error::Result;
use crate::version::{Context, Dot, SiblingSet};

/// How long a watch waits when it names no `timeout_ms`.
pub const DEFAULT_WATCH_MS: u64 = 30_000;

/// How long a watcher whose read failed waits before reading again, unless
/// the key rings first.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

pub async fn handle(
    api: &Api,
    raw_key: &str,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Body>> {
    let key = kv::decode_key(raw_key, api.limits.max_key_bytes)?;
    let p = kv::params(api, req.uri().query(), &["r", "pr", "timeout_ms", "watch"])?;
    let seen = kv::context(api, req.headers(), &key)?;
    get(api, &key, &p, seen).await
}

async fn get(api: &Api, key: &str, p: &Params, seen: Context) -> Result<Response<Body>> {
    let (watch, first) = api.watch.watchers().watch(key)?;
    if first {
        api.watch.subscribe_now(key);
    }
    let wait = p
        .timeout_ms
        .unwrap_or(DEFAULT_WATCH_MS)
        .min(api.limits.max_watch_ms);
    let until = Instant::now() + Duration::from_millis(wait);
    let mut stopped = api.stopped.clone();
    loop {
        // Armed before the read: a change while it runs still rings.
        let rung = watch.waiting().notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let deadline = until.min(Instant::now() + Duration::from_millis(api.timeout_ms));
        // Boxed: a parked watcher keeps no room for a read it is not making
        // (docs/benchmarks.md, "Watchers").
        let read = Box::pin(
            api.coordinator
                .read(key, p.quorum, deadline, None, false, None),
        )
        .await;
        let failed = match read {
            Ok(set) if unseen(set.as_ref(), &seen) => return kv::answer(api, key, p, set),
            Ok(_) => false,
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "a watcher's read failed; it reads again");
                true
            }
        };
        let retry = async {
            match failed {
                true => tokio::time::sleep(RETRY_AFTER_FAILURE).await,
                false => std::future::pending().await,
            }
        };
        let stopping = async {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::select! {
            () = &mut rung => {}
            () = retry => {}
            // A node that stops answers its watchers at once (they watch
            // again through another node), not at the end of its drain.
            () = stopping => return Ok(not_modified(api, key, p, &seen)),
            () = tokio::time::sleep_until(until) => return Ok(not_modified(api, key, p, &seen)),
        }
    }
}

/// The answer at a watch's timeout: no body, the context it was sent.
fn not_modified(api: &Api, key: &str, p: &Params, seen: &Context) -> Response<Body> {
    let mut response = response::empty(StatusCode::NOT_MODIFIED);
    response::set_context(&mut response, seen, &api.seal, key);
    kv::set_quorum(&mut response, &p.quorum);
    response
}

/// Whether `set` holds a write `seen` does not cover: a sibling it has not
/// seen, or a write the set's context records that it has not (a delete
/// whose tombstone was purged leaves only that).
fn unseen(set: Option<&SiblingSet>, seen: &Context) -> bool {
    let Some(set) = set else {
        return false;
    };
    set.siblings().iter().any(|s| !seen.covers(&s.dot))
        || set
            .context()
            .iter()
            .any(|d| !seen.covers(&Dot::new(d.actor.clone(), d.counter)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, Content};

    #[test]
    fn a_set_is_unseen_until_the_context_covers_its_writes() {
        let a = Actor::new("n1", 1);
        let mut set = SiblingSet::new();
        assert!(!unseen(None, &Context::default()), "nothing written");
        set.write(
            &Context::default(),
            Dot::new(a.clone(), 1),
            Content::Tombstone,
        );
        assert!(
            unseen(Some(&set), &Context::default()),
            "a delete is a write"
        );
        let read = Context::read(set.context().clone());
        assert!(!unseen(Some(&set), &read));
        // The client's own write, known exactly, is seen.
        let mine = read.clone().after_write(Dot::new(a.clone(), 5));
        set.write(&read, Dot::new(a.clone(), 5), Content::Tombstone);
        assert!(!unseen(Some(&set), &mine));
        // Another client's write is not.
        let b = Actor::new("n2", 1);
        set.write(&Context::default(), Dot::new(b, 1), Content::Tombstone);
        assert!(unseen(Some(&set), &mine));
        // A grave (siblings purged) still records the writes.
        assert!(unseen(Some(&set.grave()), &read));
    }
}
