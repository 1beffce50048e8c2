//! What the backend keeps of what it committed, in heap bytes per endpoint:
//! the e2e bench's cluster shape (Services × 10 endpoints, every 10th a
//! LoadBalancer with a node port and an ingress IP) after a cold start and
//! after endpoint changes, counted by jemalloc's statistics (the binary's
//! allocator). The RSS target of issue 12 (≤ 1 KiB per endpoint, the topology and
//! the watch included) leaves the backend's record a few hundred bytes; it
//! keeps ~60–100 (the ports' views are the node view's, shared; the
//! element store holds a fingerprint and an owner per element). It was
//! 760–895 when it kept every port's rendered objects and a second copy of
//! their elements.

#![allow(clippy::unwrap_used)] // test code: a failure should panic

use std::net::{IpAddr, Ipv4Addr};

use backend_nftables::ir::Transaction;
use backend_nftables::{Executor, NftError, NftablesBackend};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::BackendContext;
use proxy_core::{
    Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServicePortName, ServiceTopology,
};
use serde_json::json;

/// The binary's allocator: its statistics count what is live, in its size
/// classes (what the RSS holds, fragmentation aside).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes allocated and live, process-wide.
fn live() -> isize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap() as isize
}

/// Accepts every transaction and keeps nothing.
struct Null;

#[async_trait::async_trait]
impl Executor for Null {
    async fn apply(&mut self, _tx: &Transaction) -> Result<(), NftError> {
        Ok(())
    }

    async fn table_exists(&mut self, _family: IpFamily) -> Result<bool, NftError> {
        Ok(false)
    }
}

const SERVICES: usize = 2_000;
const ENDPOINTS: usize = 10;

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

fn endpoint_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200 + (j >> 16) as u8, (j >> 8) as u8, j as u8)
}

fn service(i: usize) -> Service {
    let c = cluster_ip(i).octets();
    let spec = if i.is_multiple_of(10) {
        json!({"type": "LoadBalancer", "clusterIP": cluster_ip(i).to_string(),
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30000 + i / 10}]})
    } else {
        json!({"clusterIP": cluster_ip(i).to_string(),
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]})
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i:06}"), "namespace": "bench"},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": format!("198.18.{}.{}", c[2], c[3])}]}},
    }))
    .unwrap()
}

fn slice(i: usize, first: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (first..first + ENDPOINTS)
        .map(|j| {
            json!({"addresses": [endpoint_ip(j).to_string()], "nodeName": "node-b",
                        "conditions": {"ready": true}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i:06}-1"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc{i:06}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn port_name(i: usize) -> ServicePortName {
    ServicePortName::new(
        "bench",
        &format!("svc{i:06}"),
        "http",
        proxy_core::Protocol::Tcp,
    )
}

/// Heap bytes per endpoint the backend holds after a cold start, and after
/// `changes` endpoint changes (each a partial sync of one port).
async fn committed_bytes(changes: usize) -> (f64, f64) {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))];
    let node = node.shared();
    let ctx = BackendContext::for_tests(IpFamily::V4, node.clone());
    let mut topo = ServiceTopology::new();
    for i in 0..SERVICES {
        assert!(topo.apply_service(&service(i)).errors.is_empty());
        assert!(
            topo.apply_endpoint_slice(&slice(i, i * ENDPOINTS))
                .errors
                .is_empty()
        );
    }
    let mut view = NodeView::build(&topo, node, IpFamily::V4);
    let mut backend = NftablesBackend::with_executor(&ctx, Box::new(Null));
    let before = live();
    let start = std::time::Instant::now();
    backend.sync(&view, &ChangeSet::full()).await.unwrap();
    let cold_time = start.elapsed();
    let endpoints = (SERVICES * ENDPOINTS) as f64;
    let cold = (live() - before) as f64 / endpoints;
    // Fresh endpoint IPs beyond those of the cold start.
    let mut next = SERVICES * ENDPOINTS;
    let mut changed = 0;
    let mut sync_time = std::time::Duration::ZERO;
    for k in 0..changes {
        let i = (k * 7) % SERVICES;
        assert!(topo.apply_endpoint_slice(&slice(i, next)).errors.is_empty());
        next += ENDPOINTS;
        let key = proxy_core::ServiceKey::new("bench", format!("svc{i:06}"));
        view.update_service(&topo, &key);
        let start = std::time::Instant::now();
        let stats = backend
            .sync(&view, &ChangeSet::partial([port_name(i)]))
            .await
            .unwrap();
        sync_time += start.elapsed();
        changed += stats.ports_written;
    }
    assert_eq!(changed, changes, "every change wrote its port");
    eprintln!("cold start sync {cold_time:?}, {changes} change syncs {sync_time:?}");
    // The view and topology grew with the changes (new slices replace old
    // ones: the same size); only the backend's share is counted, by
    // dropping it.
    let with_backend = live();
    drop(backend);
    let after = (with_backend - live()) as f64 / endpoints;
    (cold, after)
}

#[tokio::test]
async fn the_committed_record_stays_small_per_endpoint() {
    let (cold, after) = committed_bytes(1_000).await;
    eprintln!(
        "committed record: {cold:.0} B/endpoint after cold start, {after:.0} after 1,000 changes"
    );
    assert!(cold < 200.0 && after < 200.0, "{cold} {after}");
}
