//! The [`Backend`] trait and what goes with it: [`Capabilities`],
//! [`SyncStats`], [`BackendError`], and the [`BackendFactory`] /
//! [`Registry`] pair that picks a backend at start-up.
//!
//! # Writing a backend
//!
//! A backend turns a [`NodeView`] into dataplane state for
//! one IP family. Everything about *which* endpoints to use is already decided
//! in the view ([`ServicePortView`](crate::ServicePortView): the cluster and
//! local endpoint lists and the [`Target`](crate::Target) of internal and
//! external traffic); a backend only expresses that decision:
//!
//! 1. Implement [`Backend`]: `sync` makes the dataplane equal to the view,
//!    `cleanup` removes everything the backend could have installed,
//!    `render` prints what a full sync would write (for `--dry-run`).
//! 2. Declare what it cannot express in [`Capabilities`]; the conformance
//!    suite (feature `conformance`) skips those scenarios and says why.
//! 3. Implement [`BackendFactory`] and add it to the binary's [`Registry`].
//!
//! The runtime owns retries, health and metrics: a backend only reports
//! errors, with a [`BackendErrorKind`] saying what kind of failure it was.

mod capabilities;
mod commands;
mod context;
mod error;
mod factory;
pub mod privileges;
mod progress;
mod stats;

pub use capabilities::{Capabilities, Capability};
#[cfg(test)]
pub(crate) use commands::Names;
pub use commands::{CommandLimits, TimeoutRecorder};
pub use context::{BackendContext, LocalTrafficDetector};
pub use error::{BackendError, BackendErrorKind};
pub use factory::{BackendFactory, Registry};
pub use progress::SyncProgress;
pub use stats::SyncStats;

use std::time::Duration;

use crate::changes::ChangeSet;
use crate::config::ProxyMode;
use crate::view::NodeView;

/// A dataplane for one IP family.
///
/// One value per family; no process-global state, so several can live in one
/// process (dual-stack, tests).
#[async_trait::async_trait]
pub trait Backend: Send {
    /// The mode this backend implements; used in logs and metric labels.
    fn mode(&self) -> ProxyMode;

    /// What this backend can express. Data, not behaviour.
    fn capabilities(&self) -> Capabilities;

    /// Makes the dataplane equal to `view`.
    ///
    /// `changes` names the service ports that may differ since the last
    /// successful sync; every other port is unchanged and may be skipped.
    /// When `changes.is_full()`, the backend must trust nothing it believes
    /// about the dataplane and rewrite everything. A failed sync must leave
    /// rules that worked in place where the dataplane allows (atomic
    /// transactions); the runtime retries with a full change set.
    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError>;

    /// Removes everything this backend could have installed (mode switch,
    /// `--cleanup`), and nothing else.
    async fn cleanup(&mut self) -> Result<(), BackendError>;

    /// Checks cheaply whether something outside removed this backend's
    /// state (upstream's canary chains: an `iptables -F`, a firewalld
    /// reload). The runtime calls it every `syncPeriod` and forces a full
    /// sync when it returns true. The default never reports a loss.
    async fn dataplane_lost(&mut self) -> bool {
        false
    }

    /// How soon this backend wants `sync` called again although nothing
    /// changed, for work the dataplane finishes on its own clock (the IPVS
    /// mode's graceful termination: a draining real server is deleted once
    /// its connections are gone).
    ///
    /// The runtime asks after every `sync` call. `Some(d)`: a sync runs at
    /// most `d` later (`minSyncPeriod` still applies), even with nothing
    /// pending: then a partial one naming no service port, on the view of
    /// the last successful sync. Any sync in between serves the request,
    /// and the answer after it counts. The default, `None`, never asks.
    fn next_resync(&self) -> Option<Duration> {
        None
    }

    /// The exact dataplane program a full sync of `view` would apply
    /// (an `iptables-restore` input, an `nft` script, a listener table),
    /// without touching the kernel. Used by `--dry-run`.
    fn render(&self, view: &NodeView) -> Result<String, BackendError>;

    /// The dataplane state this backend holds in its own process, as one
    /// JSON document, for inspection (`kube-proxy trace` and `diff` read
    /// it from the metrics server's `/proxyListeners`): the userspace
    /// mode's listener table. The runtime asks after every successful sync.
    /// Backends whose state lives in the kernel (read from there) return
    /// `None`, the default.
    fn listing(&self) -> Option<String> {
        None
    }
}
