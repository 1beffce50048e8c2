//! NodeView benchmark: 10,000 services × 10 endpoints (one port, one
//! EndpointSlice each, node names and zones set, 10% of endpoints local).
//!
//! - `node_view/build_both_families`: `NodeView::build` for IPv4 and IPv6.
//! - `node_view/one_endpoint_change`: `PendingChanges::prepare` (which runs
//!   `ChangeSet::between`) after one endpoint of one service changed.
//! - memory: resident set growth while building the topology and the view,
//!   read from `/proc/self/status`, printed before the timings.
//!
//! Run with `cargo bench -p proxy-core --bench node_view`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use proxy_core::changes::PendingChanges;
use proxy_core::{IpFamily, NodeInfo, NodeView, ServiceKey, ServiceTopology};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;
const NODES: usize = 100;
const THIS_NODE: usize = 0;

fn node_name(n: usize) -> String {
    format!("ip-10-0-{}-{}.ec2.internal", n / 256, n % 256)
}

fn zone(n: usize) -> String {
    format!("us-east-1{}", ["a", "b", "c"][n % 3])
}

fn namespace(i: usize) -> String {
    format!("team-{:02}", i % 40)
}

fn service_name(i: usize) -> String {
    format!("checkout-api-{i:05}")
}

fn service(i: usize) -> corev1::Service {
    let ip = format!("172.30.{}.{}", i / 250, i % 250 + 1);
    corev1::Service {
        metadata: ObjectMeta {
            namespace: Some(namespace(i)),
            name: Some(service_name(i)),
            ..ObjectMeta::default()
        },
        spec: Some(corev1::ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![corev1::ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..corev1::ServicePort::default()
            }]),
            ..corev1::ServiceSpec::default()
        }),
        status: None,
    }
}

/// The slice of service `i`; `generation` shifts the IP of endpoint 0.
fn slice(i: usize, generation: usize) -> discoveryv1::EndpointSlice {
    let endpoints: Vec<discoveryv1::Endpoint> = (0..ENDPOINTS)
        .map(|j| {
            let idx = i * ENDPOINTS + j + if j == 0 { generation * 7919 } else { 0 };
            // Endpoint 3 of every service runs on this node: 10% local.
            let node = if j == 3 {
                THIS_NODE
            } else {
                1 + (idx * 7) % (NODES - 1)
            };
            discoveryv1::Endpoint {
                addresses: vec![format!(
                    "10.{}.{}.{}",
                    64 + (idx >> 16) % 64,
                    (idx >> 8) & 255,
                    idx & 255
                )],
                conditions: Some(discoveryv1::EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(node_name(node)),
                zone: Some(zone(node)),
                ..discoveryv1::Endpoint::default()
            }
        })
        .collect();
    discoveryv1::EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(namespace(i)),
            name: Some(format!("{}-x7k2p", service_name(i))),
            labels: Some([("kubernetes.io/service-name".to_string(), service_name(i))].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(vec![discoveryv1::EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

fn topology() -> ServiceTopology {
    let mut topo = ServiceTopology::new();
    for i in 0..SERVICES {
        let _ = topo.apply_service(&service(i));
        let _ = topo.apply_endpoint_slice(&slice(i, 0));
    }
    topo
}

fn this_node() -> Arc<NodeInfo> {
    let mut node = NodeInfo::named(node_name(THIS_NODE));
    node.labels
        .insert("topology.kubernetes.io/zone".into(), zone(THIS_NODE));
    node.shared()
}

fn build_both(topo: &ServiceTopology, node: &Arc<NodeInfo>) -> [NodeView; 2] {
    IpFamily::ALL.map(|family| NodeView::build(topo, node.clone(), family))
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn memory_report() {
    let Some((before, _)) = rss() else {
        println!("memory: /proc/self/status unavailable, skipped");
        return;
    };
    let started = Instant::now();
    let topo = topology();
    let topo_time = started.elapsed();
    let (with_topology, _) = rss().unwrap_or_default();
    let node = this_node();
    let started = Instant::now();
    let views = build_both(&topo, &node);
    let build_time = started.elapsed();
    let (with_view, peak) = rss().unwrap_or_default();
    let endpoints = (SERVICES * ENDPOINTS) as u64;
    let total = with_view.saturating_sub(before);
    println!("memory: {SERVICES} services x {ENDPOINTS} endpoints = {endpoints} endpoints");
    println!(
        "memory: topology {} KiB, views {} KiB, total {} KiB = {} bytes per endpoint (peak RSS {} KiB)",
        with_topology.saturating_sub(before) / 1024,
        with_view.saturating_sub(with_topology) / 1024,
        total / 1024,
        total / endpoints,
        peak / 1024,
    );
    println!(
        "once: topology ingest {topo_time:?}, build of both views {build_time:?} ({} IPv4 ports, {} endpoints)",
        views[0].len(),
        views[0].endpoint_count()
    );
    black_box((topo, views));
}

fn bench_build(c: &mut Criterion) {
    let topo = topology();
    let node = this_node();
    c.bench_function("node_view/build_both_families", |b| {
        b.iter(|| build_both(black_box(&topo), &node))
    });
}

fn bench_change(c: &mut Criterion) {
    let mut topo = topology();
    let node = this_node();
    let synced = NodeView::build(&topo, node.clone(), IpFamily::V4);
    // One endpoint of one service changes.
    let changed = 4321;
    let applied = topo.apply_endpoint_slice(&slice(changed, 1));
    assert_eq!(
        applied.changed,
        [ServiceKey::new(namespace(changed), service_name(changed))]
    );
    let mut pending = PendingChanges::new();
    pending.touch_all(applied.changed);
    let (_, changes) = pending.prepare(&topo, &synced, &node);
    assert_eq!(changes.len(), 1);
    c.bench_function("node_view/one_endpoint_change", |b| {
        b.iter(|| pending.prepare(black_box(&topo), black_box(&synced), &node))
    });
}

criterion_group!(benches, bench_build, bench_change);

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
