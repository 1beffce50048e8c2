//! # backend-nftables
//!
//! Upstream kube-proxy's nftables mode: tables `ip kube-proxy` and
//! `ip6 kube-proxy` with upstream's sets, verdict maps and chain names,
//! programmed as nf_tables transactions: over one persistent netlink
//! socket ([`NetlinkExecutor`], encoded as nft 1.0.6 encodes them), or as
//! `nft -f -` text ([`NftCli`]) when `nft` is a wrapper.
//!
//! - [`NftablesBackend`]: the [`Backend`](proxy_core::Backend) for one family.
//!   It keeps a model of what it committed, so a partial sync sends only the
//!   objects of changed service ports and never lists the kernel's table.
//! - [`NftablesFactory`]: the mode's [`BackendFactory`](proxy_core::backend::BackendFactory).
//! - [`fake`]: an in-memory nftables with a packet tracer and a conformance
//!   [`Harness`](proxy_core::conformance::Harness) (feature `fake`; used by tests).
//!
//! The layout, why it programs 30k services in seconds, and kernel quirks
//! are in the crate README.
#![warn(missing_docs)]

mod backend;
mod error;
mod exec;
mod factory;
#[cfg(feature = "trace")]
pub mod fake;
pub mod ir;
pub mod names;
pub mod netlink;
mod plan;
pub mod render;
mod state;

pub use backend::{CHUNK_OBJECTS, NftablesBackend, STALE_CHAIN_DELAY};
pub use error::NftError;
pub use exec::{Executor, NftCli, lists_table};
pub use factory::{MIN_KERNEL, NftablesFactory, SKIP_KERNEL_CHECK_ENV, parse_kernel_version};
pub use netlink::NetlinkExecutor;
