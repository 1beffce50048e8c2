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
    // Every request was served: nothing more until the periodic run.
    assert!(!r.due(t + MIN));
    assert!(!r.due(t + MAX - ms(1)));
    assert_eq!(r.next_run(), t + MAX);
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
    // A requested run pushes the periodic one back.
    r.request(t0 + secs(90));
    run(&mut r, t0 + secs(90), true);
    assert_eq!(r.next_run(), t0 + secs(90) + MAX);
    assert!(!r.due(t0 + secs(149)));
    assert_eq!(r.reason(t0 + secs(150)), Some(RunReason::Periodic));
}

#[test]
fn failure_retries_with_doubling_backoff_up_to_max_interval() {
    let t0 = Instant::now();
    let mut r = SyncRunner::new(MIN, MAX, RETRY, t0);
    r.request(t0);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..8 {
        run(&mut r, now, false);
        let next = r.next_run();
        assert_eq!(r.retry_at(), Some(next));
        assert!(!r.due(next - ms(1)));
        let delay = next - now;
        // Once the back-off reaches max_interval the retry and the periodic
        // run coincide; the periodic reason wins.
        let want = if delay == MAX {
            RunReason::Periodic
        } else {
            RunReason::Retry
        };
        assert_eq!(r.reason(next), Some(want));
        delays.push(delay.as_secs());
        now = next;
    }
    assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
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
