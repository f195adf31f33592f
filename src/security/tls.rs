//! TLS for the one listener and for the connections a node opens.
//!
//! A node with `[security.tls]` speaks only TLS on its listen address, to
//! clients and to peers alike: the server side is rustls through
//! tokio-rustls (the handshake runs in the connection's own task, under
//! the same "a request begins within `limits.header_timeout_ms`" deadline
//! as a plaintext connection, so slow handshakes cannot pile up), and it
//! offers ALPN `h2` and `http/1.1`. Peers connect through hyper-rustls
//! over HTTP/2 and verify the other node's certificate against
//! `security.tls.ca` and the address they dial (an IP address or DNS name
//! the certificate must list as a subject alternative name), as any
//! HTTPS client would. Certificates authenticate the *server*; peers
//! authenticate each other by the HMAC of `peer_auth` inside the tunnel,
//! and clients by bearer tokens, so no client certificates are asked for.
//!
//! Everything uses rustls's ring provider explicitly, never a
//! process-wide default, so tests and the simulation cannot race to
//! install one.

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// ALPN protocols the server offers, the preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The provider every config here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS: what accepts connections, what verifies peers, and the
/// node's own chain (checked against the CA at start).
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// Trusts `security.tls.ca`: for the node's peer connections.
    pub client: ClientConfig,
    chain: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

impl Tls {
    /// Reads the PEM files `[security.tls]` names; every error names the
    /// key of the file at fault.
    pub fn load(config: &TlsConfig) -> Result<Tls> {
        let chain = certificates("security.tls.cert", &config.cert)?;
        let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
            Error::config(
                "security.tls.key",
                format!("no private key read from {}: {e}", config.key.display()),
            )
        })?;
        let roots = Arc::new(roots("security.tls.ca", &config.ca)?);
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect(RING_HAS_DEFAULTS)
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .map_err(|e| {
                Error::config(
                    "security.tls.key",
                    format!("does not fit the certificate in security.tls.cert: {e}"),
                )
            })?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            client: client_config(RootCertStore::clone(&roots)),
            chain,
            roots,
        })
    }

    /// Why peers and clients would refuse this node's own certificate when
    /// they dial `host` (expired, not yet valid, signed by another CA, not
    /// naming `host`), or `None` when they would accept it.
    pub fn own_certificate_problem(&self, host: &str) -> Option<String> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
                .build()
                .map_err(|e| e.to_string());
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string());
        let (verifier, name) = match (verifier, name) {
            (Ok(v), Ok(n)) => (v, n),
            (Err(e), _) | (_, Err(e)) => return Some(e),
        };
        let (end_entity, intermediates) = self.chain.split_first()?;
        verifier
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .err()
            .map(|e| format!("security.tls.cert will be refused by peers dialling {host}: {e}"))
    }
}

/// The certificates of a PEM file; at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::config(
            key,
            format!("cannot read certificates from {}: {e}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"the file holds no PEM certificate"));
    }
    Ok(certs)
}

/// A trust store of every certificate in the PEM file at `path`.
pub fn roots(key: &str, path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(key, path)? {
        roots.add(cert).map_err(|e| {
            Error::config(
                key,
                format!("{} is not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

/// A client config that trusts `roots`.
pub fn client_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect(RING_HAS_DEFAULTS)
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Why building a config with the default protocol versions cannot fail:
/// ring offers cipher suites for TLS 1.2 and 1.3.
const RING_HAS_DEFAULTS: &str = "the ring provider supports the default TLS versions";

/// The trust store of a client given no CA: the platform's roots (empty
/// when none can be read; connections then fail naming the unknown
/// issuer).
pub fn platform_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// A connector that dials `http://` URLs in the clear and `https://` ones
/// through TLS with `config`; `h2` offers HTTP/2 by ALPN (peers), else
/// HTTP/1.1 only (clients).
pub fn connector<C>(inner: C, config: ClientConfig, h2: bool) -> HttpsConnector<C> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    if h2 {
        builder.enable_http2().wrap_connector(inner)
    } else {
        builder.enable_http1().wrap_connector(inner)
    }
}
