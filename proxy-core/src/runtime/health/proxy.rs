//! [`ProxyHealth`]: upstream's `ProxyHealthServer` state: is every IP
//! family's dataplane keeping up, and is this node eligible for traffic?

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::config::KubeProxyConfiguration;
use crate::model::IpFamily;
use crate::runtime::metrics::ProxyMetrics;
use crate::runtime::observer::{NodeHealth, SyncObserver, SyncReport};

use super::clock::{Clock, system_clock};

/// What one family's syncs look like to the health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FamilyState {
    /// The last successful sync (`lastUpdatedMap`).
    last_updated: Option<SystemTime>,
    /// The oldest change queued since then (`oldestPendingQueuedMap`).
    oldest_pending: Option<SystemTime>,
    /// When the sync now running started; `None` between syncs.
    sync_started: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct State {
    families: BTreeMap<IpFamily, FamilyState>,
    node: NodeHealth,
}

/// The health of one family, as `/healthz` reports it under `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyHealth {
    /// The last successful sync; `None` before the first.
    pub last_updated: Option<SystemTime>,
    /// Whether the family keeps up: no change has waited for a sync for
    /// the health timeout or longer, and no sync has been running that long.
    pub healthy: bool,
}

/// A snapshot of the proxy's health, upstream's `ProxyHealth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The most recent successful sync of any family.
    pub last_updated: Option<SystemTime>,
    /// When the snapshot was taken.
    pub current_time: SystemTime,
    /// Whether every family is healthy (node eligibility not included).
    pub healthy: bool,
    /// Per family, for every family that queued or synced anything.
    pub families: BTreeMap<IpFamily, FamilyHealth>,
}

/// Upstream's `ProxyHealthServer` without the HTTP part (see
/// [`HealthServer`](super::HealthServer) for that).
///
/// A family becomes unhealthy when a change queued for it has waited
/// `health_timeout` (2 × `syncPeriod`) or longer without a successful sync
/// since. Start-up counts as healthy: a family is healthy until its first
/// queued change is that late. Upstream reports a family only after its
/// first `Updated`, which it calls when the sync loop starts; here the
/// loop's first `queued` call registers the family, so a backend that never
/// manages its first sync turns unhealthy after the timeout too.
///
/// `/healthz` also needs the node to be eligible: known, not being deleted
/// and not tainted `ToBeDeletedByClusterAutoscaler`. Until the first
/// [`sync_node`](Self::sync_node) the node is unknown, hence ineligible.
///
/// Beyond upstream, two more things make a family unhealthy, so that a
/// hung tool shows even when no change was queued (the loop runs syncs
/// inline: while one is stuck, no change is even seen):
///
/// - a sync that has been running for the health timeout or longer
///   ([`sync_started`](Self::sync_started) without an end since);
/// - a failed sync leaves its changes pending, as if queued when it
///   started, until a sync succeeds: syncs failing for the health timeout
///   (each killed hung command, say) turn the family unhealthy.
///
/// Times come from the injected [`Clock`] only (the `at` of
/// [`SyncObserver::queued`] is ignored) so that both ends of the timeout
/// are measured on one clock.
pub struct ProxyHealth {
    clock: Arc<dyn Clock>,
    health_timeout: Duration,
    metrics: Option<Arc<ProxyMetrics>>,
    state: Mutex<State>,
}

impl fmt::Debug for ProxyHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHealth")
            .field("health_timeout", &self.health_timeout)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl ProxyHealth {
    /// A health tracker with the given timeout and clock.
    pub fn new(health_timeout: Duration, clock: Arc<dyn Clock>) -> Self {
        ProxyHealth {
            clock,
            health_timeout,
            metrics: None,
            state: Mutex::new(State::default()),
        }
    }

    /// A health tracker for `config` (timeout 2 × `syncPeriod` of the active
    /// mode) on the system clock.
    pub fn from_config(config: &KubeProxyConfiguration) -> Self {
        Self::new(config.health_timeout(), system_clock())
    }

    /// Counts `/healthz` and `/livez` answers in `metrics`
    /// (`kubeproxy_proxy_healthz_total{code}`, `kubeproxy_proxy_livez_total{code}`).
    pub fn with_metrics(mut self, metrics: Arc<ProxyMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The health timeout.
    pub fn health_timeout(&self) -> Duration {
        self.health_timeout
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upstream's `QueuedUpdate`: a change for `family` awaits a sync.
    /// Only the oldest pending change counts.
    pub fn queued_update(&self, family: IpFamily) {
        let now = self.clock.now();
        let mut state = self.lock();
        let entry = state.families.entry(family).or_default();
        entry.oldest_pending.get_or_insert(now);
    }

    /// Upstream's `Updated`: `family` synced successfully; nothing is
    /// pending any more.
    pub fn updated(&self, family: IpFamily) {
        let now = self.clock.now();
        let mut state = self.lock();
        let entry = state.families.entry(family).or_default();
        entry.last_updated = Some(now);
        entry.oldest_pending = None;
        entry.sync_started = None;
    }

    /// A sync of `family` started: until [`updated`](Self::updated) or
    /// [`sync_failed`](Self::sync_failed), the family turns unhealthy once
    /// it has been running for the health timeout.
    pub fn sync_started(&self, family: IpFamily) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.families.entry(family).or_default().sync_started = Some(now);
    }

    /// A sync of `family` failed: its changes stay pending, counted from
    /// when that sync started (or from now).
    pub fn sync_failed(&self, family: IpFamily) {
        let now = self.clock.now();
        let mut state = self.lock();
        let entry = state.families.entry(family).or_default();
        let started = entry.sync_started.take().unwrap_or(now);
        entry.oldest_pending.get_or_insert(started);
    }

    /// Records the node's eligibility.
    pub fn sync_node(&self, node: &NodeHealth) {
        self.lock().node = *node;
    }

    /// Whether the node may receive traffic: known, not being deleted, not
    /// tainted `ToBeDeletedByClusterAutoscaler`.
    pub fn node_eligible(&self) -> bool {
        let node = self.lock().node;
        node.known && !node.deleting && !node.tainted_for_deletion
    }

    /// Upstream's `Health()`: the families' health, ignoring the node.
    pub fn health(&self) -> Health {
        let now = self.clock.now();
        let state = self.lock();
        let mut families = BTreeMap::new();
        for (family, s) in &state.families {
            let too_old = |since: Option<SystemTime>| {
                since.is_some_and(|at| {
                    now.duration_since(at).unwrap_or_default() >= self.health_timeout
                })
            };
            let late = too_old(s.oldest_pending) || too_old(s.sync_started);
            families.insert(
                *family,
                FamilyHealth {
                    last_updated: s.last_updated,
                    healthy: !late,
                },
            );
        }
        Health {
            last_updated: state.families.values().filter_map(|s| s.last_updated).max(),
            current_time: now,
            healthy: families.values().all(|f| f.healthy),
            families,
        }
    }

    /// Whether every family keeps up (node eligibility not included): what
    /// the health-check node ports report as `serviceProxyHealthy`.
    pub fn is_healthy(&self) -> bool {
        self.health().healthy
    }

    /// Counts one `/healthz` answer.
    pub(super) fn count_healthz(&self, code: u16) {
        if let Some(metrics) = &self.metrics {
            metrics.record_healthz(code);
        }
    }

    /// Counts one `/livez` answer.
    pub(super) fn count_livez(&self, code: u16) {
        if let Some(metrics) = &self.metrics {
            metrics.record_livez(code);
        }
    }
}

impl SyncObserver for ProxyHealth {
    fn queued(&self, family: IpFamily, _at: SystemTime) {
        self.queued_update(family);
    }

    fn synced(&self, report: &SyncReport<'_>) {
        self.updated(report.family);
    }

    fn node(&self, node: &NodeHealth) {
        self.sync_node(node);
    }

    fn sync_started(&self, family: IpFamily) {
        ProxyHealth::sync_started(self, family);
    }

    fn failed(
        &self,
        family: IpFamily,
        _mode: crate::config::ProxyMode,
        _full: bool,
        _error: &crate::backend::BackendError,
    ) {
        self.sync_failed(family);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::UNIX_EPOCH;

    use super::*;

    /// A health tracker with a 60 s timeout on a clock moved by `advance`.
    fn tracker() -> (ProxyHealth, impl Fn(u64)) {
        let now = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let clock = now.clone();
        let health = ProxyHealth::new(
            Duration::from_secs(60),
            Arc::new(move || *clock.lock().unwrap_or_else(PoisonError::into_inner)),
        );
        let advance = move |secs| {
            *now.lock().unwrap_or_else(PoisonError::into_inner) += Duration::from_secs(secs);
        };
        (health, advance)
    }

    #[test]
    fn a_sync_running_for_the_health_timeout_is_unhealthy_until_it_ends() {
        let (health, advance) = tracker();
        health.updated(IpFamily::V4);
        health.sync_started(IpFamily::V4);
        advance(59);
        assert!(health.is_healthy(), "running, not for long yet");
        advance(1);
        assert!(!health.is_healthy(), "stuck for the health timeout");
        health.updated(IpFamily::V4);
        assert!(health.is_healthy(), "it ended well");
    }

    #[test]
    fn failed_syncs_keep_changes_pending_since_the_first_failure_started() {
        let (health, advance) = tracker();
        health.updated(IpFamily::V4);
        health.sync_started(IpFamily::V4);
        advance(30);
        health.sync_failed(IpFamily::V4);
        assert!(health.is_healthy());
        advance(10);
        health.sync_started(IpFamily::V4);
        advance(10);
        health.sync_failed(IpFamily::V4);
        advance(10);
        assert!(
            !health.is_healthy(),
            "60 s since the first failed sync started"
        );
        health.sync_started(IpFamily::V4);
        health.updated(IpFamily::V4);
        assert!(health.is_healthy());
        // A failure without a start on record counts from now.
        health.sync_failed(IpFamily::V4);
        advance(59);
        assert!(health.is_healthy());
        advance(1);
        assert!(!health.is_healthy());
    }
}
