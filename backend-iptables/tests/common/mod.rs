//! Synthetic topologies for tests and benchmarks: `services` ClusterIP
//! services with one TCP port and `endpoints` ready endpoints each.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::{BackendContext, LocalTrafficDetector};
use proxy_core::{IpFamily, NodeInfo, NodeView, ServiceKey, ServiceTopology};

/// The node of the synthetic topologies.
pub fn node() -> Arc<NodeInfo> {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec!["10.0.0.1".parse().unwrap()];
    node.pod_cidrs = vec!["10.244.1.0/24".parse().unwrap()];
    Arc::new(node)
}

/// The context of the synthetic topologies: detect-local ClusterCIDR.
pub fn context() -> BackendContext {
    let mut ctx = BackendContext::for_tests(IpFamily::V4, node());
    ctx.local_detector = LocalTrafficDetector::Cidr("10.244.0.0/16".parse().unwrap());
    ctx
}

fn service(i: usize) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {
            "clusterIP": ip.to_string(),
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        }
    }))
    .unwrap()
}

/// The slice of service `i`; `generation` shifts its endpoint addresses.
pub fn slice(i: usize, endpoints: usize, generation: u32) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| {
            let n = (i * endpoints + e) as u32 + generation * 7919;
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + n % (1 << 16));
            serde_json::json!({
                "addresses": [ip.to_string()],
                "nodeName": if e % 3 == 0 { "node-a" } else { "node-b" },
                "conditions": {"ready": true}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("svc-{i}-1"),
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .unwrap()
}

/// `services` services with `endpoints` endpoints each.
pub fn topology(services: usize, endpoints: usize) -> ServiceTopology {
    let mut topo = ServiceTopology::new();
    for i in 0..services {
        let _ = topo.apply_service(&service(i));
        let _ = topo.apply_endpoint_slice(&slice(i, endpoints, 0));
    }
    topo
}

/// The view of `topology`.
pub fn view(topology: &ServiceTopology) -> NodeView {
    NodeView::build(topology, node(), IpFamily::V4)
}

/// The key of service `i`.
pub fn key(i: usize) -> ServiceKey {
    ServiceKey::new("bench", format!("svc-{i}"))
}
