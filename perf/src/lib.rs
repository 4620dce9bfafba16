//! Caracal's performance tooling: frame builders shared by the criterion
//! benches (and, later, the packet generator and the comparison harness).

pub mod frames;
pub mod harness;
pub mod peers;
pub mod pktgen;
pub mod rng;
