//! Caracal's dataplane: a userspace, poll-mode packet processor in the
//! style of FD.io VPP.
//!
//! Packets travel as [`buffer::BufferIndex`] tokens in vectors
//! ([`buffer::Frame`]) through a graph of nodes ([`graph`]); workers
//! ([`worker`]) poll ports ([`port`]) and forward by immutable table
//! snapshots ([`tables`]) that the [`engine`] publishes when the gRPC
//! [`api`] changes the desired state.

pub mod api;
pub mod buffer;
pub mod config;
pub mod engine;
pub mod flow;
pub mod graph;
pub mod model;
pub mod policy;
pub mod port;
pub mod tables;
pub mod worker;

pub use config::{EngineConfig, WorkerMode};
pub use engine::{Engine, EngineError};
