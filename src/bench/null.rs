//! The null server: the machine's HTTP ceiling.
//!
//! A bare hyper HTTP/1 server that keeps values in a HashMap behind one
//! parking_lot mutex, with none of chorus's work (no versions, no storage,
//! no fsync). It runs on its own runtime, as a separate server process
//! would, so a benchmark can measure it and chorus in the same run.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::Result;

type Map = Arc<Mutex<HashMap<String, Bytes>>>;

/// A running null server; dropping it stops it.
pub struct NullServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NullServer {
    /// Starts on 127.0.0.1 (a free port) with `threads` runtime workers.
    pub fn start(threads: usize) -> Result<NullServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(super::cpu::NULL_THREADS)
            .enable_all()
            .build()?;
        // Bound here so the address is known at once; adopted by the runtime
        // on its own thread (this may be called from inside another runtime).
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        // Named like the runtime's workers: the accept loop is server CPU.
        let thread = std::thread::Builder::new()
            .name(super::cpu::NULL_THREADS.into())
            .spawn(move || {
                runtime.block_on(async move {
                    if let Ok(listener) = TcpListener::from_std(listener) {
                        serve(listener, stopped).await;
                    }
                })
            })?;
        Ok(NullServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, mut stopped: oneshot::Receiver<()>) {
    let map: Map = Arc::new(Mutex::new(HashMap::with_capacity(1 << 20)));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let _ = stream.set_nodelay(true);
        let map = Arc::clone(&map);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&map), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(map: Map, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = req.uri().path().to_string();
    let response = match *req.method() {
        Method::PUT => match req.into_body().collect().await {
            Ok(body) => {
                let value = Bytes::copy_from_slice(&body.to_bytes());
                map.lock().insert(key, value);
                status(StatusCode::NO_CONTENT, Bytes::new())
            }
            Err(_) => status(StatusCode::BAD_REQUEST, Bytes::new()),
        },
        Method::GET => match map.lock().get(&key).cloned() {
            Some(value) => status(StatusCode::OK, value),
            None => status(StatusCode::NOT_FOUND, Bytes::new()),
        },
        _ => status(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    };
    Ok(response)
}

fn status(code: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    response
}
