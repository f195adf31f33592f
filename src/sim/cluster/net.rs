//! turmoil's simulated network as a [`Network`]: the node code serves and
//! calls its peers through it unchanged, while the simulation decides
//! latency, loss, partitions and holds.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use crate::net::{Listener, Network};

/// The simulated network, as seen from the host it runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimNet;

pub struct SimListener(turmoil::net::TcpListener);

/// A simulated connection, ready for hyper.
pub struct SimStream(TokioIo<turmoil::net::TcpStream>);

/// Opens simulated connections to `http://host:port` URIs.
#[derive(Clone, Debug)]
pub struct SimConnector {
    timeout: Duration,
}

impl SimConnector {
    pub fn new(timeout: Duration) -> SimConnector {
        SimConnector { timeout }
    }
}

impl Network for SimNet {
    type Listener = SimListener;
    type Connector = SimConnector;

    async fn bind(&self, addr: &str) -> io::Result<SimListener> {
        let port = addr
            .parse::<SocketAddr>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .port();
        let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
        Ok(SimListener(listener))
    }

    fn connector(&self, timeout: Duration) -> SimConnector {
        SimConnector::new(timeout)
    }
}

impl Listener for SimListener {
    type Io = SimStream;

    async fn accept(&mut self) -> io::Result<SimStream> {
        let (stream, _) = self.0.accept().await?;
        Ok(SimStream(TokioIo::new(stream)))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl tower_service::Service<Uri> for SimConnector {
    type Response = SimStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SimStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.timeout;
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{uri}` has no host and port"),
                ));
            };
            let host = host.to_string();
            let connect = turmoil::net::TcpStream::connect((host.as_str(), port));
            match tokio::time::timeout(timeout, connect).await {
                Ok(stream) => Ok(SimStream(TokioIo::new(stream?))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {host}:{port} took over {timeout:?}"),
                )),
            }
        })
    }
}

impl Connection for SimStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
