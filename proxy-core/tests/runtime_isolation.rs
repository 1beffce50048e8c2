//! Failure isolation in the sync loop (beyond upstream), with a recording
//! backend whose "dataplane" refuses every view holding a marked port:
//! the culprits are found by bisection, everything else is programmed,
//! the culprits are reported (observer, metrics), held back and retried
//! with back-off, also under churn, and programmed once accepted; `/healthz`
//! stays healthy while only culprits are held back, and a failure that is
//! no port's fails the sync as a whole, as before.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proxy_core::runtime::SyncObserver;
use proxy_core::runtime::health::ProxyHealth;
use proxy_core::runtime::metrics::ProxyMetrics;
use runtime_support::loop_harness::{LoopHarness, advance};
use runtime_support::{SyncCall, service, slice};

/// Services `s00`…`s{n-1}` and `bad`, each with one endpoint.
fn world(
    n: usize,
) -> (
    Vec<k8s_openapi::api::core::v1::Service>,
    Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        let name = format!("s{i:02}");
        services.push(service(&name, &[&format!("172.30.0.{}", i + 1)]));
        slices.push(slice(
            &format!("{name}-1"),
            &name,
            &[&format!("10.0.0.{}", i + 1)],
        ));
    }
    services.push(service("bad", &["172.30.1.1"]));
    slices.push(slice("bad-1", "bad", &["10.0.1.1"]));
    (services, slices)
}

fn port_names(call: &SyncCall) -> Vec<&str> {
    call.view.iter().map(|(name, _)| name.as_str()).collect()
}

fn last_ok(calls: &[SyncCall]) -> &SyncCall {
    calls.iter().rev().find(|c| c.ok).expect("an accepted call")
}

fn refused_events(h: &LoopHarness) -> Vec<String> {
    h.observer
        .events()
        .into_iter()
        .filter(|e| e.starts_with("refused"))
        .collect()
}

/// A wall clock that follows tokio's paused clock.
fn tokio_clock() -> Arc<dyn proxy_core::runtime::health::Clock> {
    let base = SystemTime::now();
    let start = tokio::time::Instant::now();
    Arc::new(move || base + start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_refused_port_is_isolated_and_every_other_one_programmed() {
    let metrics = Arc::new(ProxyMetrics::new());
    let h = LoopHarness::start(vec![metrics.clone() as Arc<dyn SyncObserver>]);
    h.recorder
        .refuse
        .lock()
        .unwrap()
        .push("ns/bad:http".to_string());
    let (services, slices) = world(16);
    h.list(services, slices);
    advance(0.1).await;

    let calls = h.recorder.calls();
    assert!(
        !calls[0].ok && calls[0].full,
        "the first full sync is refused"
    );
    println!("one culprit among 17 ports: {} calls", calls.len());
    let programmed = last_ok(&calls);
    let names = port_names(programmed);
    assert_eq!(names.len(), 16, "every port but the culprit: {names:?}");
    assert!(!names.contains(&"ns/bad:http"));
    // 17 ports: the refused sync, one check of the last good view, the
    // sync again, then two calls per bisection level (log2 17 < 5).
    assert!(
        calls.len() <= 3 + 2 * 5,
        "{} calls: {calls:#?}",
        calls.len()
    );
    assert_eq!(
        refused_events(&h),
        [r#"refused IPv4 ["ns/bad:http"] new=1"#]
    );
    let synced: Vec<String> = h
        .observer
        .events()
        .into_iter()
        .filter(|e| e.starts_with("synced"))
        .collect();
    assert_eq!(
        synced,
        ["synced IPv4 full=true ports=16 triggers=0"],
        "one report for the whole sync, of what was programmed"
    );

    let text = metrics.encode();
    for sample in [
        r#"kubeproxy_sync_proxy_rules_refused_service_ports{ip_family="IPv4"} 1"#,
        r#"kubeproxy_sync_proxy_rules_service_port_refusals_total{ip_family="IPv4"} 1"#,
    ] {
        assert!(text.contains(sample), "{sample} in\n{text}");
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn several_culprits_cost_a_logarithmic_number_of_calls() {
    let h = LoopHarness::start(vec![]);
    {
        let mut refuse = h.recorder.refuse.lock().unwrap();
        refuse.push("ns/s05:http".to_string());
        refuse.push("ns/s40:http".to_string());
    }
    let (services, slices) = world(63);
    h.list(services, slices);
    advance(0.1).await;

    let calls = h.recorder.calls();
    println!("two culprits among 64 ports: {} calls", calls.len());
    let names = port_names(last_ok(&calls));
    assert_eq!(names.len(), 62, "64 ports but the two culprits");
    assert!(!names.contains(&"ns/s05:http") && !names.contains(&"ns/s40:http"));
    assert!(names.contains(&"ns/bad:http"));
    // Two culprits among 64: at most two bisections of 2 calls per level
    // (log2 64 = 6), the first call, one check and the first call again.
    assert!(
        calls.len() <= 3 + 2 * 2 * 6,
        "{} calls: {calls:#?}",
        calls.len()
    );
    assert_eq!(
        refused_events(&h),
        [r#"refused IPv4 ["ns/s05:http", "ns/s40:http"] new=2"#]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_culprit_is_retried_with_back_off_and_programmed_once_accepted() {
    let metrics = Arc::new(ProxyMetrics::new());
    let h = LoopHarness::start(vec![metrics.clone() as Arc<dyn SyncObserver>]);
    h.recorder
        .refuse
        .lock()
        .unwrap()
        .push("ns/bad:http".to_string());
    let (services, slices) = world(4);
    h.list(services, slices);
    advance(0.1).await;
    let after_isolation = h.recorder.calls().len();

    // Retries after 2 s, 4 s, 8 s (timing(): retry 2 s, doubling): each one
    // call, refused.
    advance(2.0 + 4.0 + 8.0 + 0.5).await;
    let calls = h.recorder.calls();
    let retries = &calls[after_isolation..];
    assert_eq!(retries.len(), 3, "{retries:#?}");
    assert!(retries.iter().all(|c| !c.ok));
    assert!(
        retries[1..].iter().all(|c| c.full),
        "a call after a refused one is a full sync"
    );
    assert!(
        retries
            .iter()
            .all(|c| port_names(c).contains(&"ns/bad:http")),
        "a retry tries the culprit"
    );
    assert_eq!(refused_events(&h).len(), 1, "a refusal again is no news");

    // The dataplane accepts it now: the next retry (16 s later) programs it.
    h.recorder.refuse.lock().unwrap().clear();
    advance(16.5).await;
    let calls = h.recorder.calls();
    let last = calls.last().unwrap();
    assert!(
        last.ok && port_names(last).contains(&"ns/bad:http"),
        "{last:?}"
    );
    assert_eq!(port_names(last).len(), 5);
    assert_eq!(
        refused_events(&h).last().map(String::as_str),
        Some("refused IPv4 [] new=0")
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"kubeproxy_sync_proxy_rules_refused_service_ports{ip_family="IPv4"} 0"#),
        "{text}"
    );

    // Settled: no more retries.
    let settled = calls.len();
    advance(25.0).await;
    assert_eq!(h.recorder.calls().len(), settled);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_culprit_is_retried_at_once_and_others_are_not_held_up() {
    let h = LoopHarness::start(vec![]);
    // Refuses the version of `bad` with endpoint 10.0.1.1 only.
    h.recorder
        .refuse
        .lock()
        .unwrap()
        .push("10.0.1.1".to_string());
    let (services, slices) = world(4);
    h.list(services, slices);
    advance(0.1).await;
    assert_eq!(refused_events(&h).len(), 1);

    // Another service changes: programmed by one partial call, the culprit
    // held back and not retried yet.
    let before = h.recorder.calls().len();
    h.apply_slice(slice("s01-1", "s01", &["10.0.0.77"]));
    advance(1.05).await;
    let calls = h.recorder.calls();
    let new = &calls[before..];
    assert_eq!(new.len(), 1, "{new:#?}");
    assert!(new[0].ok && !new[0].full && new[0].changed_ports == ["ns/s01:http"]);
    assert!(!port_names(&new[0]).contains(&"ns/bad:http"));

    // The culprit's slice is fixed: retried at once, not after its back-off.
    let before = calls.len();
    h.apply_slice(slice("bad-1", "bad", &["10.0.1.2"]));
    advance(1.05).await;
    let calls = h.recorder.calls();
    let new = &calls[before..];
    assert!(!new.is_empty(), "retried at once");
    let last = new.last().unwrap();
    assert!(last.ok, "{new:#?}");
    assert!(
        last.view
            .iter()
            .any(|(name, eps)| name == "ns/bad:http" && eps == &["10.0.1.2"])
    );
    assert_eq!(
        refused_events(&h).last().map(String::as_str),
        Some("refused IPv4 [] new=0")
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn culprits_are_retried_under_churn() {
    let h = LoopHarness::start(vec![]);
    h.recorder
        .refuse
        .lock()
        .unwrap()
        .push("ns/bad:http".to_string());
    let (services, slices) = world(4);
    h.list(services, slices);
    advance(0.1).await;
    h.recorder.refuse.lock().unwrap().clear();

    // A change every 0.5 s keeps the loop's own retry from ever coming;
    // the culprit's back-off (2 s) still brings its retry.
    for i in 0..10 {
        h.apply_slice(slice("s00-1", "s00", &[&format!("10.0.2.{i}")]));
        advance(0.5).await;
    }
    let calls = h.recorder.calls();
    let programmed = calls
        .iter()
        .position(|c| c.ok && port_names(c).contains(&"ns/bad:http"));
    assert!(programmed.is_some(), "{calls:#?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_is_no_ports_fails_the_sync_as_before() {
    let clock = tokio_clock();
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(60), clock));
    let h = LoopHarness::start(vec![health.clone() as Arc<dyn SyncObserver>]);
    let (services, slices) = world(4);
    h.list(services, slices);
    advance(0.1).await;
    assert_eq!(h.recorder.calls().len(), 1);

    // Every view is refused now, even the last good one.
    h.recorder.refuse.lock().unwrap().push("ns/".to_string());
    h.apply_slice(slice("s00-1", "s00", &["10.0.0.99"]));
    advance(1.05).await;
    let calls = h.recorder.calls();
    assert_eq!(
        calls.len(),
        3,
        "the refused sync and the refused check of the last good view: {calls:#?}"
    );
    assert!(calls[2].full && !calls[2].ok);
    assert!(refused_events(&h).is_empty(), "no port is blamed");

    // Retried with back-off as a full sync, and unhealthy after the window.
    advance(61.0).await;
    assert!(!health.is_healthy());
    h.recorder.refuse.lock().unwrap().clear();
    advance(30.0).await;
    let calls = h.recorder.calls();
    let last = calls.last().unwrap();
    assert!(last.ok && last.full);
    assert!(health.is_healthy());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn healthz_stays_healthy_while_only_culprits_are_held_back() {
    let clock = tokio_clock();
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(60), clock));
    let h = LoopHarness::start(vec![health.clone() as Arc<dyn SyncObserver>]);
    h.recorder
        .refuse
        .lock()
        .unwrap()
        .push("ns/bad:http".to_string());
    let (services, slices) = world(4);
    h.list(services, slices);
    advance(0.1).await;
    assert!(health.is_healthy());
    // Retries keep failing for minutes; every other change is programmed.
    for i in 0..4 {
        h.apply_slice(slice("s02-1", "s02", &[&format!("10.0.3.{i}")]));
        advance(45.0).await;
        assert!(health.is_healthy(), "after {} s", 45 * (i + 1));
    }
    let last = last_ok(&h.recorder.calls()).clone();
    assert!(
        last.view
            .iter()
            .any(|(name, eps)| name == "ns/s02:http" && eps == &["10.0.3.3"])
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refusal_the_full_sync_after_it_cures_blames_no_port() {
    let h = LoopHarness::start(vec![]);
    let (services, slices) = world(4);
    h.list(services, slices);
    advance(0.1).await;
    let before = h.recorder.calls().len();

    *h.recorder.refuse_next.lock().unwrap() = 1;
    h.apply_slice(slice("s01-1", "s01", &["10.0.0.77"]));
    advance(1.05).await;
    let calls = h.recorder.calls();
    let new = &calls[before..];
    assert_eq!(new.len(), 3, "{new:#?}");
    assert!(!new[0].ok && !new[0].full, "the partial sync is refused");
    assert!(new[1].ok && new[1].full, "the last good view, in full");
    assert!(
        !port_names(&new[1]).is_empty()
            && new[1]
                .view
                .iter()
                .all(|(name, eps)| name != "ns/s01:http" || eps == &["10.0.0.2"]),
        "the last good view holds the old version: {:?}",
        new[1]
    );
    assert!(new[2].ok && new[2].changed_ports == ["ns/s01:http"]);
    assert!(refused_events(&h).is_empty(), "no port is blamed");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn many_culprits_are_found_over_several_budgeted_syncs() {
    let h = LoopHarness::start(vec![]);
    // s00…s19: 20 culprits among 64 ports.
    {
        let mut refuse = h.recorder.refuse.lock().unwrap();
        refuse.push("ns/s0".to_string());
        refuse.push("ns/s1".to_string());
    }
    let (services, slices) = world(63);
    h.list(services, slices);
    advance(0.1).await;
    let first_sync = h.recorder.calls().len();
    // The budget of one sync over 64 ports: 4 × (7 + 2) + 2.
    assert!(first_sync <= 38, "{first_sync} calls in the first sync");
    let programmed = port_names(last_ok(&h.recorder.calls())).len();
    assert!(programmed < 44, "not every culprit is found in one sync");

    advance(120.0).await;
    let calls = h.recorder.calls();
    println!(
        "20 culprits among 64 ports: {} calls over {} s, {first_sync} in the first sync",
        calls.len(),
        120
    );
    let names = port_names(last_ok(&calls));
    assert_eq!(names.len(), 44, "every port but the culprits: {names:?}");
    let last = refused_events(&h).pop().unwrap();
    assert_eq!(last.matches("ns/s").count(), 20, "{last}");
    h.stop().await;
}
