//! Simulations that run the real state machines in one process.
//!
//! - [`antientropy`]: `chorus sim antientropy`, rounds and bytes of
//!   anti-entropy to converge replicas that drifted.
//! - [`ring`]: `chorus sim ring`, the Chord routing state of thousands of
//!   nodes over a simulated network: hops, convergence, churn, load.
//!
//! - [`cluster`]: `chorus sim cluster` and `tests/simulation.rs`, whole
//!   clusters of real nodes on turmoil's simulated network under a
//!   nemesis, checked by [`crate::check`].

pub mod antientropy;
pub mod cluster;
pub mod network;
pub mod ring;
