//! The Kubernetes objects the embedding examples feed in: one NodePort
//! Service `shop/NAME` and its EndpointSlice of ready endpoints on one node.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

/// Service `shop/name`: NodePort, ClusterIP `cluster_ip`, port `http` 80/TCP
/// on node port `node_port`.
pub fn node_port_service(
    name: &str,
    cluster_ip: &str,
    node_port: u16,
) -> serde_json::Result<Service> {
    serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": name},
        "spec": {
            "type": "NodePort",
            "clusterIP": cluster_ip,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": node_port}],
        },
    }))
}

/// EndpointSlice `shop/SERVICE-1` of Service `shop/service`: the ready
/// endpoints `ips` on node `node`, port `http` `port`/TCP.
pub fn ready_slice(
    service: &str,
    node: &str,
    ips: &[&str],
    port: u16,
) -> serde_json::Result<EndpointSlice> {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "namespace": "shop",
            "name": format!("{service}-1"),
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": port}],
    }))
}
