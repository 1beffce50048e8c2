//! Helpers of `e2e_netns.rs`: the `kube-proxy` binary run inside the node
//! namespace of a conformance scenario's [`NodeTopology`], fed by files.
//!
//! - [`files`]: the scenario as a manifest directory and a configuration
//!   file, in a temporary directory.
//! - [`process`]: the binary started inside the node namespace, waited for
//!   until it synced, stopped with SIGTERM.
//! - [`http`]: a blocking HTTP GET, for `/healthz` and `/metrics`.
//! - [`rules`]: what kube-proxy left in the node namespace's kernel.
//! - [`scenario_run`]: one scenario end to end, and the report of a mode.
//! - [`health_check`]: health-check node ports of a node with a dummy
//!   interface, per `nodePortAddresses`.
//! - [`load`]: new TCP connections at a bounded rate, counted (`chaos_netns.rs`).
//!
//! [`NodeTopology`]: proxy_core::conformance::netns::NodeTopology

pub mod files;
pub mod health_check;
pub mod http;
pub mod process;
pub mod rules;
pub mod scenario_run;
// Used by chaos_netns.rs only.
#[allow(dead_code)]
pub mod load;
