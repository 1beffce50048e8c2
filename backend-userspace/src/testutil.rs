//! Builders for unit tests.

use std::net::IpAddr;
use std::sync::Arc;

use proxy_core::model::{SessionAffinity, TrafficPolicy};
use proxy_core::{Endpoint, IpFamily, Protocol, ServicePort, ServicePortName, ServicePortView};

pub fn port(cluster_ip: &str, node_port: Option<u16>) -> ServicePort {
    let ip: IpAddr = cluster_ip.parse().unwrap();
    ServicePort {
        name: ServicePortName::new("ns", "svc", "http", Protocol::Tcp),
        family: IpFamily::of(&ip),
        cluster_ip: ip,
        port: 80,
        protocol: Protocol::Tcp,
        node_port,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        session_affinity: None,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_traffic_policy: TrafficPolicy::Cluster,
        health_check_node_port: None,
    }
}

pub fn with_affinity(mut port: ServicePort, seconds: u32) -> ServicePort {
    port.session_affinity = Some(SessionAffinity {
        timeout_seconds: seconds,
    });
    port
}

pub fn with_external_local(mut port: ServicePort) -> ServicePort {
    port.external_traffic_policy = TrafficPolicy::Local;
    port
}

pub fn endpoint(ip: &str, local: bool) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        is_local: local,
        node_name: Some(Arc::from(if local { "node" } else { "other" })),
        zone: None,
        hints: None,
    }
}

pub fn view(port: ServicePort, endpoints: &[Endpoint]) -> Arc<ServicePortView> {
    Arc::new(ServicePortView::decide(
        Arc::new(port),
        endpoints,
        "node",
        "",
    ))
}
