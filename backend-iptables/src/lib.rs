//! # backend-iptables
//!
//! Upstream kube-proxy's `iptables` mode, rule for rule: the same chains
//! (`KUBE-SERVICES`, `KUBE-SVC-…`, `KUBE-SEP-…`, …), hashes, comments,
//! probabilities and marks, applied with one `iptables-restore --noflush
//! --counters` per sync. Partial syncs leave the chains of unchanged
//! service ports out of the input, as upstream's `MinimizeIPTablesRestore`.
//!
//! - [`IptablesBackend`]: the [`Backend`](proxy_core::Backend) for one family.
//! - [`IptablesFactory`]: its [`BackendFactory`](proxy_core::backend::BackendFactory).
//! - [`render`]: the pure `NodeView` → rules step; [`restore`] assembles
//!   the restore input.
//! - [`tables`], `trace`, `fake` (feature `fake`): an in-memory iptables, a packet tracer
//!   and the conformance harness built from them.
//!
//! See the crate README for the layout, kernel quirks and what is not done.
#![warn(missing_docs)]

mod backend;
pub mod exec;
mod factory;
#[cfg(feature = "fake")]
pub mod fake;
pub mod iptables;
pub mod jumps;
pub mod names;
pub mod render;
pub mod restore;
pub mod tables;
pub mod top_level;
#[cfg(feature = "trace")]
pub mod trace;

pub use backend::{IptablesBackend, NFT_PORTS_PER_RESTORE};
pub use factory::IptablesFactory;
/// What went wrong talking to iptables: the driver's error (its
/// [`into_backend_error`](proxy_core::exec::ToolError::into_backend_error)
/// gives the kind the runtime acts on).
pub use proxy_core::exec::ToolError as IptablesError;
