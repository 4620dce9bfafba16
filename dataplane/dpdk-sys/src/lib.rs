//! Caracal's bindings to the system DPDK (`libdpdk` 22.11, found with
//! pkg-config): [`sys`] holds the raw bindgen output and the C shim for
//! DPDK's inline functions; the rest is a small safe API over the parts
//! Caracal uses and compares itself with.
//!
//! - [`Eal`]: the Environment Abstraction Layer, initialised once per
//!   process, without hugepages and without touching PCI devices.
//! - [`AclContext`]: `rte_acl`, DPDK's packet classifier, for the IPv4
//!   5-tuple ([`AclRule`], [`AclKey`]).
//! - [`Lpm4`] and [`Lpm6`]: `rte_lpm` (DIR-24-8) and `rte_lpm6`.
//! - [`rdtsc`]: the time-stamp counter, for cycle counts.
//!
//! This is one of the few crates of the workspace allowed `unsafe` (see
//! STYLE.md); every block says why it is sound. Every DPDK object is made
//! from an [`Eal`] reference, so none can exist before the EAL runs.

#![allow(unsafe_code)]

mod acl;
mod eal;
mod error;
mod lpm;
pub mod sys;

pub use acl::{AclAlgorithm, AclContext, AclKey, AclRule, ACL_MAX_PRIORITY};
pub use eal::{rdtsc, Eal, EalConfig};
pub use error::DpdkError;
pub use lpm::{Lpm4, Lpm6};
