//! Certificates minted at test time (rcgen): a cluster CA, a foreign CA,
//! and node certificates good, expired or signed by the wrong CA, written
//! as the PEM files `[security.tls]` names. Also a client that trusts any
//! certificate, to look inside a node whose certificate everyone else
//! refuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chorus::client::Client;
use chorus::config::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// A certificate authority that signs node certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate's PEM file: what `security.tls.ca` names.
    pub pem: PathBuf,
}

/// What a node certificate is like.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Leaf {
    /// Valid now, for 127.0.0.1 and localhost.
    Good,
    /// Valid for 127.0.0.1, but only until 2021.
    Expired,
}

impl Ca {
    /// A CA named `name`, its PEM written under `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).expect("write CA");
        Ca { issuer, pem }
    }

    /// A node certificate and key signed by this CA, written under `dir`
    /// as `{name}.crt` and `{name}.key`; the `[security.tls]` that serves
    /// them and trusts `trust`.
    pub fn leaf(&self, dir: &Path, name: &str, kind: Leaf, trust: &Ca) -> TlsConfig {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        if kind == Leaf::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let (crt, pem_key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write cert");
        std::fs::write(&pem_key, key.serialize_pem()).expect("write key");
        TlsConfig {
            cert: crt,
            key: pem_key,
            ca: trust.pem.clone(),
        }
    }
}

/// A client that accepts any server certificate: only for looking at what
/// a node holds when every proper client refuses it.
pub fn trusting_anything(base: &str) -> Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    Client::with_connector(base, chorus::security::tls::connector(tcp, config, false))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
