//! [`ProxyBuilder`]: the whole proxy started from an embedder's own
//! runtime, with its own `kube::Client` (against a fake API server over
//! real HTTP), its own backend registry and its own metrics registry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::backend::Registry;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::ProxyBuilder;
use proxy_core::runtime::source::ChannelSource;
use proxy_core::{Error, IpFamily, ObjectKind, ProxyMode};
use runtime_support::fake_api::FakeApi;
use runtime_support::{Recorder, RecordingFactory, service, slice};
use tokio::sync::oneshot;

fn registry() -> (Registry, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let factory = RecordingFactory {
        recorder: recorder.clone(),
        unsupported: vec![],
    };
    (Registry::new().with(factory), recorder)
}

fn config() -> KubeProxyConfiguration {
    KubeProxyConfiguration {
        mode: Some(ProxyMode::Userspace),
        ..KubeProxyConfiguration::default()
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_embedder_runs_the_proxy_with_its_client_backend_and_metrics_registry() {
    let api = FakeApi::start(false).await;
    api.apply("services", service("web", &["172.30.0.10"]));
    api.apply("endpointslices", slice("web-1", "web", &["10.0.0.1"]));
    let (registry, recorder) = registry();
    let mut metrics = prometheus_client::registry::Registry::default();
    let proxy = ProxyBuilder::new(config(), registry, "node-a")
        .kube_client(api.client())
        .metrics_registry(&mut metrics)
        .health_server(false)
        .metrics_server(false)
        .host_setup(false)
        .families(vec![IpFamily::V4])
        .build()
        .unwrap();
    assert!(!proxy.host_setup());
    let health = proxy.health().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));

    eventually("the first sync of the embedder's backend", || {
        !recorder.calls().is_empty()
    })
    .await;
    let first = recorder.calls()[0].clone();
    assert_eq!(first.family, IpFamily::V4);
    assert!(
        first
            .view
            .iter()
            .any(|(name, ips)| name.contains("ns/web") && ips == &["10.0.0.1".to_string()])
    );
    assert!(health.is_healthy());

    // A change through the embedder's client reaches its backend.
    api.apply(
        "endpointslices",
        slice("web-1", "web", &["10.0.0.1", "10.0.0.2"]),
    );
    eventually("the partial sync of the new endpoint", || {
        recorder
            .calls()
            .iter()
            .any(|call| call.view.iter().any(|(_, ips)| ips.len() == 2))
    })
    .await;

    // Upstream's metrics are in the embedder's registry.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics).unwrap();
    assert!(
        text.contains("kubeproxy_sync_proxy_rules_service_changes_total 1"),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"),
        "{text}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the proxy stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_mode_missing_from_the_registry_is_refused_by_name() {
    let (registry, _) = registry();
    let (source, _events) = ChannelSource::new(vec![ObjectKind::Service]);
    let error = ProxyBuilder::new(config(), registry, "node-a")
        .mode(ProxyMode::Nftables)
        .source(Box::new(source))
        .build()
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Config { .. }), "{text}");
    assert!(
        text.contains("mode nftables is not in the registry; available: userspace"),
        "{text}"
    );
}

#[tokio::test]
async fn a_proxy_without_a_source_is_refused() {
    let (registry, _) = registry();
    let error = ProxyBuilder::new(config(), registry, "node-a")
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("no source of objects"),
        "{error}"
    );
}

#[tokio::test]
async fn a_health_server_that_cannot_bind_stops_the_proxy_with_hard_fail() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config();
    config.healthz_bind_address = taken.local_addr().unwrap().to_string();
    config.bind_address_hard_fail = true;
    let (registry, _) = registry();
    let (source, _events) = ChannelSource::new(vec![ObjectKind::Service]);
    let proxy = ProxyBuilder::new(config, registry, "node-a")
        .source(Box::new(source))
        .metrics_server(false)
        .host_setup(false)
        .build()
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), proxy.run(std::future::pending()))
        .await
        .expect("the bind failure ends the run");
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
}
