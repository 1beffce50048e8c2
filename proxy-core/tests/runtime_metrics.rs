//! The metrics registry fed by sync reports, and the metrics server over
//! real HTTP on loopback.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::SyncObserver;
use proxy_core::runtime::SyncReport;
use proxy_core::runtime::metrics::{MetricsServer, ProxyMetrics, no_local_endpoints};
use proxy_core::{
    BackendError, ChangeSet, IpFamily, NodeInfo, NodeView, ProxyMode, ServiceTopology, SyncStats,
};

const NODE: &str = "node-a";
const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// Status, content type and body of one `GET`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// `ns/<name>`: one UDP port 53 (node port 30053), with the given policies.
fn service(name: &str, ip: &str, internal: &str, external: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "type": "NodePort",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "internalTrafficPolicy": internal,
            "externalTrafficPolicy": external,
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30000 + ip.len() as u16 * 10 + name.len() as u16}],
        },
    }))
    .unwrap()
}

/// One remote ready endpoint of `ns/<svc>`.
fn remote_slice(svc: &str, ip: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": [ip], "nodeName": "node-b", "conditions": {"ready": true}}],
    }))
    .unwrap()
}

/// A view with one iTP=Local and one eTP=Local service, both with only remote endpoints.
fn view() -> NodeView {
    let mut topology = ServiceTopology::new();
    for applied in [
        topology.apply_service(&service("internal-local", "172.30.0.1", "Local", "Cluster")),
        topology.apply_endpoint_slice(&remote_slice("internal-local", "10.0.1.1")),
        topology.apply_service(&service("external-local", "172.30.0.2", "Cluster", "Local")),
        topology.apply_endpoint_slice(&remote_slice("external-local", "10.0.1.2")),
        topology.apply_service(&service("plain", "172.30.0.3", "Cluster", "Cluster")),
        topology.apply_endpoint_slice(&remote_slice("plain", "10.0.1.3")),
    ] {
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    }
    NodeView::build(&topology, NodeInfo::named(NODE).shared(), IpFamily::V4)
}

#[test]
fn no_local_endpoints_counts_dropped_ports_per_policy() {
    assert_eq!(no_local_endpoints(&view()), (1, 1));
}

/// A metric's `# TYPE` line is present with `kind`.
fn assert_type(text: &str, name: &str, kind: &str) {
    let line = format!("# TYPE {name} {kind}");
    assert!(
        text.lines().any(|l| l == line),
        "missing {line:?} in\n{text}"
    );
}

fn assert_sample(text: &str, sample: &str) {
    assert!(
        text.lines().any(|l| l == sample),
        "missing sample {sample:?} in\n{text}"
    );
}

#[tokio::test]
async fn metrics_after_a_sync_report_and_the_server_paths() {
    let metrics = Arc::new(ProxyMetrics::with_clock(Arc::new(now)));
    let v = view();
    let empty = NodeView::empty(IpFamily::V4, NodeInfo::named(NODE).shared());
    let changes = ChangeSet::full();
    let stats = SyncStats {
        full: true,
        ports_written: 3,
        objects_written: 40,
        totals: vec![("filter".into(), 7), ("nat".into(), 33)],
    };
    let triggers = [now() - Duration::from_millis(1500)];
    metrics.queued(IpFamily::V4, now() - Duration::from_secs(2));
    metrics.pending(2, 3);
    metrics.pending(2, 5);
    metrics.synced(&SyncReport {
        family: IpFamily::V4,
        mode: ProxyMode::Iptables,
        full: true,
        duration: Duration::from_millis(3),
        stats: &stats,
        view: &v,
        previous: &empty,
        changes: &changes,
        trigger_times: &triggers,
    });
    let partial = ChangeSet::partial([]);
    metrics.synced(&SyncReport {
        family: IpFamily::V4,
        mode: ProxyMode::Iptables,
        full: false,
        duration: Duration::from_millis(1),
        stats: &stats,
        view: &v,
        previous: &v,
        changes: &partial,
        trigger_times: &[],
    });
    metrics.pending(0, 0);
    metrics.pending(1, 0);
    metrics.record_conntrack_cleanup(IpFamily::V4, 2, Duration::from_millis(7));
    metrics.record_healthz(200);
    metrics.record_livez(503);
    metrics.failed(
        IpFamily::V6,
        ProxyMode::Nftables,
        true,
        &BackendError::transient("busy"),
    );
    metrics.failed(
        IpFamily::V4,
        ProxyMode::Iptables,
        false,
        &BackendError::dataplane("restore failed"),
    );

    let config = KubeProxyConfiguration {
        mode: Some(ProxyMode::Nftables),
        ..KubeProxyConfiguration::default()
    };
    let server = MetricsServer::new(metrics.clone(), &config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_listener(listener).await });

    let (status, content_type, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );

    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubeproxy_sync_full_proxy_rules_duration_seconds",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds",
        "kubeproxy_network_programming_duration_seconds",
        "kubeproxy_conntrack_reconciler_sync_duration_seconds",
    ] {
        assert_type(&text, name, "histogram");
    }
    for name in [
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
        "kubeproxy_sync_proxy_rules_iptables_total",
    ] {
        assert_type(&text, name, "gauge");
    }
    for name in [
        "kubeproxy_sync_proxy_rules_endpoint_changes",
        "kubeproxy_sync_proxy_rules_service_changes",
        "kubeproxy_sync_proxy_rules_iptables_restore_failures",
        "kubeproxy_sync_proxy_rules_nftables_sync_failures",
        "kubeproxy_conntrack_reconciler_deleted_entries",
        "kubeproxy_proxy_healthz",
        "kubeproxy_proxy_livez",
    ] {
        assert_type(&text, name, "counter");
    }

    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"} 2"#,
    );
    assert_sample(&text, r#"kubeproxy_proxy_livez_total{code="503"} 1"#);
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004",ip_family="IPv4"} 2"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.002",ip_family="IPv4"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1700000000.0"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"} 1699999998.0"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_network_programming_duration_seconds_bucket{le="1.0",ip_family="IPv4"} 0"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_network_programming_duration_seconds_bucket{le="2.0",ip_family="IPv4"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"} 33"#,
    );
    // pending went 2/3 → 2/5 → 0/0 → 1/0: totals are the increases.
    assert_sample(&text, "kubeproxy_sync_proxy_rules_service_changes_total 3");
    assert_sample(&text, "kubeproxy_sync_proxy_rules_endpoint_changes_total 5");
    assert_sample(
        &text,
        "kubeproxy_sync_proxy_rules_service_changes_pending 1",
    );
    assert_sample(
        &text,
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"} 1"#,
    );
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1"#,
    );
    // The failed iptables sync was partial.
    assert_sample(
        &text,
        r#"kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv4"} 1"#,
    );

    assert_eq!(get(addr, "/healthz").await.2, "ok");
    let (status, content_type, mode) = get(addr, "/proxyMode").await;
    assert_eq!((status, mode.as_str()), (200, "nftables"));
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let (status, content_type, configz) = get(addr, "/configz").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let configz: Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(
        configz["kubeproxy.config.k8s.io"]["mode"],
        json!("nftables")
    );
    assert_eq!(
        configz["kubeproxy.config.k8s.io"]["conntrack"]["maxPerCore"],
        json!(32768)
    );
}

#[test]
fn external_changes_are_counted_per_family_and_detector() {
    use proxy_core::runtime::DetectedBy;
    let metrics = ProxyMetrics::with_clock(Arc::new(now));
    let name = "kubeproxy_sync_proxy_rules_external_changes_total";
    metrics.external_change(IpFamily::V4, ProxyMode::Nftables, DetectedBy::Netlink);
    metrics.external_change(IpFamily::V4, ProxyMode::Nftables, DetectedBy::Netlink);
    metrics.external_change(IpFamily::V6, ProxyMode::Iptables, DetectedBy::Poll);
    let text = metrics.encode();
    assert_type(
        &text,
        "kubeproxy_sync_proxy_rules_external_changes",
        "counter",
    );
    assert_sample(
        &text,
        &format!("{name}{{ip_family=\"IPv4\",detected_by=\"netlink\"}} 2"),
    );
    assert_sample(
        &text,
        &format!("{name}{{ip_family=\"IPv6\",detected_by=\"poll\"}} 1"),
    );
}
