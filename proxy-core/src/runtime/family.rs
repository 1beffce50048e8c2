//! One IP family's share of the loop: its backend, the view it last
//! programmed, what is pending since, and when to sync next.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::Backend;
use crate::changes::PendingChanges;
use crate::model::{IpFamily, NodeInfo};
use crate::runner::{RunReason, SyncRunner};
use crate::topology::ServiceTopology;
use crate::view::NodeView;

use super::observer::{DetectedBy, SyncObserver, SyncReport};
use super::sync_loop::SyncTiming;

/// A backend and its sync state, for one family.
pub(crate) struct FamilyState {
    pub(crate) family: IpFamily,
    pub(crate) backend: Box<dyn Backend>,
    /// The view of the last successful sync (empty before the first).
    pub(crate) synced: NodeView,
    pub(crate) pending: PendingChanges,
    pub(crate) runner: SyncRunner,
    /// Trigger times of the slice changes not yet programmed.
    pub(crate) trigger_times: Vec<SystemTime>,
    last_full: Option<Instant>,
    full_sync_period: Duration,
}

/// How a sync attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing was pending: the backend was not called.
    Idle,
    /// The backend succeeded (or the pending changes collapsed to nothing).
    Synced,
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
            synced: NodeView::empty(family, node),
            pending,
            runner,
            trigger_times: Vec::new(),
            last_full: None,
            full_sync_period: timing.full_sync_period,
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
        let outcome = self.sync(topology, node, observers).await;
        let end = super::sync_loop::now();
        if outcome == Outcome::Idle {
            // An idle periodic check wrote nothing: it does not hold back
            // the next change (or repair) by the minimum interval.
            self.runner.finished_idle(end);
        } else {
            self.runner.finished(end, outcome != Outcome::Failed);
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

    async fn sync(
        &mut self,
        topology: &ServiceTopology,
        node: &Arc<NodeInfo>,
        observers: &[Arc<dyn SyncObserver>],
    ) -> Outcome {
        if self.pending.is_empty() {
            return Outcome::Idle;
        }
        let mode = self.backend.mode();
        let (view, changes) = self.pending.prepare(topology, &self.synced, node);
        let started = super::sync_loop::now();
        let stats = if changes.is_empty() {
            // Every pending change collapsed to nothing for this family.
            Default::default()
        } else {
            match self.backend.sync(&view, &changes).await {
                Ok(stats) => stats,
                Err(error) => {
                    tracing::error!(family = %self.family, %mode, full = changes.is_full(), error = %error_chain(&error), "sync failed; changes stay pending and the retry is a full sync");
                    self.pending.require_full();
                    for observer in observers {
                        observer.failed(self.family, mode, changes.is_full(), &error);
                    }
                    return Outcome::Failed;
                }
            }
        };
        let duration = super::sync_loop::now().saturating_duration_since(started);
        if changes.is_full() {
            self.last_full = Some(started);
        }
        tracing::debug!(family = %self.family, %mode, full = changes.is_full(), ports = changes.len(), objects = stats.objects_written, ?duration, "synced");
        let previous = std::mem::replace(&mut self.synced, view);
        self.pending.clear();
        let trigger_times = std::mem::take(&mut self.trigger_times);
        let report = SyncReport {
            family: self.family,
            mode,
            full: changes.is_full(),
            duration,
            stats: &stats,
            view: &self.synced,
            previous: &previous,
            changes: &changes,
            trigger_times: &trigger_times,
        };
        for observer in observers {
            observer.synced(&report);
        }
        Outcome::Synced
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
