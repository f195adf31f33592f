//! Security: who may talk to a node (docs/security.md has the threat model).
//!
//! - [`peer_auth`]: every node-to-node request carries an HMAC-SHA256 keyed
//!   by the cluster's shared secret, over the sender, a boot, a sequence
//!   number, a timestamp and the body; receivers refuse wrong MACs, stale
//!   timestamps and replays before they decode anything. Chosen over mutual
//!   TLS because one secret in the config authenticates a node without a
//!   certificate authority, rotates by editing one file, and authenticates
//!   over the simulation's network as over TCP; TLS, when configured, adds
//!   confidentiality on top.
//! - [`tls`]: rustls for the listener and for the connections a node and
//!   its clients open, when `[security.tls]` names the certificates.
//! - [`tokens`]: client bearer tokens with scopes.
//!
//! The HMAC and token cores are pure: they take the clock and the bytes
//! from the caller.

pub mod peer;
pub mod peer_auth;
pub mod tls;
pub mod tokens;

#[cfg(test)]
mod tests;
