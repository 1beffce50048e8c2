//! [`SyncObserver`]: how health, metrics and conntrack cleanup learn what
//! the sync loop did, without the loop knowing about any of them.
//!
//! The loop calls every registered observer, in registration order, from its
//! own task: an observer must not block (hand long work to a task of its own).

use std::time::{Duration, SystemTime};

use crate::backend::{BackendError, SyncStats};
use crate::changes::ChangeSet;
use crate::config::ProxyMode;
use crate::model::{IpFamily, ServicePortName};
use crate::view::NodeView;

/// What one successful [`Backend::sync`](crate::Backend::sync) of one family did.
#[derive(Debug)]
pub struct SyncReport<'a> {
    /// The family synced.
    pub family: IpFamily,
    /// The backend's mode.
    pub mode: ProxyMode,
    /// Whether the backend was given a full change set.
    pub full: bool,
    /// How long `Backend::sync` took.
    pub duration: Duration,
    /// What the backend reported.
    pub stats: &'a SyncStats,
    /// The view now programmed.
    pub view: &'a NodeView,
    /// The view programmed before this sync (empty before the first sync).
    pub previous: &'a NodeView,
    /// The service ports that may differ between `previous` and `view`
    /// (full on start-up, after a failure, on a node change, periodically).
    pub changes: &'a ChangeSet,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotations of
    /// the EndpointSlices whose changes this sync programmed (for
    /// `network_programming_duration_seconds`).
    pub trigger_times: &'a [SystemTime],
}

/// What the node's own object says about its eligibility (for `/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeHealth {
    /// The Node object is known. A source without nodes (manifests) reports
    /// `true`: there is no cluster to be ineligible in.
    pub known: bool,
    /// The Node has a `deletionTimestamp`.
    pub deleting: bool,
    /// The Node has the `ToBeDeletedByClusterAutoscaler` taint.
    pub tainted_for_deletion: bool,
}

/// Receives the sync loop's events. Every method has an empty default, so an
/// observer implements only what it needs.
pub trait SyncObserver: Send + Sync {
    /// A change for `family` was queued at `at` and a sync will follow
    /// (healthz `QueuedUpdate`, `sync_proxy_rules_last_queued_timestamp_seconds`).
    /// Also called once per family when the loop starts.
    fn queued(&self, _family: IpFamily, _at: SystemTime) {}

    /// A sync of one family succeeded.
    fn synced(&self, _report: &SyncReport<'_>) {}

    /// A sync of one family failed; `full` says whether it was a full sync
    /// (`..._iptables_partial_restore_failures_total` counts the others).
    /// Called for every refused call of `Backend::sync`, also those of
    /// failure isolation. When the sync as a whole fails the loop keeps the
    /// pending changes and retries with a full sync.
    fn failed(&self, _family: IpFamily, _mode: ProxyMode, _full: bool, _error: &BackendError) {}

    /// Changes not yet programmed: services and EndpointSlices changed since
    /// the last successful sync (`sync_proxy_rules_{service,endpoint}_changes_pending`).
    /// Called after every batch of source events and after every sync; the
    /// counters `..._changes_total` are the sum of increases.
    fn pending(&self, _service_changes: usize, _endpoint_changes: usize) {}

    /// The node's own object changed (or became known).
    fn node(&self, _node: &NodeHealth) {}

    /// The backend of `family` was just called to sync; [`synced`](Self::synced)
    /// or [`failed`](Self::failed) follows when it returns. The loop runs
    /// syncs inline, so nothing else is reported meanwhile: this is how
    /// health notices a sync stuck in the backend (a hung tool).
    fn sync_started(&self, _family: IpFamily) {}

    /// The set of service ports the dataplane refuses changed: a sync
    /// isolated new ones, or programmed or dropped some (beyond upstream;
    /// see [`RefusalReport`]).
    fn refused(&self, _report: &RefusalReport<'_>) {}

    /// Something outside changed or removed this family's dataplane state,
    /// and a full sync was requested to repair it
    /// (`kubeproxy_sync_proxy_rules_external_changes_total`).
    fn external_change(&self, _family: IpFamily, _mode: ProxyMode, _detected_by: DetectedBy) {}

    /// After a successful sync, the backend's in-process dataplane state as
    /// JSON ([`Backend::listing`](crate::Backend::listing)), for backends
    /// that publish one (the metrics server serves it).
    fn listing(&self, _family: IpFamily, _mode: ProxyMode, _listing: &str) {}
}

/// A service port whose wanted version the dataplane refused (beyond
/// upstream). The runtime holds it back, at the version last programmed or
/// absent if it never was, programs everything else, and retries it with
/// back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPort {
    /// The port.
    pub name: ServicePortName,
    /// The error of the last refusal, with its sources (the tool's message).
    pub error: String,
    /// When it was first refused.
    pub since: SystemTime,
}

/// Every service port of one family the dataplane currently refuses, after
/// a sync that changed that set.
#[derive(Debug)]
pub struct RefusalReport<'a> {
    /// The family.
    pub family: IpFamily,
    /// The backend's mode.
    pub mode: ProxyMode,
    /// The refused ports, sorted by name (empty once every one was
    /// programmed or is no longer wanted).
    pub refused: &'a [RefusedPort],
    /// How many of them this sync found refused for the first time.
    pub newly_refused: usize,
}

/// How the loop learned that the dataplane was changed from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectedBy {
    /// The periodic drift check ([`Backend::dataplane_lost`](crate::Backend::dataplane_lost)),
    /// every `syncPeriod`.
    Poll,
    /// An nf_tables netlink notification of a change made by another
    /// process to our tables, chains or rules.
    Netlink,
}

impl DetectedBy {
    /// The metric label value: `poll` or `netlink`.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectedBy::Poll => "poll",
            DetectedBy::Netlink => "netlink",
        }
    }
}
