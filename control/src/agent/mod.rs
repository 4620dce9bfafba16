//! The node agent `caracal-agent`.
//!
//! Data flows one way:
//!
//! ```text
//! datastore source ──► Store ─┐                      (revision)
//!  (kubernetes | dir:)        ├─► calc ─► diff ─► sync ─► dataplane
//! CNI server ──► endpoints ───┘   (pure)  (pure)   (gRPC, backoff)
//!      └──► IPAM
//! ```
//!
//! - [`datastore`]: the sources (kube-rs watchers, or a folder of
//!   manifests) and the in-memory [`datastore::Store`] of typed objects.
//! - [`endpoints`]: this node's pod attachments, persisted under the state
//!   folder; [`memif`]: what a memif pod's attachment is made of.
//! - [`revision`]: the counter every change advances, and which the sync
//!   reports as synced once the dataplane runs it.
//! - [`calc`], [`diff`], [`model`], [`pools`], [`policy`]: the pure
//!   calculation, from objects and endpoints to the desired dataplane
//!   state (NetworkPolicies compiled to IP sets, policies and per-endpoint
//!   tiers included), to ops.
//! - [`sync`], [`policy_sync`], [`dataplane`], [`backoff`]: the loop that
//!   applies them over the dataplane's gRPC API.
//! - [`cni_server`], [`status`], [`context`], [`socket`]: the agent's own
//!   gRPC API (`caracal.agent.v1`) on its unix socket.
//! - [`daemon`]: all of it put together, as `caracal-agent` runs it.

pub mod backoff;
pub mod calc;
pub mod cni_server;
pub mod context;
pub mod daemon;
pub mod dataplane;
pub mod datastore;
pub mod diff;
pub mod endpoints;
pub mod memif;
pub mod model;
pub mod policy;
pub mod policy_sync;
pub mod pools;
pub mod revision;
pub mod socket;
pub mod status;
pub mod sync;

pub use daemon::{run, AgentConfig, AgentError};
