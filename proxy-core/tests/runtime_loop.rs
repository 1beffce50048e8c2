//! The sync loop with a recording backend: initial gating, coalescing,
//! retries that keep pending changes, dual-stack, relists, lost dataplanes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::sync::Arc;

use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions};
use proxy_core::{IpFamily, ObjectKind};
use runtime_support::loop_harness::{LoopHarness as Harness, advance};
use runtime_support::{RecordingFactory, service, slice, timing};

#[tokio::test(start_paused = true)]
async fn first_sync_waits_for_both_initial_lists() {
    let h = Harness::start_families(Some(vec![IpFamily::V4]), vec![]);
    h.send(SourceEvent::Service(Update::Init));
    h.send(SourceEvent::Service(Update::InitApply(service(
        "web",
        &["172.30.0.10"],
    ))));
    h.send(SourceEvent::Service(Update::InitDone));
    h.send(SourceEvent::EndpointSlice(Update::Init));
    h.send(SourceEvent::EndpointSlice(Update::InitApply(slice(
        "web-1",
        "web",
        &["10.0.0.1"],
    ))));
    advance(120.0).await;
    assert!(
        h.recorder.built.lock().unwrap().is_empty(),
        "no backend before every initial list"
    );
    assert!(
        h.recorder.calls().is_empty(),
        "no sync of a half-listed world"
    );

    h.send(SourceEvent::EndpointSlice(Update::InitDone));
    advance(0.1).await;
    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].full);
    assert_eq!(
        calls[0].view,
        vec![("ns/web:http".to_string(), vec!["10.0.0.1".to_string()])]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bursts_coalesce_into_one_sync_per_min_interval() {
    let h = Harness::start_families(Some(vec![IpFamily::V4]), vec![]);
    h.list(
        vec![service("web", &["172.30.0.10"])],
        vec![slice("web-1", "web", &["10.0.0.1"])],
    );
    advance(0.1).await;
    assert_eq!(h.recorder.calls().len(), 1);

    for i in 2..=40 {
        h.send(SourceEvent::EndpointSlice(Update::Apply(slice(
            "web-1",
            "web",
            &[&format!("10.0.0.{i}")],
        ))));
        advance(0.01).await;
    }
    advance(0.5).await;
    assert_eq!(
        h.recorder.calls().len(),
        1,
        "min interval holds the burst back"
    );
    advance(1.0).await;
    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 2, "the burst was one sync: {calls:?}");
    assert!(!calls[1].full);
    assert_eq!(calls[1].changed_ports, ["ns/web:http"]);
    assert_eq!(calls[1].view[0].1, ["10.0.0.40"]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_sync_is_retried_with_the_pending_changes() {
    let h = Harness::start_families(Some(vec![IpFamily::V4]), vec![]);
    h.list(
        vec![service("web", &["172.30.0.10"])],
        vec![slice("web-1", "web", &["10.0.0.1"])],
    );
    advance(0.1).await;
    *h.recorder.fail_next.lock().unwrap() = 1;
    h.send(SourceEvent::Service(Update::Apply(service(
        "api",
        &["172.30.0.11"],
    ))));
    h.send(SourceEvent::EndpointSlice(Update::Apply(slice(
        "api-1",
        "api",
        &["10.0.1.1"],
    ))));
    advance(1.5).await;
    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(!calls[1].ok && !calls[1].full && calls[1].changed_ports == ["ns/api:http"]);
    assert!(
        h.observer
            .events()
            .iter()
            .any(|e| e == "failed IPv4: injected failure")
    );

    advance(3.0).await;
    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 3, "one retry after the back-off: {calls:?}");
    assert!(calls[2].ok && calls[2].full, "the retry is a full sync");
    assert!(
        calls[2]
            .view
            .iter()
            .any(|(name, eps)| name == "ns/api:http" && eps == &["10.0.1.1"])
    );
    assert_eq!(
        h.observer
            .events()
            .iter()
            .filter(|e| e.starts_with("synced"))
            .count(),
        2
    );
    assert_eq!(
        h.observer.events().last().map(String::as_str),
        Some("pending 0 0")
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dual_stack_gets_a_backend_per_family() {
    let h = Harness::start_families(None, vec![]);
    h.list(
        vec![service("web", &["172.30.0.10", "fd00::10"])],
        vec![
            slice("web-4", "web", &["10.0.0.1"]),
            slice("web-6", "web", &["fd01::1"]),
        ],
    );
    advance(0.1).await;
    assert_eq!(
        *h.recorder.built.lock().unwrap(),
        [IpFamily::V4, IpFamily::V6]
    );
    assert_eq!(h.recorder.calls_of(IpFamily::V4)[0].view[0].1, ["10.0.0.1"]);
    assert_eq!(h.recorder.calls_of(IpFamily::V6)[0].view[0].1, ["fd01::1"]);

    h.send(SourceEvent::EndpointSlice(Update::Apply(slice(
        "web-6",
        "web",
        &["fd01::2"],
    ))));
    advance(1.5).await;
    assert_eq!(
        h.recorder.calls_of(IpFamily::V4).len(),
        1,
        "an IPv6-only change costs IPv4 nothing"
    );
    assert_eq!(h.recorder.calls_of(IpFamily::V6).len(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_family_the_host_cannot_serve_leaves_single_stack() {
    let h = Harness::start_families(None, vec![IpFamily::V6]);
    h.list(vec![service("web", &["172.30.0.10"])], vec![]);
    advance(0.1).await;
    assert_eq!(*h.recorder.built.lock().unwrap(), [IpFamily::V4]);
    h.stop().await;

    let (factory, _recorder) = RecordingFactory::new(vec![IpFamily::V4, IpFamily::V6]);
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.timing = timing();
    let (source, events) = ChannelSource::new(vec![ObjectKind::Service]);
    events.send(SourceEvent::Service(Update::Init)).unwrap();
    events.send(SourceEvent::Service(Update::InitDone)).unwrap();
    let result = Runtime::new(config, factory, vec![], options)
        .run(Box::new(source), std::future::pending())
        .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("not available here"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn unchanged_relist_writes_nothing_and_missing_objects_are_deleted() {
    let h = Harness::start_families(Some(vec![IpFamily::V4]), vec![]);
    let services = || {
        vec![
            service("web", &["172.30.0.10"]),
            service("api", &["172.30.0.11"]),
        ]
    };
    let slices = || {
        vec![
            slice("web-1", "web", &["10.0.0.1"]),
            slice("api-1", "api", &["10.0.1.1"]),
        ]
    };
    h.list(services(), slices());
    advance(0.1).await;
    assert_eq!(h.recorder.calls().len(), 1);

    h.list(services(), slices());
    advance(5.0).await;
    assert_eq!(
        h.recorder.calls().len(),
        1,
        "a relist that finds nothing new syncs nothing"
    );

    h.list(
        vec![service("web", &["172.30.0.10"])],
        vec![slice("web-1", "web", &["10.0.0.1"])],
    );
    advance(2.0).await;
    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].changed_ports, ["ns/api:http"]);
    assert_eq!(calls[1].view.len(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lost_dataplane_forces_a_full_sync_each_sync_period() {
    let h = Harness::start_families(Some(vec![IpFamily::V4]), vec![]);
    h.list(
        vec![service("web", &["172.30.0.10"])],
        vec![slice("web-1", "web", &["10.0.0.1"])],
    );
    advance(0.1).await;
    advance(31.0).await;
    assert_eq!(
        *h.recorder.lost_checks.lock().unwrap(),
        1,
        "checked once per syncPeriod"
    );
    assert_eq!(
        h.recorder.calls().len(),
        1,
        "nothing lost, nothing pending: no sync"
    );

    *h.recorder.lost.lock().unwrap() = true;
    advance(30.0).await;
    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].full && calls[1].view.len() == 1);
    h.stop().await;
}
