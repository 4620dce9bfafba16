//! Scaffolding shared by Caracal's privileged integration tests, one
//! copy of each helper: the root check that skips (or, under
//! `CARACAL_REQUIRE_PRIVILEGED=1`, fails), names unique to a test run,
//! network namespaces that remove themselves, commands that must
//! succeed, child processes stopped on drop, waiting with a deadline,
//! and DPDK's `dpdk-testpmd` as a peer.
//!
//! A dev-dependency only: nothing here ships in a binary. It knows no
//! Caracal crate, so every test crate (dataplane, control, perf) can use
//! it without a cycle.
#![forbid(unsafe_code)]

pub mod netns;
pub mod privilege;
pub mod process;
pub mod testpmd;
pub mod wait;

pub use netns::{in_netns, Netns};
pub use privilege::{privileged, require_privileged, skip};
pub use process::{run, unique, Process};
pub use wait::wait_until;
