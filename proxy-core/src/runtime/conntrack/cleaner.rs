//! [`ConntrackCleaner`]: the stale-UDP cleanup after successful syncs.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::backend::CommandLimits;
use crate::model::{IpFamily, Protocol};
use crate::runtime::metrics::ProxyMetrics;
use crate::runtime::observer::{SyncObserver, SyncReport};

use super::host::HostConntrack;
use super::stale::StaleFlowFilter;
use super::table::ConntrackTable;

/// What one cleanup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanupOutcome {
    /// Entries listed.
    pub listed: usize,
    /// Stale entries found.
    pub stale: usize,
    /// Stale entries deleted (the rest failed and were logged).
    pub deleted: usize,
}

/// Deletes stale UDP conntrack entries after successful syncs, as upstream
/// does: when the sync was full, or its changes touch a UDP service port
/// (upstream's `ConntrackCleanupRequired`), it lists the family's table and
/// deletes what [`StaleFlowFilter`] calls stale.
///
/// As a [`SyncObserver`] it computes the filter on the loop's task (cheap)
/// and hands listing and deleting to a blocking task; rounds run one at a
/// time. Rounds wanted while one runs coalesce: at most one waits per
/// family, the latest (its filter is of the newest view, which is what
/// upstream's cleanup after each sync looks at too), so memory stays
/// bounded however fast syncs come and however slow the table is. Counts go to `kubeproxy_conntrack_reconciler_deleted_entries_total`
/// and `kubeproxy_conntrack_reconciler_sync_duration_seconds`.
pub struct ConntrackCleaner {
    table: Arc<Mutex<Box<dyn ConntrackTable>>>,
    metrics: Option<Arc<ProxyMetrics>>,
    queue: Arc<Mutex<RoundQueue>>,
}

/// The rounds waiting for the table: the latest filter of each family, and
/// whether a worker is draining them.
#[derive(Debug, Default)]
struct RoundQueue {
    waiting: BTreeMap<IpFamily, StaleFlowFilter>,
    worker_running: bool,
    /// Rounds replaced by a later one before they ran.
    superseded: u64,
}

impl fmt::Debug for ConntrackCleaner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConntrackCleaner").finish_non_exhaustive()
    }
}

impl ConntrackCleaner {
    /// A cleaner of `table`.
    pub fn new(table: impl ConntrackTable) -> Self {
        ConntrackCleaner {
            table: Arc::new(Mutex::new(Box::new(table))),
            metrics: None,
            queue: Arc::default(),
        }
    }

    /// A cleaner of the host's table (netlink, `conntrack` tool as fallback).
    pub fn host() -> Self {
        Self::new(HostConntrack::new())
    }

    /// A cleaner of the host's table whose `conntrack` runs are killed when
    /// they outlive `limits`.
    pub fn host_with_limits(limits: CommandLimits) -> Self {
        Self::new(HostConntrack::with_limits(limits))
    }

    /// Records rounds in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ProxyMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether `report` calls for a cleanup: a full sync, or a change of a
    /// UDP service port.
    pub fn needs_cleanup(report: &SyncReport<'_>) -> bool {
        report.full
            || report.changes.is_full()
            || report.changes.ports().any(|p| p.protocol == Protocol::Udp)
    }

    /// One round, blocking: list `family`'s entries and delete the stale
    /// ones. Errors deleting one entry are logged and the round goes on;
    /// an error listing ends it.
    pub fn clean(&self, family: IpFamily, filter: &StaleFlowFilter) -> io::Result<CleanupOutcome> {
        clean(&self.table, self.metrics.as_deref(), family, filter)
    }
}

fn clean(
    table: &Mutex<Box<dyn ConntrackTable>>,
    metrics: Option<&ProxyMetrics>,
    family: IpFamily,
    filter: &StaleFlowFilter,
) -> io::Result<CleanupOutcome> {
    let start = Instant::now();
    let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
    let entries = table.list(family)?;
    let stale = filter.stale_entries(&entries);
    let mut outcome = CleanupOutcome {
        listed: entries.len(),
        stale: stale.len(),
        deleted: 0,
    };
    for entry in &stale {
        match table.delete(entry) {
            Ok(()) => {
                tracing::debug!(%entry, "deleted stale conntrack entry");
                outcome.deleted += 1;
            }
            Err(error) => {
                tracing::warn!(%entry, %error, "failed to delete a stale conntrack entry")
            }
        }
    }
    let took = start.elapsed();
    tracing::debug!(%family, deleted = outcome.deleted, listed = outcome.listed, ?took, "reconciled conntrack entries");
    if let Some(metrics) = metrics {
        metrics.record_conntrack_cleanup(family, outcome.deleted as u64, took);
    }
    Ok(outcome)
}

impl SyncObserver for ConntrackCleaner {
    fn synced(&self, report: &SyncReport<'_>) {
        if !Self::needs_cleanup(report) {
            return;
        }
        let filter = StaleFlowFilter::from_view(report.view);
        if filter.is_empty() {
            return;
        }
        self.schedule(report.family, filter);
    }
}

impl ConntrackCleaner {
    /// Queues a round of `family` with `filter`, replacing one of the same
    /// family still waiting, and starts a worker if none runs. Needs a Tokio
    /// runtime (the worker is a blocking task).
    pub fn schedule(&self, family: IpFamily, filter: StaleFlowFilter) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("conntrack cleanup needs a Tokio runtime; skipped");
            return;
        };
        {
            let mut queue = lock(&self.queue);
            if queue.waiting.insert(family, filter).is_some() {
                queue.superseded += 1;
                tracing::debug!(%family, "a waiting conntrack cleanup was replaced by a newer one");
            }
            if queue.worker_running {
                return;
            }
            queue.worker_running = true;
        }
        let queue = self.queue.clone();
        let table = self.table.clone();
        let metrics = self.metrics.clone();
        runtime.spawn_blocking(move || {
            loop {
                let next = {
                    let mut queue = lock(&queue);
                    let next = queue.waiting.pop_first();
                    if next.is_none() {
                        queue.worker_running = false;
                    }
                    next
                };
                let Some((family, filter)) = next else {
                    return;
                };
                if let Err(error) = clean(&table, metrics.as_deref(), family, &filter) {
                    tracing::error!(%family, %error, "failed to list conntrack entries");
                }
            }
        });
    }

    /// Rounds waiting (at most one per family) and whether one runs.
    pub fn backlog(&self) -> (usize, bool) {
        let queue = lock(&self.queue);
        (queue.waiting.len(), queue.worker_running)
    }

    /// How many waiting rounds were replaced by a later one of their family
    /// before they ran.
    pub fn superseded(&self) -> u64 {
        lock(&self.queue).superseded
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` with the table, for tests and tools that want to look at it.
impl ConntrackCleaner {
    /// Calls `f` with the table (waits for a running round).
    pub fn with_table<T>(&self, f: impl FnOnce(&mut dyn ConntrackTable) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        f(table.as_mut())
    }
}
