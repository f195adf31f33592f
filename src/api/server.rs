//! The HTTP server: accepts connections (plain or TLS), serves HTTP/1.1
//! and h2c on each through [`Api::handle`], bounds them by count and by
//! header timeout, and drains them at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

use super::{Api, response};
use crate::error::Error;
use crate::metrics as m;
use crate::net::Listener;

/// Accepts connections until `shutdown` turns true, then lets the open
/// requests finish (for at most `drain`). With `tls`, every connection is
/// a TLS one; a client that does not complete the handshake (plain HTTP,
/// a certificate it refuses) is closed before any request is read.
///
/// At most `limits.max_connections` connections are served; one beyond
/// gets a 503 `overloaded` with `Retry-After` and is closed. A connection
/// that has not begun a request within `limits.header_timeout_ms` of being
/// accepted, its TLS handshake included, is closed (hyper's header
/// timeout covers a request begun and not finished), so idle and slow
/// connections cannot pile up.
pub async fn serve<L: Listener>(
    mut listener: L,
    api: Arc<Api>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(api.limits.header_timeout_ms))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(api.limits.max_connections));
    let header_timeout = Duration::from_millis(api.limits.header_timeout_ms);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        };
        let deadline = tokio::time::Instant::now() + header_timeout;
        let permit = Arc::clone(&connections).try_acquire_owned().ok();
        let over = permit.is_none().then(|| Error::Overloaded {
            what: "open connections",
            key: "max_connections",
            limit: api.limits.max_connections,
        });
        let begun = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (api, seen) = (Arc::clone(&api), Arc::clone(&begun));
        let service = service_fn(move |req| {
            let api = Arc::clone(&api);
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
            let refusal = over.as_ref().map(|e| {
                let mut response = response::error(e);
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                response
            });
            async move {
                Ok::<_, Infallible>(match refusal {
                    Some(refusal) => refusal,
                    None => api.handle(req).await,
                })
            }
        });
        let (builder, watcher, tls) = (Arc::clone(&builder), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    let handshake = acceptor.accept(TokioIo::new(stream));
                    match tokio::time::timeout_at(deadline, handshake).await {
                        Ok(Ok(tls)) => Box::new(TokioIo::new(tls)),
                        failed => {
                            let reason = match failed {
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    "failed"
                                }
                                _ => "timeout",
                            };
                            metrics::counter!(m::TLS_HANDSHAKES_FAILED_TOTAL, "reason" => reason)
                                .increment(1);
                            return;
                        }
                    }
                }
            };
            let connection = watcher.watch(
                builder
                    .serve_connection_with_upgrades(io, service)
                    .into_owned(),
            );
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = tokio::time::sleep_until(deadline) => {
                    if !begun.load(std::sync::atomic::Ordering::Relaxed) {
                        tracing::debug!("no request began within the header timeout; closing");
                        return;
                    }
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    // Peer streams outlive the connections hyper handed over: they stop
    // reading when `shutdown` turns, finish what they run, and give their
    // permits back.
    let streams = Arc::clone(&api.peer_streams);
    let all = api.limits.max_connections.min(u32::MAX as usize) as u32;
    let drained = async move {
        graceful.shutdown().await;
        let _ = streams.acquire_many(all).await;
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!("open connections did not finish within {drain:?}; closing them");
    }
}

/// A connection hyper can serve: a plain one or a TLS one, behind one type.
trait Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static {}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static> Io for T {}
