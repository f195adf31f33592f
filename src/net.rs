//! The network a node runs on: TCP, or the simulated network of the
//! deterministic simulation.
//!
//! A node needs two things of a network: a listener that hands the HTTP
//! server its connections, and a connector through which the peer
//! transport opens connections to other nodes. [`Network`] names both, so
//! the same node code runs over real sockets ([`Tcp`]) and over turmoil's
//! simulated ones (`sim::cluster::net`), where the simulation decides
//! which bytes arrive, when, and whether at all.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connect, Connection, HttpConnector};
use hyper_util::rt::TokioIo;

/// Hands out accepted connections, ready for hyper.
pub trait Listener: Send + 'static {
    type Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;

    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A listener and a connector that reach each other.
pub trait Network: Send + Sync + 'static {
    type Listener: Listener;
    /// A `tower` service from URI to connection, so TLS can wrap it
    /// (`security::tls::connector`).
    type Connector: tower_service::Service<
            http::Uri,
            Response: Connection + hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
            Future: Send + 'static,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Connect
        + Clone
        + Send
        + Sync
        + 'static;

    /// Binds `addr` (`host:port`; port 0 picks a free one).
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// A connector for peer calls that gives up connecting after `timeout`.
    fn connector(&self, timeout: Duration) -> Self::Connector;
}

/// Real TCP sockets, TCP_NODELAY on every one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Network for Tcp {
    type Listener = tokio::net::TcpListener;
    type Connector = HttpConnector;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn connector(&self, timeout: Duration) -> HttpConnector {
        crate::peer::tcp_connector(timeout)
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = TokioIo<tokio::net::TcpStream>;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}
