//! Simulations that run the real state machines in one process.
//!
//! - [`antientropy`]: `chorus sim antientropy`, rounds and bytes of
//!   anti-entropy to converge replicas that drifted.
//! - [`ring`]: `chorus sim ring`, the Chord routing state of thousands of
//!   nodes over a simulated network: hops, convergence, churn, load.
//!
//! The deterministic whole-cluster simulation (turmoil) joins it later.

pub mod antientropy;
pub mod network;
pub mod ring;
