//! Client authorization: bearer tokens with scopes.
//!
//! When the config lists tokens, every route needs one
//! (`Authorization: Bearer <token>`) whose scopes include the route's, and
//! the routes named in `security.open_routes` (by default `/health` and
//! `/metrics`) need none. With no tokens configured the API is open, as a
//! loopback dev cluster wants it.
//!
//! | scope | routes |
//! |---|---|
//! | `read` | `GET /kv/{key}` |
//! | `write` | `PUT` and `DELETE /kv/{key}` |
//! | `read`, `write` | `POST /batch`: any known token; each op then needs its own scope (a `get` `read`, a `put` or `delete` `write`) and fails alone with 403 without it |
//! | `admin` | `/cluster`, `/admin/*` (leave, remove, anti-entropy control, replica views) |
//! | `monitor` | `/health`, `/metrics`, when they are not open |
//!
//! `/peer` is not a client route: peers authenticate with the cluster
//! secret (`peer_auth`). A token is never kept: only its SHA-256, so
//! comparing a presented token costs a hash and a map lookup whose timing
//! says nothing about the stored tokens.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

pub use crate::config::Scope;

/// Why a request was not let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one no configured token matches: 401.
    Unauthenticated(&'static str),
    /// A known token without the scope the route needs: 403.
    Forbidden { token: String, needs: Scope },
}

/// The configured tokens, by the SHA-256 of their text.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], (String, Vec<Scope>)>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Tokens as (name, token text, scopes).
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, &'a str, &'a [Scope])>) -> Tokens {
        Tokens {
            by_digest: tokens
                .into_iter()
                .map(|(name, token, scopes)| (digest(token), (name.to_string(), scopes.to_vec())))
                .collect(),
        }
    }

    /// No tokens configured: every route is open.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Lets a request through when its `Authorization` header names a token
    /// with every scope in `needs`; the token's name on success, for the
    /// logs. The first scope missing is the one a refusal names.
    pub fn authorize(&self, authorization: Option<&[u8]>, needs: &[Scope]) -> Result<&str, Denied> {
        let (name, scopes) = self.identify(authorization)?;
        match needs.iter().find(|scope| !scopes.contains(scope)) {
            None => Ok(name),
            Some(&missing) => Err(Denied::Forbidden {
                token: name.to_string(),
                needs: missing,
            }),
        }
    }

    /// The name and scopes of the token the `Authorization` header names:
    /// for a route whose scopes depend on its body (`POST /batch`).
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<(&str, &[Scope]), Denied> {
        let header = authorization.ok_or(Denied::Unauthenticated("no Authorization header"))?;
        // The scheme is case-insensitive (RFC 7235 §2.1) and one or more
        // spaces part it from the token.
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(Denied::Unauthenticated(
                "the Authorization header is not `Bearer <token>`",
            ))?;
        let (name, scopes) = self
            .by_digest
            .get(&digest(token))
            .ok_or(Denied::Unauthenticated(
                "the token is not one this cluster knows",
            ))?;
        Ok((name, scopes))
    }
}
