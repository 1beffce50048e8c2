//! Shared test support: Kubernetes objects, views, echo servers.
// Test support: set-up failures should fail the test loudly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::BackendContext;
use proxy_core::{IpFamily, NodeInfo, NodeView, ServiceTopology};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

pub const NODE: &str = "test-node";

/// A NodePort Service `ns/name` with one port `p` (`protocol`, `port`,
/// `node_port`), ClusterIP `cluster_ip`, plus `extra` merged into its spec.
pub fn service(
    name: &str,
    cluster_ip: &str,
    protocol: &str,
    port: u16,
    node_port: Option<u16>,
    extra: serde_json::Value,
) -> Service {
    let mut spec = json!({
        "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ports": [{"name": "p", "protocol": protocol, "port": port, "nodePort": node_port}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// An EndpointSlice for `ns/name` with ready endpoints `ips` on `port`
/// (all on this node).
pub fn slice(name: &str, protocol: &str, port: u16, ips: &[IpAddr]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": NODE}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "protocol": protocol, "port": port}],
    }))
    .unwrap()
}

pub fn node() -> Arc<NodeInfo> {
    Arc::new(NodeInfo::named(NODE))
}

pub fn context() -> BackendContext {
    BackendContext::for_tests(IpFamily::V4, node())
}

pub fn view(topology: &ServiceTopology) -> NodeView {
    NodeView::build(topology, node(), IpFamily::V4)
}

/// Applies objects, asserting they are valid.
pub fn topology(services: &[Service], slices: &[EndpointSlice]) -> ServiceTopology {
    let mut t = ServiceTopology::new();
    for s in services {
        let applied = t.apply_service(s);
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    }
    for s in slices {
        let applied = t.apply_endpoint_slice(s);
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    }
    t
}

/// A free port on 127.0.0.1 for both TCP and UDP (best effort).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// Echo servers that first say their name, one per address, all on one port.
pub struct Echoes {
    pub port: u16,
    pub addrs: Vec<IpAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Echoes {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Echoes {
    /// TCP and UDP echo servers on `ips`, named by their address.
    pub async fn start(ips: &[&str]) -> Echoes {
        loop {
            let port = free_port();
            let mut tasks = Vec::new();
            let mut ok = true;
            for ip in ips {
                let addr = SocketAddr::new(ip.parse().unwrap(), port);
                match (TcpListener::bind(addr).await, UdpSocket::bind(addr).await) {
                    (Ok(tcp), Ok(udp)) => {
                        tasks.push(tokio::spawn(tcp_echo(tcp, ip.to_string())));
                        tasks.push(tokio::spawn(udp_echo(udp, ip.to_string())));
                    }
                    _ => ok = false,
                }
            }
            if ok {
                return Echoes {
                    port,
                    addrs: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                    tasks,
                };
            }
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

async fn tcp_echo(listener: TcpListener, name: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            stream.write_all(format!("{name}\n").as_bytes()).await.ok();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn udp_echo(socket: UdpSocket, name: String) {
    let mut buf = [0u8; 2048];
    while let Ok((_, peer)) = socket.recv_from(&mut buf).await {
        socket.send_to(name.as_bytes(), peer).await.ok();
    }
}
