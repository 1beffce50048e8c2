//! The bounded-frequency sync runner: *when* to sync, as a pure state machine.
//!
//! [`SyncRunner`] is the decision half of upstream's `BoundedFrequencyRunner`
//! (`pkg/util/async`, and its successor `pkg/proxy/runner`). It owns no
//! timer, thread or task: every method takes the current [`Instant`], so a
//! test drives it with made-up instants and an async loop drives it with the
//! real clock:
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use proxy_core::runner::{RunReason, SyncRunner};
//! let t0 = Instant::now();
//! let mut runner = SyncRunner::new(
//!     Duration::from_secs(1),    // minSyncPeriod
//!     Duration::from_secs(3600), // syncPeriod (the periodic full resync)
//!     Duration::from_secs(1),    // first retry after a failure
//!     t0,
//! );
//! runner.request(t0);                        // an event arrived
//! assert!(runner.due(t0));
//! runner.started(t0);
//! runner.finished(t0, true);
//! runner.request(t0);                        // a second event, too soon
//! assert!(!runner.due(t0));
//! assert_eq!(runner.next_run(), t0 + Duration::from_secs(1));
//!
//! // A change every 0.5 s does not postpone the periodic run.
//! let mut now = t0;
//! let periodic = loop {
//!     now += Duration::from_millis(500);
//!     runner.request(now);
//!     if let Some(reason) = runner.reason(now) {
//!         runner.started(now);
//!         runner.finished(now, true);
//!         if reason == RunReason::Periodic {
//!             break now;
//!         }
//!     }
//! };
//! assert_eq!(periodic, t0 + Duration::from_secs(3600));
//! ```
//!
//! The rules:
//!
//! - **Coalescing.** Any number of [`SyncRunner::request`]s before a run
//!   starts are served by that one run. A request made while a run is in
//!   progress causes exactly one more run after it.
//! - **Minimum interval.** Two runs never *start* less than `min_interval`
//!   apart. Upstream's `BoundedFrequencyRunner` lets a burst of two runs
//!   through before its token bucket limits them; this runner allows no
//!   burst, as upstream's newer `pkg/proxy/runner` does: `minSyncPeriod`
//!   means what it says, and a burst of events still costs one sync each
//!   `minSyncPeriod`. A zero `min_interval` disables the limit. A run that
//!   did nothing ([`SyncRunner::finished_idle`]: an idle periodic check)
//!   does not count.
//! - **Periodic run on its own clock.** A run becomes due `max_interval`
//!   after the last *periodic* run finished (or after creation), even
//!   without requests: [`SyncRunner::reason`] then says
//!   [`RunReason::Periodic`], on which the runtime checks for drift and
//!   makes the run a full sync when needed. Requested runs and retries do
//!   **not** move this deadline (upstream's runner resets it on every run,
//!   so a steady stream of changes postpones the drift check forever): under
//!   any churn the periodic run starts at most `max_interval` +
//!   `min_interval` after the previous one finished. A periodic run also
//!   serves any pending request or retry.
//! - **Retry with back-off.** A failed run schedules a retry `retry_interval`
//!   after it finished; each further consecutive failure doubles the delay,
//!   up to `max_interval`. A success resets the delay. As upstream, new
//!   requests are not held back by the back-off, only by `min_interval`: a
//!   changed world may well fix what failed.
//! - **Requests for later.** [`SyncRunner::request_at`] requests a run at a
//!   given instant (a backend's own deadline, such as re-checking draining
//!   IPVS real servers); the minimum interval still holds.

use std::time::{Duration, Instant};

/// Why a run is due; see [`SyncRunner::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunReason {
    /// Something changed: [`SyncRunner::request`] was called.
    Requested,
    /// The previous run failed and its retry time has come.
    Retry,
    /// `max_interval` passed since the last periodic run (requested runs
    /// and retries do not count).
    Periodic,
}

/// The state machine deciding when a sync runs. See the [module
/// documentation](self) for the rules.
#[derive(Debug, Clone)]
pub struct SyncRunner {
    min_interval: Duration,
    max_interval: Duration,
    retry_interval: Duration,
    /// The latest instant any method was given: when a request is due if
    /// no run ever started.
    latest: Instant,
    /// Start of the last run, if any.
    last_start: Option<Instant>,
    /// Start of the run before it (restored by [`SyncRunner::finished_idle`]).
    previous_start: Option<Instant>,
    /// A run is in progress.
    running: bool,
    /// A request arrived since the last run started.
    requested: bool,
    /// When the pending retry is due.
    retry_at: Option<Instant>,
    /// Delay before the next retry, should the next run fail.
    backoff: Duration,
    /// When the periodic run is due. Only a periodic run moves it.
    periodic_at: Instant,
    /// The run in progress is the periodic one.
    running_periodic: bool,
    /// A request due at this instant ([`SyncRunner::request_at`]).
    request_at: Option<Instant>,
}

/// Roughly "never": far enough for any driver, small enough not to overflow.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `t + d`, or about "never" when that does not fit in an `Instant`.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(NEVER.min(d)))
        .unwrap_or(t)
}

impl SyncRunner {
    /// A runner with nothing requested, whose first periodic run is due
    /// `max_interval` after `now`.
    ///
    /// `min_interval` is upstream's `minSyncPeriod`, `max_interval` its
    /// `syncPeriod` (or the 1 h full-sync period of the iptables mode),
    /// `retry_interval` the first delay after a failed run.
    pub fn new(
        min_interval: Duration,
        max_interval: Duration,
        retry_interval: Duration,
        now: Instant,
    ) -> Self {
        SyncRunner {
            min_interval,
            max_interval,
            retry_interval,
            latest: now,
            last_start: None,
            previous_start: None,
            running: false,
            requested: false,
            retry_at: None,
            backoff: retry_interval,
            periodic_at: later(now, max_interval),
            running_periodic: false,
            request_at: None,
        }
    }

    fn observe(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
    }

    /// Requests a run as soon as the minimum interval allows. Requests are
    /// coalesced: many before a run starts cause one run.
    pub fn request(&mut self, now: Instant) {
        self.observe(now);
        self.requested = true;
    }

    /// Requests a run at `at` (as [`SyncRunner::request`] would if called
    /// then), replacing an earlier such request; `None` withdraws it. A run
    /// starting at or after `at` serves it; one starting before leaves it
    /// pending. For a backend's own deadline
    /// ([`Backend::next_resync`](crate::Backend::next_resync)).
    pub fn request_at(&mut self, at: Option<Instant>) {
        self.request_at = at;
    }

    /// The earliest instant the minimum interval allows a run to start.
    fn earliest_start(&self) -> Option<Instant> {
        self.last_start.map(|s| later(s, self.min_interval))
    }

    /// When a run would be due if nothing else happened, and why.
    fn schedule(&self) -> (Instant, RunReason) {
        let floor = self.earliest_start();
        let candidates = [
            // A request is due "now": at the floor, or at any past instant.
            self.requested
                .then(|| (floor.unwrap_or(self.latest), RunReason::Requested)),
            self.retry_at.map(|t| (t, RunReason::Retry)),
            self.request_at.map(|t| (t, RunReason::Requested)),
            Some((self.periodic_at, RunReason::Periodic)),
        ];
        let (at, reason) = candidates
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
            .unwrap_or((self.periodic_at, RunReason::Periodic));
        (floor.map_or(at, |f| at.max(f)), reason)
    }

    /// When a driver should next wake up and call [`SyncRunner::due`]. The
    /// instant may be in the past (a run is due now). While a run is in
    /// progress this is when the next run would be due if the current one
    /// finished at once; the driver calls it again after
    /// [`SyncRunner::finished`].
    pub fn next_run(&self) -> Instant {
        self.schedule().0
    }

    /// Whether a run should start at `now`: one is requested, a retry or the
    /// periodic run is due, the minimum interval has passed, and no run is in
    /// progress.
    pub fn due(&self, now: Instant) -> bool {
        self.reason(now).is_some()
    }

    /// Why a run is due at `now` (`None` when [`SyncRunner::due`] is false).
    /// When several reasons hold, the earliest scheduled one is reported,
    /// except that [`RunReason::Periodic`] is reported whenever the periodic
    /// run is due, so the driver can make it a full sync.
    pub fn reason(&self, now: Instant) -> Option<RunReason> {
        if self.running {
            return None;
        }
        let (at, reason) = self.schedule();
        if now < at {
            return None;
        }
        if self.periodic_at <= now {
            return Some(RunReason::Periodic);
        }
        Some(reason)
    }

    /// Records that a run started at `now`. Every request and retry made
    /// before is served by this run; if the periodic run is due at `now`,
    /// this run is the periodic one (as [`SyncRunner::reason`] said).
    pub fn started(&mut self, now: Instant) {
        self.observe(now);
        self.running_periodic = self.periodic_at <= now;
        self.running = true;
        self.requested = false;
        self.retry_at = None;
        self.request_at = self.request_at.filter(|at| *at > now);
        self.previous_start = self.last_start.replace(now);
    }

    /// Records that the run finished at `now`; `ok` is whether it succeeded.
    ///
    /// If the run was the periodic one, the next periodic run is due
    /// `max_interval` from now; any other run leaves that deadline alone.
    /// On success the back-off is reset. On failure a retry is scheduled
    /// after the current back-off delay, which then doubles (up to
    /// `max_interval`).
    pub fn finished(&mut self, now: Instant, ok: bool) {
        self.observe(now);
        self.running = false;
        if std::mem::take(&mut self.running_periodic) {
            self.periodic_at = later(now, self.max_interval);
        }
        if ok {
            self.retry_at = None;
            self.backoff = self.retry_interval;
        } else {
            self.retry_at = Some(later(now, self.backoff));
            self.backoff = self
                .backoff
                .saturating_mul(2)
                .min(self.max_interval.max(self.retry_interval));
        }
    }

    /// Records that the run finished at `now` having done nothing (nothing
    /// was pending, nothing was written): as a successful run, except that
    /// it does not count for the minimum interval, so a request right after
    /// an idle periodic run starts at once.
    pub fn finished_idle(&mut self, now: Instant) {
        self.finished(now, true);
        self.last_start = self.previous_start;
    }

    /// When the next periodic run is due (it may be in the past: the
    /// periodic run is due now, or waits for the minimum interval or for the
    /// run in progress).
    pub fn periodic_at(&self) -> Instant {
        self.periodic_at
    }

    /// Whether a run is in progress (between `started` and `finished`).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The delay before the retry that follows the next failure.
    pub fn current_backoff(&self) -> Duration {
        self.backoff
    }

    /// When the pending retry is due, if a run failed and has not been
    /// retried yet.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}
