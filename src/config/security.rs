//! `[security]`: who may talk to a node, and over what.
//!
//! - `peer_secret` (or `peer_secret_file`): the cluster's shared secret;
//!   every node-to-node request carries an HMAC keyed by it
//!   (`security::peer_auth`). At least 32 bytes.
//! - `tls`: certificate, key and the CA that signed the cluster's
//!   certificates; the node then speaks only TLS, to clients and to peers.
//! - `tokens`: bearer tokens with scopes for clients (`security::tokens`).
//!
//! The safe default is enforced where it matters, at start
//! ([`SecurityConfig::check_exposure`]): a node that listens on an address
//! other than loopback refuses to start without a secret of its own (not
//! missing, not short, not the example's) and without TLS, unless
//! `allow_plaintext` says its network is private. Loopback-only nodes (the
//! dev cluster, tests) may run without either, with a warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shortest peer secret a node accepts.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret config/cluster.toml shows; never accepted off loopback.
pub const EXAMPLE_SECRET: &str = "example-secret-change-me-for-any-real-cluster";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The cluster's shared secret for peer requests (at least 32 bytes).
    pub peer_secret: Option<String>,
    /// A file holding the secret (surrounding whitespace ignored); instead
    /// of `peer_secret`.
    pub peer_secret_file: Option<PathBuf>,
    /// How far a peer request's timestamp may be from this node's clock.
    pub peer_clock_skew_ms: u64,
    /// Serve plain HTTP on an address that is not loopback (a private
    /// network the operator trusts); off by default.
    pub allow_plaintext: bool,
    pub tls: Option<TlsConfig>,
    /// Client bearer tokens; none: the API is open.
    pub tokens: Vec<TokenConfig>,
    /// Routes that need no token even when tokens are configured.
    pub open_routes: Vec<OpenRoute>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            peer_secret: None,
            peer_secret_file: None,
            peer_clock_skew_ms: 30_000,
            allow_plaintext: false,
            tls: None,
            tokens: Vec::new(),
            open_routes: vec![OpenRoute::Health, OpenRoute::Metrics],
        }
    }
}

/// PEM files of this node's certificate chain and key, and of the CA that
/// signed every node's certificate (peers verify each other by it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and errors; never the token itself.
    pub name: String,
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    pub scopes: Vec<Scope>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenRoute {
    Health,
    Metrics,
}

/// The shortest client token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

fn read_trimmed(key: &str, path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

impl SecurityConfig {
    /// The shape of the section, without reading files.
    pub fn validate(&self) -> Result<()> {
        if self.peer_secret.is_some() && self.peer_secret_file.is_some() {
            return Err(Error::config(
                "security.peer_secret_file",
                "set peer_secret or peer_secret_file, not both",
            ));
        }
        if !(1_000..=3_600_000).contains(&self.peer_clock_skew_ms) {
            return Err(Error::config(
                "security.peer_clock_skew_ms",
                "must be between 1000 and 3600000",
            ));
        }
        for (i, token) in self.tokens.iter().enumerate() {
            let key = |field: &str| format!("security.tokens[{i}].{field}");
            if token.name.is_empty() {
                return Err(Error::config(key("name"), "must not be empty"));
            }
            if token.token.is_some() == token.token_file.is_some() {
                return Err(Error::config(
                    key("token"),
                    "set one of token or token_file",
                ));
            }
            if token.scopes.is_empty() {
                return Err(Error::config(
                    key("scopes"),
                    "name at least one of read, write, admin, monitor",
                ));
            }
            if self.tokens[..i].iter().any(|t| t.name == token.name) {
                return Err(Error::config(key("name"), "another token has this name"));
            }
        }
        Ok(())
    }

    /// The secret's bytes, read from the file when it names one.
    pub fn secret(&self) -> Result<Option<Vec<u8>>> {
        match (&self.peer_secret, &self.peer_secret_file) {
            (Some(text), _) => Ok(Some(text.as_bytes().to_vec())),
            (None, Some(path)) => Ok(Some(
                read_trimmed("security.peer_secret_file", path)?.into_bytes(),
            )),
            (None, None) => Ok(None),
        }
    }

    /// (name, token, scopes) of every token, read from files where named.
    pub fn token_texts(&self) -> Result<Vec<(String, String, Vec<Scope>)>> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let key = format!("security.tokens[{i}].token");
                let text = match (&t.token, &t.token_file) {
                    (Some(text), _) => text.clone(),
                    (None, Some(path)) => read_trimmed(&key, path)?,
                    (None, None) => return Err(Error::config(key, "set token or token_file")),
                };
                if text.len() < MIN_TOKEN_BYTES {
                    return Err(Error::config(
                        key,
                        format!("is shorter than {MIN_TOKEN_BYTES} bytes; use a random one"),
                    ));
                }
                Ok((t.name.clone(), text, t.scopes.clone()))
            })
            .collect()
    }

    /// Refuses to expose a node beyond loopback without a usable secret
    /// and without TLS (unless `allow_plaintext`); `secret` is what
    /// [`SecurityConfig::secret`] read. Returns the warnings a loopback
    /// node gets instead.
    pub fn check_exposure(&self, listen: SocketAddr, secret: Option<&[u8]>) -> Result<Vec<String>> {
        let problem = match secret {
            None => Some("no peer secret is set".to_string()),
            Some(s) if s.len() < MIN_SECRET_BYTES => Some(format!(
                "the peer secret is {} bytes; it needs at least {MIN_SECRET_BYTES}",
                s.len()
            )),
            Some(s) if s == EXAMPLE_SECRET.as_bytes() => {
                Some("the peer secret is the example's from config/cluster.toml".to_string())
            }
            Some(_) => None,
        };
        let plaintext = self.tls.is_none() && !self.allow_plaintext;
        if listen.ip().is_loopback() {
            return Ok(problem
                .map(|p| format!("{p}; allowed only because {listen} is loopback"))
                .into_iter()
                .collect());
        }
        if let Some(problem) = problem {
            return Err(Error::config(
                "security.peer_secret",
                format!(
                    "{problem}, and this node listens on {listen}, beyond loopback; set peer_secret_file to a file of at least {MIN_SECRET_BYTES} random bytes shared by every node (for example `head -c 32 /dev/urandom | base64 > secret`)"
                ),
            ));
        }
        if plaintext {
            return Err(Error::config(
                "security.tls",
                format!(
                    "this node listens on {listen}, beyond loopback, without TLS; set [security.tls] cert, key and ca, or allow_plaintext = true on a private network you trust"
                ),
            ));
        }
        Ok(Vec::new())
    }
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
    Monitor,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Monitor => "monitor",
        }
    }
}
