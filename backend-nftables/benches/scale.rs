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
use std::time::{Duration, Instant};

use backend_nftables::NftablesBackend;
use proxy_core::conformance::netns::{Netns, check_privileges};
use proxy_core::{Backend, ChangeSet, IpFamily, NodeView, ServicePortName};

mod fixtures;
use fixtures::*;

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

/// One first-packet round: (p50, p90) via the ClusterIP, then direct.
type Round = [(f64, f64); 2];

/// Partial-sync measurements repeated this many times.
const REPEATS: usize = 9;
/// First-packet rounds (alternating via-service and direct) and connects per round.
const ROUNDS: usize = 9;
const PER_ROUND: usize = 400;

fn port_name(i: usize) -> ServicePortName {
    ServicePortName::new(
        "bench",
        &format!("svc{i:05}"),
        "http",
        proxy_core::Protocol::Tcp,
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
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
    println!("load average at start: {}", load_average());
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
                // One service added, REPEATS times (median and worst).
                let mut added = Vec::new();
                let mut objects = 0;
                for k in 0..REPEATS {
                    let i = n + k;
                    let _ = topo.apply_service(&service(i));
                    let _ = topo.apply_endpoint_slice(&slice(
                        i,
                        &[endpoint_ip(2 * i), endpoint_ip(2 * i + 1)],
                    ));
                    let key = proxy_core::ServiceKey::new("bench", format!("svc{i:05}"));
                    view.update_service(&topo, &key);
                    let start = Instant::now();
                    let stats = b
                        .sync(&view, &ChangeSet::partial([port_name(i)]))
                        .await
                        .unwrap();
                    added.push(start.elapsed());
                    objects = stats.objects_written;
                }
                out.push((
                    format!("one service added at {n} ({objects} objects)"),
                    added,
                ));
                // One endpoint changed, REPEATS times.
                let mut changed = Vec::new();
                for k in 0..REPEATS {
                    let i = 7 + k;
                    let _ = topo.apply_endpoint_slice(&slice(
                        i,
                        &[endpoint_ip(2 * i), Ipv4Addr::new(10, 250, 0, k as u8)],
                    ));
                    let key = proxy_core::ServiceKey::new("bench", format!("svc{i:05}"));
                    view.update_service(&topo, &key);
                    let start = Instant::now();
                    let stats = b
                        .sync(&view, &ChangeSet::partial([port_name(i)]))
                        .await
                        .unwrap();
                    changed.push(start.elapsed());
                    objects = stats.objects_written;
                }
                out.push((
                    format!("one endpoint changed at {n} ({objects} objects)"),
                    changed,
                ));
                // No-op.
                let start = Instant::now();
                let stats = b.sync(&view, &ChangeSet::default()).await.unwrap();
                out.push((
                    format!("no-op sync at {n} ({} objects)", stats.objects_written),
                    vec![start.elapsed()],
                ));
            }
            out
        });
        for (what, mut d) in timings {
            let target = if what.starts_with("one") {
                "≤ 50 ms"
            } else {
                ""
            };
            d.sort();
            let value = if d.len() > 1 {
                format!(
                    "{} (max {}, {} runs)",
                    ms(d[d.len() / 2]),
                    ms(d[d.len() - 1]),
                    d.len()
                )
            } else {
                ms(d[0])
            };
            println!("{what:<48} {value:>12} {target}");
            rows.push((what, value, target));
        }
        let vip = SocketAddr::new(IpAddr::V4(cluster_ip(n - 1)), 80);
        let direct = SocketAddr::new(IpAddr::V4(POD_IPS[0]), 8080);
        // Warm up, then alternate via-service and direct rounds from the
        // same client namespace, so both see the same machine load.
        let _ = lab.connect_latency(vip, 100);
        let _ = lab.connect_latency(direct, 100);
        let mut rounds: Vec<Round> = Vec::with_capacity(ROUNDS);
        for r in 0..ROUNDS {
            let (v, d) = if r % 2 == 0 {
                let v = lab.connect_latency(vip, PER_ROUND);
                (v, lab.connect_latency(direct, PER_ROUND))
            } else {
                let d = lab.connect_latency(direct, PER_ROUND);
                (lab.connect_latency(vip, PER_ROUND), d)
            };
            rounds.push([v, d]);
        }
        let median = |f: &dyn Fn(&Round) -> f64| {
            let mut x: Vec<f64> = rounds.iter().map(f).collect();
            x.sort_by(|a, b| a.total_cmp(b));
            x[x.len() / 2]
        };
        let (vp50, dp50) = (median(&|r| r[0].0), median(&|r| r[1].0));
        let (vp90, dp90) = (median(&|r| r[0].1), median(&|r| r[1].1));
        let delta = median(&|r| r[0].0 - r[1].0);
        let what = format!("first packet at {n}: ClusterIP / direct p50, p90");
        let value = format!(
            "{vp50:.0}/{dp50:.0} µs, {vp90:.0}/{dp90:.0} µs (p50 +{delta:.1} µs; median of {ROUNDS} rounds × {PER_ROUND})"
        );
        println!("{what:<48} {value:>12} p50 within 10 µs of direct");
        rows.push((what, value, "p50 within 10 µs"));
        drop(lab.pod);
    }
    println!("load average at end: {}", load_average());
}
