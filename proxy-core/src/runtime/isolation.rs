//! Failure isolation (beyond upstream): when the dataplane refuses a sync,
//! find the service ports responsible, program everything else, hold the
//! culprits back and retry them.
//!
//! Upstream kube-proxy, like this runtime before, retries a refused
//! transaction as a whole: one object the kernel or a tool refuses blocks
//! every Service of the node until it is fixed. Here a sync from the last
//! programmed view `good` to the wanted view `wanted` that fails with a
//! [`BackendErrorKind::Dataplane`] error (the tool or kernel refused what the
//! backend wrote) is bisected over the changed service ports `C`:
//!
//! - every attempt programs a view composed with
//!   [`NodeView::with_ports_from`]: `wanted`, except that the ports of `C`
//!   not being tried are held at `good`'s version (or absent where `good`
//!   has none);
//! - an accepted attempt becomes the new `good`; a refused set of several
//!   ports is split in two halves tried one after the other; a refused
//!   single port is a *culprit*;
//! - before a port is blamed in a sync where nothing was accepted yet, the
//!   runtime checks that the dataplane still takes `good` itself: when it
//!   does not, the failure is not a port's (a broken tool, a full disk) and
//!   the sync fails as a whole, as upstream's does; when it does, the
//!   refused set is tried once more before it is split (that check was a
//!   full sync, which rebuilds a dataplane state that may have been the
//!   cause);
//! - the call after a refused one is a full sync (a backend cannot trust its
//!   state after a failure); the call after an accepted one is partial.
//!
//! With `k` culprits among `n` changed ports this costs O(k log n) calls of
//! [`Backend::sync`](crate::Backend::sync), and a sync stops after a budget
//! of calls (enough for about two culprits); what it could not try stays
//! pending for the next sync.
//!
//! Culprits go into the [`Quarantine`]: held back at their last programmed
//! version (absent if new), logged (namespace, name, port, the tool's
//! error) and reported to observers
//! ([`SyncObserver::refused`](super::SyncObserver::refused); the metrics
//! `kubeproxy_sync_proxy_rules_refused_service_ports` and
//! `kubeproxy_sync_proxy_rules_service_port_refusals_total`). Later syncs
//! program everything else first, then retry the culprits that are due: on
//! the loop's retries and periodic runs, when their back-off (from the retry
//! interval, doubling up to `syncPeriod`) passed, and at once when their
//! Service or slices changed, since the change may fix them.
//!
//! **Health.** A sync that programmed everything but the culprits counts as
//! a successful sync for `/healthz` (observers get
//! [`SyncObserver::synced`](super::SyncObserver::synced)). Upstream's
//! `/healthz` tells a load balancer whether this node forwards Services; a
//! node that forwards every Service but one refused object does, and
//! failing its health check would take the node out for all of them, which
//! is what isolation avoids. The culprits are reported by the log and the
//! metrics instead. A sync that fails as a whole (the dataplane refuses even
//! the last good view, or the error is not a refusal) keeps upstream's
//! semantics: no `synced`, and `/healthz` turns 503 once a queued change is
//! older than the health window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{Backend, BackendError, BackendErrorKind, SyncProgress, SyncStats};
use crate::changes::ChangeSet;
use crate::config::ProxyMode;
use crate::model::{IpFamily, ServiceKey, ServicePortName};
use crate::view::{NodeView, ServicePortView};

use super::observer::{RefusedPort, SyncObserver};

/// A held-back service port.
#[derive(Debug, Clone)]
struct Held {
    /// The wanted version that was refused (`None`: removing the port was).
    refused: Option<Arc<ServicePortView>>,
    /// The last refusal's error, with its sources.
    error: String,
    /// When it was first refused.
    since: SystemTime,
    /// When it may be retried although nothing changed.
    retry_at: Instant,
    /// The delay after the next refusal.
    backoff: Duration,
}

/// The service ports of one family the dataplane refused, held back at
/// their last programmed version and retried with back-off.
#[derive(Debug, Clone)]
pub(crate) struct Quarantine {
    held: BTreeMap<ServicePortName, Held>,
    first_retry: Duration,
    max_retry: Duration,
}

impl Quarantine {
    /// An empty quarantine whose retries start `first_retry` after a refusal
    /// and double up to `max_retry`.
    pub(crate) fn new(first_retry: Duration, max_retry: Duration) -> Self {
        Quarantine {
            held: BTreeMap::new(),
            first_retry,
            max_retry: max_retry.max(first_retry),
        }
    }

    /// Whether no port is held back.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether `name` is held back.
    pub(crate) fn contains(&self, name: &ServicePortName) -> bool {
        self.held.contains_key(name)
    }

    /// The services of the held-back ports.
    pub(crate) fn services(&self) -> BTreeSet<ServiceKey> {
        self.held.keys().map(|n| n.service.clone()).collect()
    }

    /// Whether a held-back port is due for a retry at `now` (always, when
    /// `retry_all`).
    pub(crate) fn any_due(&self, now: Instant, retry_all: bool) -> bool {
        !self.held.is_empty() && (retry_all || self.held.values().any(|h| h.retry_at <= now))
    }

    /// Whether held-back `name`, now wanted as `wanted`, should be tried in
    /// this sync: its retry is due, or what is wanted is no longer what was
    /// refused.
    pub(crate) fn should_retry(
        &self,
        name: &ServicePortName,
        wanted: Option<&Arc<ServicePortView>>,
        now: Instant,
        retry_all: bool,
    ) -> bool {
        self.held
            .get(name)
            .is_some_and(|h| retry_all || h.retry_at <= now || h.refused.as_ref() != wanted)
    }

    /// Records that the dataplane refused `wanted` for `name` with `error`;
    /// returns whether `name` was not held back before.
    pub(crate) fn refuse(
        &mut self,
        name: ServicePortName,
        wanted: Option<Arc<ServicePortView>>,
        error: String,
        now: Instant,
        wall: SystemTime,
    ) -> bool {
        match self.held.get_mut(&name) {
            Some(held) => {
                held.backoff = held.backoff.saturating_mul(2).min(self.max_retry);
                held.retry_at = now + held.backoff;
                held.refused = wanted;
                held.error = error;
                false
            }
            None => {
                self.held.insert(
                    name,
                    Held {
                        refused: wanted,
                        error,
                        since: wall,
                        retry_at: now + self.first_retry,
                        backoff: self.first_retry,
                    },
                );
                true
            }
        }
    }

    /// Pushes the next retry of held-back `name` back (it was tried, and not
    /// programmed), without changing what was refused.
    pub(crate) fn back_off(&mut self, name: &ServicePortName, now: Instant) {
        if let Some(held) = self.held.get_mut(name) {
            held.backoff = held.backoff.saturating_mul(2).min(self.max_retry);
            held.retry_at = now + held.backoff;
        }
    }

    /// Stops holding `name` back; returns whether it was.
    pub(crate) fn release(&mut self, name: &ServicePortName) -> bool {
        self.held.remove(name).is_some()
    }

    /// Releases every held-back port `keep` says no; returns them.
    pub(crate) fn release_unless(
        &mut self,
        keep: impl Fn(&ServicePortName) -> bool,
    ) -> Vec<ServicePortName> {
        let gone: Vec<ServicePortName> = self.held.keys().filter(|n| !keep(n)).cloned().collect();
        for name in &gone {
            self.held.remove(name);
        }
        gone
    }

    /// The held-back ports, sorted by name, for observers.
    pub(crate) fn report(&self) -> Vec<RefusedPort> {
        self.held
            .iter()
            .map(|(name, held)| RefusedPort {
                name: name.clone(),
                error: held.error.clone(),
                since: held.since,
            })
            .collect()
    }
}

/// The number of `Backend::sync` calls one sync may make to isolate
/// refusals among `ports` changed ports: the first attempt, a check of the
/// last good view and the attempt again, then two bisections (two calls per
/// level each), with room to spare.
pub(crate) fn call_budget(ports: usize) -> usize {
    let depth = (usize::BITS - ports.leading_zeros()) as usize;
    4 * (depth + 2) + 2
}

/// What [`Isolator::program`] found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Ports refused on their own, with the refusal.
    pub(crate) culprits: Vec<(ServicePortName, BackendError)>,
    /// Ports not tried: the call budget ran out.
    pub(crate) unresolved: Vec<ServicePortName>,
}

/// Programs the changed ports of one sync, isolating those the dataplane
/// refuses (see the [module documentation](self)).
pub(crate) struct Isolator<'a> {
    backend: &'a mut dyn Backend,
    family: IpFamily,
    mode: ProxyMode,
    observers: &'a [Arc<dyn SyncObserver>],
    wanted: &'a NodeView,
    /// The view last programmed.
    pub(crate) good: NodeView,
    /// The ports where `good` still differs from `wanted`.
    pub(crate) differing: BTreeSet<ServicePortName>,
    /// The next call must be a full sync (a call was refused, or the sync
    /// asked for one).
    pub(crate) full_next: bool,
    /// A call of this sync was accepted.
    pub(crate) accepted: bool,
    /// An accepted call was a full sync.
    pub(crate) full_done: bool,
    /// Calls made so far.
    pub(crate) calls: usize,
    /// Calls allowed in all.
    pub(crate) budget: usize,
    /// The accepted calls' stats, summed (totals: the last call's).
    pub(crate) stats: SyncStats,
    /// Service ports accepted so far, for the progress log: set to the
    /// accepted calls' ports after each call (the backend may add to it
    /// during one, see [`SyncProgress`]).
    pub(crate) progress: Arc<SyncProgress>,
    /// The ports of the accepted calls.
    programmed: usize,
}

impl<'a> Isolator<'a> {
    /// An isolator taking the dataplane from `good` towards `wanted`;
    /// `differing` must hold every port where the two differ.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: &'a mut dyn Backend,
        family: IpFamily,
        observers: &'a [Arc<dyn SyncObserver>],
        wanted: &'a NodeView,
        good: NodeView,
        differing: BTreeSet<ServicePortName>,
        full: bool,
        budget: usize,
    ) -> Self {
        let mode = backend.mode();
        Isolator {
            backend,
            family,
            mode,
            observers,
            wanted,
            good,
            differing,
            full_next: full,
            accepted: false,
            full_done: false,
            calls: 0,
            budget,
            stats: SyncStats::default(),
            progress: Arc::default(),
            programmed: 0,
        }
    }

    /// One call: `wanted`'s version of `set` (sorted) on top of `good`.
    /// Nothing is called when nothing would change and no full sync is due.
    async fn call(&mut self, set: &[ServicePortName]) -> Result<(), BackendError> {
        let changes = if self.full_next {
            ChangeSet::full()
        } else {
            ChangeSet::partial(set.iter().cloned())
        };
        let held = self
            .differing
            .iter()
            .filter(|p| set.binary_search(p).is_err());
        let attempt = self.wanted.with_ports_from(&self.good, held);
        if changes.is_empty() {
            self.good = attempt;
            return Ok(());
        }
        self.calls += 1;
        match self.backend.sync(&attempt, &changes).await {
            Ok(stats) => {
                self.good = attempt;
                for name in set {
                    self.differing.remove(name);
                }
                self.full_done |= changes.is_full();
                self.full_next = false;
                self.accepted = true;
                self.stats.full |= stats.full;
                self.stats.ports_written += stats.ports_written;
                self.stats.objects_written += stats.objects_written;
                self.stats.totals = stats.totals;
                self.programmed += set.len();
                self.progress.set(self.programmed);
                Ok(())
            }
            Err(error) => {
                self.progress.set(self.programmed);
                self.full_next = true;
                for observer in self.observers {
                    observer.failed(self.family, self.mode, changes.is_full(), &error);
                }
                Err(error)
            }
        }
    }

    /// Programs `wanted`'s version of `set` on top of `good`, bisecting on
    /// refusals. `known` says the ports are held-back culprits already: a
    /// refusal keeps them so without checking the last good view first.
    ///
    /// Fails when an error is not a refusal, or when nothing was accepted
    /// in this sync and the dataplane refuses the last good view as well:
    /// the failure is then not the ports'.
    pub(crate) async fn program(
        &mut self,
        mut set: Vec<ServicePortName>,
        known: bool,
    ) -> Result<Found, BackendError> {
        set.sort();
        set.dedup();
        let mut found = Found::default();
        let mut stack = vec![set];
        while let Some(mut ports) = stack.pop() {
            if self.calls >= self.budget {
                found.unresolved.append(&mut ports);
                continue;
            }
            let error = match self.call(&ports).await {
                Ok(()) => continue,
                Err(error) => error,
            };
            if error.kind() != BackendErrorKind::Dataplane || ports.is_empty() {
                return Err(error);
            }
            if !self.accepted && !known {
                // Does the dataplane take anything? Check with the last good
                // view, then try the same ports again: the refusal may have
                // been the state's (a full sync after a failure rebuilds it).
                self.call(&[]).await?;
                stack.push(ports);
                continue;
            }
            if ports.len() == 1 {
                found.culprits.extend(ports.pop().map(|p| (p, error)));
                continue;
            }
            let second = ports.split_off(ports.len() / 2);
            stack.push(second);
            stack.push(ports);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn port(name: &str) -> ServicePortName {
        ServicePortName::new("ns", name, "http", Protocol::Tcp)
    }

    #[test]
    fn budget_grows_with_the_log_of_the_ports() {
        assert_eq!(call_budget(0), 10);
        assert_eq!(call_budget(1), 14);
        assert_eq!(call_budget(1000), 4 * 12 + 2);
        assert!(call_budget(100_000) < 80);
    }

    #[test]
    fn retries_back_off_up_to_the_maximum_and_changes_retry_at_once() {
        let start = Instant::now();
        let wall = SystemTime::now();
        let mut q = Quarantine::new(Duration::from_secs(1), Duration::from_secs(4));
        assert!(q.refuse(port("a"), None, "refused".into(), start, wall));
        assert!(!q.any_due(start, false));
        assert!(
            q.any_due(start, true),
            "the loop's retries retry everything"
        );
        assert!(q.any_due(start + Duration::from_secs(1), false));
        assert!(!q.should_retry(&port("a"), None, start, false));
        assert!(!q.should_retry(&port("b"), None, start, true), "not held");

        assert!(!q.refuse(port("a"), None, "again".into(), start, wall));
        assert!(!q.any_due(start + Duration::from_secs(1), false));
        assert!(q.any_due(start + Duration::from_secs(2), false));
        q.back_off(&port("a"), start);
        q.back_off(&port("a"), start);
        assert!(!q.any_due(start + Duration::from_millis(3999), false));
        assert!(q.any_due(start + Duration::from_secs(4), false), "capped");

        let report = q.report();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].error, "again");
        assert_eq!(report[0].since, wall);
        assert_eq!(
            q.services().into_iter().collect::<Vec<_>>(),
            [port("a").service]
        );

        assert_eq!(q.release_unless(|n| *n != port("a")), [port("a")]);
        assert!(q.is_empty() && !q.release(&port("a")));
    }
}
