//! One IP family's share of the loop: its backend, the view it last
//! programmed, what is pending since, and when to sync next.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{Backend, SyncProgress};
use crate::changes::{ChangeSet, PendingChanges};
use crate::model::{IpFamily, NodeInfo, ServiceKey, ServicePortName};
use crate::runner::{RunReason, SyncRunner};
use crate::topology::ServiceTopology;
use crate::view::NodeView;

use super::isolation::{Found, Isolator, Quarantine, call_budget};
use super::observer::{DetectedBy, RefusalReport, SyncObserver, SyncReport};
use super::progress::{log_sync_progress, with_progress};
use super::sync_loop::SyncTiming;

/// A backend and its sync state, for one family.
pub(crate) struct FamilyState {
    pub(crate) family: IpFamily,
    pub(crate) backend: Box<dyn Backend>,
    /// The backend's [`BackendContext::progress`](crate::backend::BackendContext::progress).
    pub(crate) progress: Arc<SyncProgress>,
    /// The view of the last successful sync (empty before the first).
    pub(crate) synced: NodeView,
    pub(crate) pending: PendingChanges,
    pub(crate) runner: SyncRunner,
    /// Trigger times of the slice changes not yet programmed.
    pub(crate) trigger_times: Vec<SystemTime>,
    last_full: Option<Instant>,
    full_sync_period: Duration,
    /// Service ports the dataplane refused (see [`super::isolation`]).
    quarantine: Quarantine,
    /// The last `Backend::sync` call was refused: the next one is full.
    dataplane_unsure: bool,
    /// When the backend asked to be synced again although nothing changed
    /// ([`Backend::next_resync`]).
    resync_at: Option<Instant>,
}

/// How a sync attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing was pending: the backend was not called.
    Idle,
    /// The backend succeeded (or the pending changes collapsed to nothing).
    Synced,
    /// Everything was programmed but service ports the dataplane refuses,
    /// which are held back and retried (see [`super::isolation`]); counts
    /// as a successful sync for health.
    Isolated,
    /// The backend failed; the changes stay pending.
    Failed,
}

impl FamilyState {
    /// A family whose first sync is a full one, requested at `now`.
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        node: Arc<NodeInfo>,
        family: IpFamily,
        timing: &SyncTiming,
        now: Instant,
    ) -> Self {
        let mut runner = SyncRunner::new(
            timing.min_interval,
            timing.sync_period,
            timing.retry_interval,
            now,
        );
        runner.request(now);
        let mut pending = PendingChanges::new();
        pending.require_full();
        FamilyState {
            family,
            backend,
            progress: Arc::default(),
            synced: NodeView::empty(family, node),
            pending,
            runner,
            trigger_times: Vec::new(),
            last_full: None,
            full_sync_period: timing.full_sync_period,
            quarantine: Quarantine::new(timing.retry_interval, timing.sync_period),
            dataplane_unsure: false,
            resync_at: None,
        }
    }

    /// Runs one sync attempt if the runner says one is due at `now`.
    pub(crate) async fn sync_if_due(
        &mut self,
        now: Instant,
        topology: &ServiceTopology,
        node: &Arc<NodeInfo>,
        observers: &[Arc<dyn SyncObserver>],
    ) -> Option<Outcome> {
        let reason = self.runner.reason(now)?;
        self.runner.started(now);
        // The periodic run keeps its own clock in the runner (changes do not
        // postpone it), so the drift check runs every `syncPeriod` and the
        // full sync is at most `syncPeriod` late, whatever the churn.
        if reason == RunReason::Periodic {
            if self.backend.dataplane_lost().await {
                tracing::warn!(family = %self.family, mode = %self.backend.mode(), "dataplane state was lost (flushed from outside?); forcing a full sync");
                self.pending.require_full();
                for observer in observers {
                    observer.external_change(self.family, self.backend.mode(), DetectedBy::Poll);
                }
            }
            if self.full_sync_due(now) {
                self.pending.require_full();
            }
        }
        let outcome = self.sync(reason, topology, node, observers).await;
        let end = super::sync_loop::now();
        if outcome != Outcome::Idle {
            // the backend was called: its answer replaces any earlier one
            self.resync_at = self
                .backend
                .next_resync()
                .and_then(|after| end.checked_add(after));
            self.runner.request_at(self.resync_at);
        }
        let settled = self.settled(outcome);
        if outcome == Outcome::Idle && settled {
            // An idle periodic check wrote nothing: it does not hold back
            // the next change (or repair) by the minimum interval.
            self.runner.finished_idle(end);
        } else {
            self.runner.finished(end, settled);
        }
        Some(outcome)
    }

    /// Whether the last full sync is `full_sync_period` old (or none
    /// happened yet). Any full sync resets this clock; requested partial
    /// syncs do not.
    fn full_sync_due(&self, now: Instant) -> bool {
        self.last_full
            .is_none_or(|at| now.saturating_duration_since(at) >= self.full_sync_period)
    }

    /// Something outside changed this family's dataplane (an nf_tables
    /// notification): the next sync is a full one, requested at `now`
    /// (the runner's minimum interval still holds).
    pub(crate) fn external_change(&mut self, now: Instant, observers: &[Arc<dyn SyncObserver>]) {
        tracing::warn!(family = %self.family, mode = %self.backend.mode(), "our nf_tables rules were changed from outside; requesting a full sync");
        self.pending.require_full();
        self.runner.request(now);
        for observer in observers {
            observer.external_change(self.family, self.backend.mode(), DetectedBy::Netlink);
        }
    }

    /// Whether nothing is left to retry after `outcome`: the runner then
    /// resets its back-off; otherwise it schedules a retry.
    fn settled(&self, outcome: Outcome) -> bool {
        outcome != Outcome::Failed && self.quarantine.is_empty() && self.pending.is_empty()
    }

    /// One sync: the pending changes, isolating the service ports the
    /// dataplane refuses, then the held-back ports that are due for a retry
    /// (see [`super::isolation`]).
    async fn sync(
        &mut self,
        reason: RunReason,
        topology: &ServiceTopology,
        node: &Arc<NodeInfo>,
        observers: &[Arc<dyn SyncObserver>],
    ) -> Outcome {
        let started = super::sync_loop::now();
        let retry_all = matches!(reason, RunReason::Retry | RunReason::Periodic);
        if self.pending.is_empty() && !self.quarantine.any_due(started, retry_all) {
            if self.resync_at.is_some_and(|at| at <= started) {
                return self.resync(started, observers).await;
            }
            return Outcome::Idle;
        }
        let mode = self.backend.mode();
        // Held-back ports are recomputed on every sync: released when no
        // longer different, retried at once when changed.
        self.pending.touch_all(self.quarantine.services());
        let (wanted, changes) = self.pending.prepare(topology, &self.synced, node);
        let changed = if changes.is_full() {
            ChangeSet::all_between(&self.synced, &wanted)
        } else {
            changes.clone()
        };
        let released = self
            .quarantine
            .release_unless(|name| changed.contains(name));
        let (mut main, mut retry) = (Vec::new(), Vec::new());
        for name in changed.ports() {
            if !self.quarantine.contains(name) {
                main.push(name.clone());
            } else if self
                .quarantine
                .should_retry(name, wanted.get(name), started, retry_all)
            {
                retry.push(name.clone());
            }
        }
        for observer in observers {
            observer.sync_started(self.family);
        }
        let mut iso = Isolator::new(
            &mut *self.backend,
            self.family,
            observers,
            &wanted,
            self.synced.clone(),
            changed.ports().cloned().collect(),
            changes.is_full() || self.dataplane_unsure,
            call_budget(main.len()),
        );
        // Only retries, and no full sync asked for: the first retry call
        // stands in for the (empty) main one.
        let retries_only = main.is_empty() && !changes.is_full() && !retry.is_empty();
        let programmed = if retries_only {
            Ok(Found::default())
        } else {
            self.progress.set(0);
            iso.progress = self.progress.clone();
            let (family, total, progress) = (self.family, main.len(), self.progress.clone());
            with_progress(&progress, iso.program(main, false), |tick| {
                log_sync_progress(family, mode, total, tick)
            })
            .await
        };
        let found = match programmed {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(family = %self.family, %mode, full = changes.is_full(), error = %error_chain(&error), "sync failed; changes stay pending and the retry is a full sync");
                if iso.accepted {
                    // What the dataplane holds now; the full retry starts from it.
                    self.synced = iso.good;
                }
                self.dataplane_unsure = true;
                self.pending.require_full();
                if !released.is_empty() {
                    self.report_refusals(observers, 0);
                }
                return Outcome::Failed;
            }
        };
        let retried = if retry.is_empty() {
            Found::default()
        } else {
            iso.budget = iso.calls + call_budget(retry.len());
            match iso.program(retry.clone(), true).await {
                Ok(found) => found,
                Err(error) => {
                    let ports: Vec<String> = retry.iter().map(ToString::to_string).collect();
                    tracing::warn!(family = %self.family, %mode, ports = %ports.join(", "), error = %error_chain(&error), "retrying refused service ports failed; they stay held back");
                    Found {
                        culprits: Vec::new(),
                        unresolved: retry.clone(),
                    }
                }
            }
        };
        let duration = super::sync_loop::now().saturating_duration_since(started);
        let programmed_any = iso.accepted || iso.calls == 0;
        let full = iso.full_done;
        let stats = std::mem::take(&mut iso.stats);
        self.dataplane_unsure = iso.full_next;
        let calls = iso.calls;
        let good = iso.good;
        let still_differing = iso.differing;

        let newly = self.hold_back(found, retried, &retry, &wanted, started);
        let refusals_changed =
            newly > 0 || !released.is_empty() || retry.iter().any(|n| !self.quarantine.contains(n));
        for name in &released {
            tracing::info!(family = %self.family, %mode, namespace = %name.service.namespace, service = %name.service.name, port = %name.port, protocol = %name.protocol, "a service port the dataplane refused is no longer pending (deleted, or back at its programmed version); no longer held back");
        }

        if full {
            self.last_full = Some(started);
        }
        tracing::debug!(family = %self.family, %mode, full, ports = changed.len(), held_back = still_differing.len(), calls, objects = stats.objects_written, ?duration, "synced");
        // Ports still not programmed (untried for lack of budget) stay pending.
        let unresolved: Vec<ServiceKey> = still_differing
            .iter()
            .filter(|n| !self.quarantine.contains(n))
            .map(|n| n.service.clone())
            .collect();
        let report_changes = if full {
            ChangeSet::full()
        } else {
            ChangeSet::partial(
                changed
                    .ports()
                    .filter(|n| !still_differing.contains(*n))
                    .cloned(),
            )
        };
        let previous = std::mem::replace(&mut self.synced, good);
        self.pending.clear();
        self.pending.touch_all(unresolved);
        if programmed_any {
            let trigger_times = std::mem::take(&mut self.trigger_times);
            let report = SyncReport {
                family: self.family,
                mode,
                full,
                duration,
                stats: &stats,
                view: &self.synced,
                previous: &previous,
                changes: &report_changes,
                trigger_times: &trigger_times,
            };
            for observer in observers {
                observer.synced(&report);
            }
        }
        if let Some(listing) = self.backend.listing() {
            for observer in observers {
                observer.listing(self.family, mode, &listing);
            }
        }
        if refusals_changed {
            self.report_refusals(observers, newly);
        }
        if self.quarantine.is_empty() && self.pending.is_empty() {
            Outcome::Synced
        } else {
            Outcome::Isolated
        }
    }

    /// The sync the backend asked for ([`Backend::next_resync`]) with
    /// nothing pending: a partial one naming no port, on the view of the
    /// last successful sync.
    async fn resync(&mut self, started: Instant, observers: &[Arc<dyn SyncObserver>]) -> Outcome {
        let mode = self.backend.mode();
        for observer in observers {
            observer.sync_started(self.family);
        }
        let changes = ChangeSet::partial([]);
        match self.backend.sync(&self.synced, &changes).await {
            Ok(stats) => {
                let duration = super::sync_loop::now().saturating_duration_since(started);
                tracing::debug!(family = %self.family, %mode, objects = stats.objects_written, ?duration, "synced at the backend's request");
                let report = SyncReport {
                    family: self.family,
                    mode,
                    full: false,
                    duration,
                    stats: &stats,
                    view: &self.synced,
                    previous: &self.synced,
                    changes: &changes,
                    trigger_times: &[],
                };
                for observer in observers {
                    observer.synced(&report);
                }
                Outcome::Synced
            }
            Err(error) => {
                tracing::error!(family = %self.family, %mode, error = %error_chain(&error), "the sync the backend asked for failed; the retry is a full sync");
                for observer in observers {
                    observer.failed(self.family, mode, false, &error);
                }
                self.dataplane_unsure = true;
                self.pending.require_full();
                Outcome::Failed
            }
        }
    }

    /// Tells `observers` which ports are held back now; `newly` of them
    /// for the first time.
    fn report_refusals(&self, observers: &[Arc<dyn SyncObserver>], newly: usize) {
        let refused = self.quarantine.report();
        let report = RefusalReport {
            family: self.family,
            mode: self.backend.mode(),
            refused: &refused,
            newly_refused: newly,
        };
        for observer in observers {
            observer.refused(&report);
        }
    }

    /// Updates the quarantine after a sync: `found` are new culprits,
    /// `retried` what retrying the held-back ports `retry` found; logs each.
    /// Returns how many ports were refused for the first time.
    fn hold_back(
        &mut self,
        found: Found,
        retried: Found,
        retry: &[ServicePortName],
        wanted: &NodeView,
        now: Instant,
    ) -> usize {
        let mode = self.backend.mode();
        let wall = SystemTime::now();
        let mut newly = 0;
        for (name, error) in found.culprits {
            let error = error_chain(&error);
            tracing::error!(family = %self.family, %mode, namespace = %name.service.namespace, service = %name.service.name, port = %name.port, protocol = %name.protocol, %error, "the dataplane refused this service port: it is held back (at its last programmed version, or absent) and retried; every other service port is programmed");
            let version = wanted.get(&name).cloned();
            if self.quarantine.refuse(name, version, error, now, wall) {
                newly += 1;
            }
        }
        let not_programmed: std::collections::HashSet<ServicePortName> = retried
            .culprits
            .iter()
            .map(|(name, _)| name.clone())
            .chain(retried.unresolved.iter().cloned())
            .collect();
        for (name, error) in retried.culprits {
            let error = error_chain(&error);
            tracing::warn!(family = %self.family, %mode, namespace = %name.service.namespace, service = %name.service.name, port = %name.port, protocol = %name.protocol, %error, "the dataplane still refuses this service port; it stays held back");
            let version = wanted.get(&name).cloned();
            self.quarantine.refuse(name, version, error, now, wall);
        }
        for name in &retried.unresolved {
            self.quarantine.back_off(name, now);
        }
        for name in retry.iter().filter(|n| !not_programmed.contains(*n)) {
            if self.quarantine.release(name) {
                tracing::info!(family = %self.family, %mode, namespace = %name.service.namespace, service = %name.service.name, port = %name.port, protocol = %name.protocol, "programmed a service port the dataplane had refused");
            }
        }
        newly
    }
}

/// An error and its sources, `: `-joined, for one log line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
