//! Caracal's control side: the node agent `caracal-agent` and the CLI
//! `caracalctl`.
//!
//! Everything here talks to the dataplane through its gRPC API
//! ([`dataplane_client`]); nothing in the dataplane depends on this crate.

#![forbid(unsafe_code)]

pub mod agent;
pub mod dataplane_client;
pub mod ipam;
pub mod lab;
