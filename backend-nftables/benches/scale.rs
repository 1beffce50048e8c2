//! Scale benchmark of nftables mode (run as root; everything happens in
//! throw-away network namespaces):
//!
//! `cargo bench -p backend-nftables --bench scale [-- --quick]`
//!
//! - cold start: 1k, 10k, 30k services × 2 and × 10 endpoints;
//! - one service added, one endpoint changed, at 30k × 2;
//! - first-packet latency (TCP connect from a client namespace through a
//!   ClusterIP) at 1k, 10k, 30k services, against a direct connection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_nftables::NftablesBackend;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::{BackendContext, LocalTrafficDetector};
use proxy_core::conformance::netns::{Netns, check_privileges};
use proxy_core::{
    Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServicePortName, ServiceTopology,
};
use serde_json::json;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const POD_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(10, 244, 1, 11)];

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

fn endpoint_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200 + (j >> 16) as u8, (j >> 8) as u8, j as u8)
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i:05}"), "namespace": "bench"},
        "spec": {"clusterIP": cluster_ip(i).to_string(), "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap()
}

fn slice(i: usize, ips: &[Ipv4Addr]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "nodeName": "node-b", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i:05}-1"), "namespace": "bench", "labels": {"kubernetes.io/service-name": format!("svc{i:05}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

/// `services` services with `eps` endpoints each; the last one points at
/// the two real pod IPs.
fn topology(services: usize, eps: usize) -> ServiceTopology {
    let mut topo = ServiceTopology::new();
    for i in 0..services {
        let _ = topo.apply_service(&service(i));
        let ips: Vec<Ipv4Addr> = if i + 1 == services {
            POD_IPS.to_vec()
        } else {
            (0..eps).map(|k| endpoint_ip(i * eps + k)).collect()
        };
        let _ = topo.apply_endpoint_slice(&slice(i, &ips));
    }
    topo
}

fn node() -> Arc<NodeInfo> {
    let mut n = NodeInfo::named("node-a");
    n.addresses = vec![IpAddr::V4(NODE_IP)];
    n.shared()
}

fn context() -> BackendContext {
    let mut ctx = BackendContext::for_tests(IpFamily::V4, node());
    ctx.local_detector = LocalTrafficDetector::Cidr("10.244.0.0/16".parse().unwrap());
    ctx.node_port_cidrs = Some(vec!["10.1.0.1/32".parse().unwrap()]);
    ctx
}

fn ip(ns: &Netns, args: &[&str]) {
    let ok = ns.command("ip").args(args).status().unwrap();
    assert!(ok.success(), "ip {args:?} failed");
}

/// node ⟷ client (10.1.0.0/24) and node ⟷ pod (10.244.1.0/24).
struct Lab {
    node: Netns,
    client: Netns,
    pod: Netns,
}

impl Lab {
    fn new() -> Lab {
        let (node, client, pod) = (
            Netns::new().unwrap(),
            Netns::new().unwrap(),
            Netns::new().unwrap(),
        );
        let client_path = client.path().display().to_string();
        let pod_path = pod.path().display().to_string();
        ip(&node, &["link", "set", "lo", "up"]);
        ip(
            &node,
            &["link", "add", "c0", "type", "veth", "peer", "name", "c1"],
        );
        ip(&node, &["link", "set", "c1", "netns", &client_path]);
        ip(
            &node,
            &["link", "add", "p0", "type", "veth", "peer", "name", "p1"],
        );
        ip(&node, &["link", "set", "p1", "netns", &pod_path]);
        ip(&node, &["addr", "add", "10.1.0.1/24", "dev", "c0"]);
        ip(&node, &["addr", "add", "10.244.1.1/24", "dev", "p0"]);
        ip(&node, &["link", "set", "c0", "up"]);
        ip(&node, &["link", "set", "p0", "up"]);
        node.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .unwrap()
            .unwrap();
        for (ns, dev, addrs, gw) in [
            (&client, "c1", vec!["10.1.0.2/24"], "10.1.0.1"),
            (
                &pod,
                "p1",
                vec!["10.244.1.10/24", "10.244.1.11/24"],
                "10.244.1.1",
            ),
        ] {
            ip(ns, &["link", "set", "lo", "up"]);
            for a in addrs {
                ip(ns, &["addr", "add", a, "dev", dev]);
            }
            ip(ns, &["link", "set", dev, "up"]);
            ip(ns, &["route", "add", "default", "via", gw]);
        }
        let listener = pod
            .run(|| TcpListener::bind("0.0.0.0:8080"))
            .unwrap()
            .unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        Lab { node, client, pod }
    }

    /// `n` TCP connects to `to` from the client; (p50, p90) in µs.
    fn connect_latency(&self, to: SocketAddr, n: usize) -> (f64, f64) {
        let mut samples = self
            .client
            .run(move || {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let start = Instant::now();
                    let s =
                        TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
                    v.push(start.elapsed().as_secs_f64() * 1e6);
                    drop(s);
                }
                v
            })
            .unwrap();
        samples.sort_by(|a, b| a.total_cmp(b));
        (samples[n / 2], samples[n * 9 / 10])
    }
}

/// Runs `f` with `backend` on a current-thread runtime inside `ns`.
fn in_ns<T: Send>(ns: &Netns, f: impl AsyncFnOnce() -> T + Send) -> T {
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if let Err(why) = check_privileges() {
        eprintln!("skipping the nftables scale benchmark: {why}");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 30_000]
    };
    let node = node();
    let mut rows: Vec<(String, String, &str)> = Vec::new();

    // Cold start.
    for &eps in &[2usize, 10] {
        for &n in sizes {
            let topo = topology(n, eps);
            let view = NodeView::build(&topo, node.clone(), IpFamily::V4);
            let ns = Netns::new().unwrap();
            let (elapsed, stats) = in_ns(&ns, async || {
                let mut b = NftablesBackend::new(&context()).unwrap();
                let start = Instant::now();
                let stats = b.sync(&view, &ChangeSet::full()).await.unwrap();
                (start.elapsed(), stats)
            });
            let target = match (n, eps) {
                (10_000, 2) => "≤ 5 s",
                (30_000, 2) => "≤ 20 s",
                _ => "",
            };
            rows.push((
                format!("cold start {n} × {eps} ({} objects)", stats.objects_written),
                secs(elapsed),
                target,
            ));
            println!(
                "{:<48} {:>12} {}",
                rows.last().unwrap().0,
                rows.last().unwrap().1,
                target
            );
        }
    }

    // Partial syncs at the largest size, and first-packet latency.
    for &n in sizes {
        let lab = Lab::new();
        let mut topo = topology(n, 2);
        let mut view = NodeView::build(&topo, node.clone(), IpFamily::V4);
        let timings = in_ns(&lab.node, async || {
            let mut b = NftablesBackend::new(&context()).unwrap();
            b.sync(&view, &ChangeSet::full()).await.unwrap();
            let mut out = Vec::new();
            if n == *sizes.last().unwrap() {
                // One service added.
                let _ = topo.apply_service(&service(n));
                let _ = topo.apply_endpoint_slice(&slice(
                    n,
                    &[endpoint_ip(9_000_000 % 300_000), endpoint_ip(1)],
                ));
                let key = proxy_core::ServiceKey::new("bench", format!("svc{n:05}"));
                view.update_service(&topo, &key);
                let port = ServicePortName::new(
                    "bench",
                    &format!("svc{n:05}"),
                    "http",
                    proxy_core::Protocol::Tcp,
                );
                let start = Instant::now();
                let stats = b.sync(&view, &ChangeSet::partial([port])).await.unwrap();
                out.push((
                    format!(
                        "one service added at {n} ({} objects)",
                        stats.objects_written
                    ),
                    start.elapsed(),
                ));
                // One endpoint changed.
                let _ = topo.apply_endpoint_slice(&slice(
                    7,
                    &[endpoint_ip(14), Ipv4Addr::new(10, 250, 0, 1)],
                ));
                let key = proxy_core::ServiceKey::new("bench", "svc00007");
                view.update_service(&topo, &key);
                let port =
                    ServicePortName::new("bench", "svc00007", "http", proxy_core::Protocol::Tcp);
                let start = Instant::now();
                let stats = b.sync(&view, &ChangeSet::partial([port])).await.unwrap();
                out.push((
                    format!(
                        "one endpoint changed at {n} ({} objects)",
                        stats.objects_written
                    ),
                    start.elapsed(),
                ));
                // No-op.
                let start = Instant::now();
                let stats = b.sync(&view, &ChangeSet::default()).await.unwrap();
                out.push((
                    format!("no-op sync at {n} ({} objects)", stats.objects_written),
                    start.elapsed(),
                ));
            }
            out
        });
        for (what, d) in timings {
            let target = if what.starts_with("one") {
                "≤ 50 ms"
            } else {
                ""
            };
            println!("{what:<48} {:>12} {target}", ms(d));
            rows.push((what, ms(d), target));
        }
        let vip = SocketAddr::new(IpAddr::V4(cluster_ip(n - 1)), 80);
        let direct = SocketAddr::new(IpAddr::V4(POD_IPS[0]), 8080);
        // Warm up, then interleave so both see the same machine load.
        let _ = lab.connect_latency(vip, 50);
        let _ = lab.connect_latency(direct, 50);
        let (vp50, vp90) = lab.connect_latency(vip, 1000);
        let (dp50, dp90) = lab.connect_latency(direct, 1000);
        let what = format!("first packet at {n}: ClusterIP / direct p50, p90");
        let value = format!("{vp50:.0}/{dp50:.0} µs, {vp90:.0}/{dp90:.0} µs");
        println!("{what:<48} {value:>12} p50 within 10 µs of direct");
        rows.push((what, value, "p50 within 10 µs"));
        drop(lab.pod);
    }
}
