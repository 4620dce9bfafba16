//! Rust types and gRPC stubs generated from Caracal's `.proto` files.
//!
//! `dataplane` is the API of `caracal-dataplane` (interfaces, routes,
//! counters); the agent's CNI API joins it in a later slice.

/// `caracal.dataplane.v1`: the dataplane's gRPC API.
pub mod dataplane {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("caracal.dataplane.v1");
}

/// `caracal.agent.v1`: the agent's gRPC API (CNI, status).
pub mod agent {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("caracal.agent.v1");
}
