//! The sync runner as a deterministic state machine: the clock is the
//! `Instant`s the test passes in.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::time::{Duration, Instant};

use proxy_core::runner::{RunReason, SyncRunner};

const MIN: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Runs one sync at `now` with outcome `ok`, taking no time.
fn run(r: &mut SyncRunner, now: Instant, ok: bool) {
    assert!(r.due(now), "a run is due at {now:?}");
    r.started(now);
    r.finished(now, ok);
}

#[test]
fn nothing_is_due_without_a_request() {
    let t0 = Instant::now();
    let r = SyncRunner::new(MIN, MAX, RETRY, t0);
    assert!(!r.due(t0));
    assert!(!r.due(t0 + MAX - ms(1)));
    assert_eq!(r.next_run(), t0 + MAX);
}

#[test]
fn first_request_runs_at_once() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    assert!(r.due(t0));
    assert!(r.next_run() <= t0);
    assert_eq!(r.reason(t0), Some(RunReason::Requested));
}

#[test]
fn a_burst_of_requests_coalesces_into_one_run() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    for i in 0..100 {
        r.request(t0 + ms(i));
    }
    let t = t0 + ms(100);
    run(&mut r, t, true);
    // Every request was served: nothing more until the periodic run, due
    // MAX after creation (a requested run does not move it).
    assert!(!r.due(t + MIN));
    assert!(!r.due(t0 + MAX - ms(1)));
    assert_eq!(r.next_run(), t0 + MAX);
}

#[test]
fn min_interval_separates_run_starts() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    run(&mut r, t0, true);
    r.request(t0 + ms(10));
    assert!(!r.due(t0 + ms(10)));
    assert!(!r.due(t0 + ms(999)));
    assert_eq!(r.next_run(), t0 + MIN);
    assert!(r.due(t0 + MIN));
    run(&mut r, t0 + MIN, true);
    // A steady stream of requests gets one run per min interval, no burst.
    let mut starts = vec![t0, t0 + MIN];
    let mut now = t0 + MIN;
    while now < t0 + secs(10) {
        now += ms(100);
        r.request(now);
        if r.due(now) {
            r.started(now);
            r.finished(now + ms(50), true);
            starts.push(now);
        }
    }
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= MIN,
            "runs {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert_eq!(
        starts.len(),
        11,
        "one run per second over ten seconds: {starts:?}"
    );
}

#[test]
fn min_interval_counts_from_the_start_of_a_run() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    r.started(t0);
    r.finished(t0 + ms(700), true);
    r.request(t0 + ms(700));
    assert!(!r.due(t0 + ms(999)));
    assert!(r.due(t0 + MIN));
}

#[test]
fn a_request_during_a_run_causes_one_more_run() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    r.started(t0);
    r.request(t0 + ms(100));
    r.request(t0 + ms(200));
    assert!(!r.due(t0 + ms(200)), "never two runs at once");
    assert!(r.is_running());
    r.finished(t0 + secs(3), true);
    assert!(r.due(t0 + secs(3)));
    run(&mut r, t0 + secs(3), true);
    assert!(!r.due(t0 + secs(5)));
}

#[test]
fn max_interval_forces_a_periodic_run() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    assert!(!r.due(t0 + MAX - ms(1)));
    assert!(r.due(t0 + MAX));
    assert_eq!(r.reason(t0 + MAX), Some(RunReason::Periodic));
    run(&mut r, t0 + MAX, true);
    assert_eq!(r.next_run(), t0 + MAX + MAX);
    // A requested run does not push the periodic one back.
    r.request(t0 + secs(90));
    run(&mut r, t0 + secs(90), true);
    assert_eq!(r.next_run(), t0 + MAX + MAX);
    assert!(!r.due(t0 + secs(119)));
    assert_eq!(r.reason(t0 + secs(120)), Some(RunReason::Periodic));
    run(&mut r, t0 + secs(120), true);
    assert_eq!(r.periodic_at(), t0 + secs(180));
}

/// The bug this runner fixes: upstream's runner (and this one before)
/// reset the periodic deadline after every run, so a Service changing every
/// 0.5 s postponed the drift check for as long as the churn lasted.
#[test]
fn a_request_every_half_second_does_not_delay_the_periodic_run() {
    let sync_period = secs(5);
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, sync_period, RETRY, t0);
    let mut now = t0;
    let mut periodic = Vec::new();
    let mut requested = 0;
    while now < t0 + secs(60) {
        now += ms(500);
        r.request(now);
        if let Some(reason) = r.reason(now) {
            r.started(now);
            // Every run takes 100 ms.
            r.finished(now + ms(100), true);
            match reason {
                RunReason::Periodic => periodic.push(now),
                RunReason::Requested => requested += 1,
                RunReason::Retry => panic!("nothing failed"),
            }
        }
    }
    assert!(requested > 40, "the churn was served: {requested} runs");
    // The first periodic run is due sync_period after creation, each next
    // one sync_period after the previous finished, the minimum interval
    // (and the 0.5 s grid of this driver) being the only slack.
    assert!(periodic[0] - t0 <= sync_period + MIN, "{periodic:?}");
    for pair in periodic.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= sync_period, "periodic runs {gap:?} apart");
        assert!(
            gap <= sync_period + ms(100) + MIN,
            "periodic runs {gap:?} apart"
        );
    }
    assert!(
        periodic.len() >= 10,
        "{} periodic runs in 60 s: {periodic:?}",
        periodic.len()
    );
}

#[test]
fn a_periodic_run_waits_only_for_the_min_interval() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(secs(2), secs(5), RETRY, t0);
    // A requested run starts 0.5 s before the periodic one is due.
    r.request(t0 + ms(4500));
    run(&mut r, t0 + ms(4500), true);
    assert_eq!(r.next_run(), t0 + ms(6500), "the min interval holds");
    assert!(!r.due(t0 + ms(6499)));
    assert_eq!(r.reason(t0 + ms(6500)), Some(RunReason::Periodic));
    run(&mut r, t0 + ms(6500), true);
    assert_eq!(r.periodic_at(), t0 + ms(11500));
}

#[test]
fn a_run_in_progress_when_the_periodic_run_is_due_is_followed_by_it() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, secs(5), RETRY, t0);
    r.request(t0 + secs(4));
    r.started(t0 + secs(4));
    // The requested run is still running when the periodic one falls due.
    assert_eq!(r.reason(t0 + secs(6)), None);
    r.finished(t0 + secs(6), true);
    assert_eq!(r.reason(t0 + secs(6)), Some(RunReason::Periodic));
}

#[test]
fn failure_retries_with_doubling_backoff_up_to_max_interval() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..9 {
        let reason = r.reason(now);
        run(&mut r, now, false);
        let next = r.next_run();
        assert!(!r.due(next - ms(1)));
        let delay = next - now;
        // The periodic run keeps its own clock: at t0 + 60 s it comes before
        // the retry due at t0 + 62 s and serves it; after it, retry and
        // periodic run coincide at the capped back-off, and the periodic
        // reason wins.
        if r.periodic_at() <= next {
            assert_eq!(r.reason(next), Some(RunReason::Periodic));
        } else {
            assert_eq!(r.retry_at(), Some(next));
            assert_eq!(r.reason(next), Some(RunReason::Retry));
        }
        assert!(reason.is_some());
        delays.push(delay.as_secs());
        now = next;
    }
    assert_eq!(delays, [2, 4, 8, 16, 30, 60, 60, 60, 60]);
}

#[test]
fn success_resets_the_backoff() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    run(&mut r, t0, false);
    run(&mut r, t0 + secs(2), false);
    run(&mut r, t0 + secs(6), false);
    assert_eq!(r.current_backoff(), secs(16));
    run(&mut r, t0 + secs(14), true);
    assert_eq!(r.retry_at(), None);
    assert_eq!(r.current_backoff(), RETRY);
    assert!(!r.due(t0 + secs(30)));
    // The next failure starts over at the retry interval.
    r.request(t0 + secs(30));
    run(&mut r, t0 + secs(30), false);
    assert_eq!(r.next_run(), t0 + secs(32));
}

#[test]
fn requests_are_not_held_back_by_the_backoff() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, secs(20), t0);
    r.request(t0);
    run(&mut r, t0, false);
    assert_eq!(r.next_run(), t0 + secs(20));
    r.request(t0 + secs(3));
    assert!(r.due(t0 + secs(3)));
    assert_eq!(r.reason(t0 + secs(3)), Some(RunReason::Requested));
    run(&mut r, t0 + secs(3), true);
    assert_eq!(
        r.retry_at(),
        None,
        "the retry is served by the requested run"
    );
}

#[test]
fn a_retry_respects_the_min_interval() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(secs(5), MAX, secs(1), t0);
    r.request(t0);
    run(&mut r, t0, false);
    assert!(!r.due(t0 + secs(1)));
    assert_eq!(r.next_run(), t0 + secs(5));
    assert!(r.due(t0 + secs(5)));
}

#[test]
fn zero_min_interval_does_not_limit() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(Duration::ZERO, MAX, RETRY, t0);
    for i in 0..5 {
        r.request(t0 + ms(i));
        run(&mut r, t0 + ms(i), true);
    }
}

#[test]
fn huge_intervals_do_not_overflow() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(Duration::MAX, Duration::MAX, Duration::MAX, t0);
    assert!(!r.due(t0 + secs(3600)));
    assert!(r.next_run() > t0 + secs(3600));
    r.request(t0);
    run(&mut r, t0, false);
    r.request(t0 + secs(1));
    assert!(!r.due(t0 + secs(1)));
}

#[test]
fn an_idle_run_does_not_hold_back_the_next_request() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, secs(5), RETRY, t0);
    r.request(t0);
    run(&mut r, t0, true);
    // The periodic run at 5 s finds nothing to do.
    assert_eq!(r.reason(t0 + secs(5)), Some(RunReason::Periodic));
    r.started(t0 + secs(5));
    r.finished_idle(t0 + secs(5));
    assert_eq!(r.periodic_at(), t0 + secs(10), "it was the periodic run");
    // A change right after it runs at once …
    r.request(t0 + ms(5100));
    assert!(r.due(t0 + ms(5100)));
    run(&mut r, t0 + ms(5100), true);
    // … and a run that did work does hold the next one back.
    r.request(t0 + ms(5200));
    assert!(!r.due(t0 + ms(5200)));
    assert_eq!(r.next_run(), t0 + ms(6100));
}

#[test]
fn a_request_for_later_is_due_then_and_survives_earlier_runs() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request_at(Some(t0 + secs(5)));
    assert!(!r.due(t0 + secs(4)));
    assert_eq!(r.next_run(), t0 + secs(5));
    // a run before the instant leaves the request pending
    r.request(t0 + secs(4));
    run(&mut r, t0 + secs(4), true);
    assert!(!r.due(t0 + ms(4999)));
    assert_eq!(r.reason(t0 + secs(5)), Some(RunReason::Requested));
    // the minimum interval holds: a request for 5.5 s after a run at 5 s
    // waits until 6 s
    r.started(t0 + secs(5));
    r.finished(t0 + secs(5), true);
    r.request_at(Some(t0 + ms(5500)));
    assert!(!r.due(t0 + ms(5500)));
    assert!(r.due(t0 + secs(6)));
    run(&mut r, t0 + secs(6), true);
    assert!(!r.due(t0 + secs(30)), "served");
    // withdrawn
    r.request_at(Some(t0 + secs(40)));
    r.request_at(None);
    assert!(!r.due(t0 + secs(45)));
}
