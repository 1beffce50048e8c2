//! The sync runtime: sources, the sync loop, health, metrics, conntrack.
//!
//! ```text
//!  Source (kube watch | manifests) ──SourceEvent──▶ World (ServiceTopology, Node)
//!        ──touched services──▶ PendingChanges (per family) ──▶ SyncRunner (per family)
//!        ──due──▶ Backend::sync(view, changes) ──▶ SyncObserver (health, metrics, conntrack)
//! ```
//!
//! - [`source`]: where objects come from. [`source::KubeSource`] watches the
//!   API server, [`source::ManifestSource`] reads YAML files, and
//!   [`source::ChannelSource`] lets an embedder or a test push objects.
//! - [`Runtime`]: the loop. It waits until every source delivered its
//!   initial lists, then keeps one backend per IP family in sync, retries
//!   failures without losing the pending changes, and repairs lost
//!   dataplanes every `syncPeriod` (a clock of its own: churn never
//!   postpones it) and, where the kernel announces changes (nf_tables),
//!   as soon as another process touches our rules (`nft_watch`). When the
//!   dataplane refuses a sync, it finds the service ports responsible,
//!   programs everything else and retries those (beyond upstream; see
//!   `isolation.rs`).
//! - [`SyncObserver`]: what the loop reports to health, metrics and
//!   conntrack cleanup.
//! - [`ProxyBuilder`] → [`Proxy`]: all of the above as the binary runs it
//!   (sources, loop, health and metrics servers, host set-up, conntrack
//!   cleanup), started from a library user's own Tokio runtime with their
//!   own `kube::Client`, backend [`Registry`](crate::backend::Registry) and
//!   prometheus-client registry. The binary is this plus flag parsing.

pub mod conntrack;
mod family;
pub mod health;
mod host_addresses;
mod isolation;
pub mod metrics;
mod nft_watch;
mod node;
mod observer;
mod progress;
mod proxy;
mod shutdown;
pub mod source;
mod sync_loop;
pub mod sysctl;
mod world;

pub use host_addresses::host_addresses;
pub use node::{NodeChange, NodeState, TAINT_TO_BE_DELETED};
pub use observer::{DetectedBy, NodeHealth, RefusalReport, RefusedPort, SyncObserver, SyncReport};
pub use proxy::{Proxy, ProxyBuilder};
pub use shutdown::shutdown_signal;
pub use sync_loop::{Runtime, RuntimeOptions, SyncTiming, cleanup_other_modes, initial_state};
pub use world::TRIGGER_TIME_ANNOTATION;
