//! Redirect rules in a real kernel, inside a fresh network namespace: the
//! host's own traffic to a ClusterIP (the output hook, redirected to
//! loopback) for TCP and UDP, element updates on a partial sync, and
//! `cleanup()` / `cleanup_leftovers()` deleting the table. The conformance
//! kernel tier covers pods and external clients.
//!
//! Needs root; skips with the reason otherwise, and fails instead when
//! `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use backend_userspace::{Options, RedirectMode, UserspaceBackend, UserspaceFactory};
use common::{Echoes, context, service, slice, topology, view};
use proxy_core::backend::BackendFactory;
use proxy_core::conformance::netns::{Netns, privileged_or_skip};
use proxy_core::{Backend, ChangeSet};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, UdpSocket};

/// The node's address: the source of the host's own connections.
const NODE_IP: &str = "10.0.0.1";

fn ip(ns: &Netns, args: &[&str]) {
    let status = ns.command("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?} failed");
}

fn nft_list(ns: &Netns) -> String {
    let out = ns.command("nft").args(["list", "tables"]).output().unwrap();
    assert!(out.status.success());
    let tables = String::from_utf8_lossy(&out.stdout).to_string();
    if !tables.contains("kube-proxy-userspace") {
        return tables;
    }
    let out = ns
        .command("nft")
        .args(["list", "table", "ip", "kube-proxy-userspace"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A node namespace: `lo` up, `eth0` (one end of a veth pair: this kernel
/// may have no `dummy`) with the node address, and a
/// route for the ClusterIP range (without one, `connect` fails before the
/// output hook runs).
fn node() -> Netns {
    let ns = Netns::new().unwrap();
    ip(&ns, &["link", "set", "lo", "up"]);
    ip(
        &ns,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ],
    );
    ip(&ns, &["link", "set", "eth1", "up"]);
    ip(
        &ns,
        &["addr", "add", &format!("{NODE_IP}/32"), "dev", "eth0"],
    );
    ip(&ns, &["link", "set", "eth0", "up"]);
    ip(&ns, &["route", "add", "10.96.0.0/16", "dev", "eth0"]);
    ns
}

async fn tcp_name(to: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(NODE_IP.parse().unwrap(), 0))
        .unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(3), socket.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await
        .unwrap();
    line.trim().to_string()
}

async fn udp_name(to: SocketAddr) -> String {
    let socket = UdpSocket::bind((NODE_IP, 0)).await.unwrap();
    // Connected: a reply from any address but `to` is not received.
    socket.connect(to).await.unwrap();
    socket.send(b"who").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("no UDP reply from the ClusterIP")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn host_traffic_to_cluster_ips_is_redirected_and_cleanup_deletes_the_table() {
    if !privileged_or_skip("backend-userspace redirect_kernel") {
        return;
    }
    let ns = node();
    let listed = ns
        .block_on(|| async {
            let echoes = Echoes::start(&["127.0.0.2"]).await;
            let services = [
                service("web", "10.96.0.10", "TCP", 80, None, json!({})),
                service("dns", "10.96.0.53", "UDP", 53, None, json!({})),
            ];
            let slices = [
                slice("web", "TCP", echoes.port, &echoes.addrs),
                slice("dns", "UDP", echoes.port, &echoes.addrs),
            ];
            let ctx = context();
            let options = Options::from_context(&ctx).with_redirect(RedirectMode::On);
            let mut backend = UserspaceBackend::with_options(&ctx, options);
            let both = view(&topology(&services, &slices));
            backend.sync(&both, &ChangeSet::full()).await.unwrap();
            let full = nft_list(&ns);

            assert_eq!(
                tcp_name("10.96.0.10:80".parse().unwrap()).await,
                "127.0.0.2"
            );
            assert_eq!(
                udp_name("10.96.0.53:53".parse().unwrap()).await,
                "127.0.0.2"
            );

            // A partial sync removing `web` deletes its element only.
            let only_dns = view(&topology(&services[1..], &slices[1..]));
            let changes = ChangeSet::partial(both.iter().map(|(name, _)| name.clone()));
            let stats = backend.sync(&only_dns, &changes).await.unwrap();
            assert!(stats.objects_written > 0);
            let partial = nft_list(&ns);
            assert_eq!(
                udp_name("10.96.0.53:53".parse().unwrap()).await,
                "127.0.0.2"
            );

            backend.cleanup().await.unwrap();
            let cleaned = nft_list(&ns);
            // Deleting what is not there is not an error.
            UserspaceFactory.cleanup_leftovers(&ctx).await.unwrap();
            (full, partial, cleaned)
        })
        .unwrap();
    let (full, partial, cleaned) = listed;
    assert!(full.contains("10.96.0.10 . tcp . 80 :"), "{full}");
    assert!(full.contains("10.96.0.53 . udp . 53 :"), "{full}");
    assert!(!partial.contains("10.96.0.10 . tcp . 80"), "{partial}");
    assert!(partial.contains("10.96.0.53 . udp . 53 :"), "{partial}");
    assert!(!cleaned.contains("kube-proxy-userspace"), "{cleaned}");
}
