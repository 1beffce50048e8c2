//! Conntrack cleanup: after a successful sync, delete the UDP conntrack
//! entries that still send a service's traffic to an endpoint that no
//! longer serves it (upstream's `conntrack.CleanStaleEntries`). Without
//! this, a UDP client (a DNS resolver) keeps talking to a dead pod for as
//! long as it keeps sending.
//!
//! - [`ConntrackCleaner`]: the [`SyncObserver`](crate::runtime::SyncObserver).
//! - [`StaleFlowFilter`]: the decision, a pure function of the view.
//! - [`ConntrackTable`]: table access; [`NetlinkConntrack`] (the kernel over
//!   netlink), [`CliConntrack`] (the `conntrack` tool), [`HostConntrack`]
//!   (the first, falling back to the second).
//!
//! Wiring, in the binary:
//!
//! ```no_run
//! # fn wire(metrics: std::sync::Arc<proxy_core::runtime::metrics::ProxyMetrics>) {
//! use std::sync::Arc;
//! use proxy_core::runtime::conntrack::ConntrackCleaner;
//! let cleaner = Arc::new(ConntrackCleaner::host().with_metrics(metrics));
//! // pass `cleaner` to the runtime as an observer
//! # }
//! ```

mod cleaner;
mod cli;
mod entry;
mod host;
mod netlink;
mod stale;
mod table;

pub use cleaner::{CleanupOutcome, ConntrackCleaner};
pub use cli::{CliConntrack, parse_line};
pub use entry::{ConntrackEntry, FlowTuple, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
pub use host::HostConntrack;
pub use netlink::NetlinkConntrack;
pub use stale::StaleFlowFilter;
pub use table::ConntrackTable;
