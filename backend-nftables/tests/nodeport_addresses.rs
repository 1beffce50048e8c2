//! `nodePortAddresses` in nftables mode, on the fake dataplane: a node port
//! is served on a **local** address inside the configured networks
//! (upstream's `GetNodeIPs` over the host's interface addresses; iptables
//! mode's `-d <net> -m addrtype --dst-type LOCAL`), whatever the Node
//! object lists. Each case checks the rendered rules and set (golden) and
//! traces packets with the node's local addresses given explicitly,
//! including one the Node's status does not list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use backend_nftables::fake::{FakeHarness, Tracer, lock};
use proxy_core::backend::BackendContext;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::conformance::{Harness, Origin, Outcome, Packet, Scenario, load_scenarios};
use proxy_core::{ChangeSet, IpFamily, NodeInfo, Protocol, ProxyMode};

/// The scenario's NodePort service: `web`, node port 30080, one endpoint
/// on another node.
fn scenario() -> Scenario {
    load_scenarios()
        .into_iter()
        .find(|s| s.name() == "nodeport-addresses")
        .unwrap()
}

const NODE_PORT: u16 = 30080;

fn endpoint() -> SocketAddr {
    "10.244.2.10:8080".parse().unwrap()
}

/// The context of nftables mode with `nodePortAddresses: list` (`None`:
/// unset, i.e. upstream's nftables default `["primary"]`) on `node`.
fn context(list: Option<&[&str]>, node: NodeInfo) -> BackendContext {
    let mut config = KubeProxyConfiguration::clone(scenario().config());
    config.mode = Some(ProxyMode::Nftables);
    config.node_port_addresses = list.map(|l| l.iter().map(|s| s.to_string()).collect());
    BackendContext::new(Arc::new(config), node.shared(), IpFamily::V4).unwrap()
}

/// A backend for `ctx` on a fresh fake, fully synced to the scenario.
async fn synced(ctx: &BackendContext) -> FakeHarness {
    let mut harness = FakeHarness::new(ctx);
    harness
        .backend()
        .sync(scenario().view(), &ChangeSet::full())
        .await
        .unwrap();
    harness
}

/// The node-port part of the dump: the `nodeport-ips` set with its
/// elements, and every rule selecting node-port destinations.
fn node_port_golden(harness: &FakeHarness) -> Vec<String> {
    let dump = lock(harness.fake()).dump(IpFamily::V4);
    let mut out = Vec::new();
    let mut in_set = false;
    for line in dump.lines() {
        if !line.starts_with("  element ") {
            in_set = line.starts_with("add set ") && line.contains(" nodeport-ips ");
        }
        let rule = line.contains("vmap @service-nodeports")
            || line.contains("vmap @no-endpoint-nodeports");
        if (in_set && (line.starts_with("add set ") || line.starts_with("  element "))) || rule {
            out.push(line.trim().to_string());
        }
    }
    out
}

/// What a packet from an external client to `destination:30080` becomes,
/// on a node whose local addresses are `local`.
fn send(harness: &FakeHarness, local: &[&str], destination: &str) -> Outcome {
    let fake = lock(harness.fake());
    let table = fake.table(IpFamily::V4).unwrap();
    let local: Vec<IpAddr> = local.iter().map(|a| a.parse().unwrap()).collect();
    Tracer::new(table, IpFamily::V4, local).trace(&Packet {
        origin: Origin::External,
        source: "203.0.113.10".parse().unwrap(),
        protocol: Protocol::Tcp,
        destination: destination.parse().unwrap(),
        port: NODE_PORT,
    })
}

fn forwarded() -> Outcome {
    Outcome::Forwarded {
        endpoints: [endpoint()].into(),
        masqueraded: true,
    }
}

fn node_with(addresses: &[&str]) -> NodeInfo {
    NodeInfo {
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        ..NodeInfo::named("node-a")
    }
}

/// "All addresses" (`node_port_cidrs == None`): an empty list outside
/// nftables mode; in nftables mode an empty list means the default
/// `["primary"]`, and all is `0.0.0.0/0` (or `all`).
#[tokio::test]
async fn all_addresses_serve_every_local_address_but_loopback() {
    let ctx = context(Some(&["0.0.0.0/0"]), node_with(&["10.0.0.1"]));
    assert_eq!(ctx.node_port_cidrs, None);
    let harness = synced(&ctx).await;
    assert_eq!(
        node_port_golden(&harness),
        [
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    let local = ["10.0.0.1", "192.168.5.5"];
    assert_eq!(send(&harness, &local, "10.0.0.1"), forwarded());
    assert_eq!(send(&harness, &local, "192.168.5.5"), forwarded());
    assert_eq!(send(&harness, &local, "10.0.0.2"), Outcome::NotMatched);
    assert_eq!(send(&harness, &local, "127.0.0.1"), Outcome::NotMatched);
}

#[tokio::test]
async fn cidr_serves_the_local_addresses_inside_it() {
    let harness = synced(&context(Some(&["10.0.0.0/24"]), node_with(&["10.0.0.1"]))).await;
    assert_eq!(
        node_port_golden(&harness),
        [
            "add set ip kube-proxy nodeport-ips { type ipv4_addr ; flags interval ; comment \"Networks whose local IPs accept NodePort traffic\" ; }",
            "element 10.0.0.0/24",
            "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
            "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    let local = ["10.0.0.1", "10.0.0.5", "192.168.5.5"];
    assert_eq!(send(&harness, &local, "10.0.0.1"), forwarded());
    // A second interface address in the network, not in the Node's status.
    assert_eq!(send(&harness, &local, "10.0.0.5"), forwarded());
    // Local, but outside the network.
    assert_eq!(send(&harness, &local, "192.168.5.5"), Outcome::NotMatched);
    // In the network, but another host's address.
    assert_eq!(send(&harness, &local, "10.0.0.2"), Outcome::NotMatched);
}

#[tokio::test]
async fn primary_serves_only_the_node_primary_ip() {
    // Unset: nftables mode's default `["primary"]`.
    let harness = synced(&context(None, node_with(&["10.0.0.1", "10.0.0.9"]))).await;
    assert_eq!(
        node_port_golden(&harness),
        [
            "add set ip kube-proxy nodeport-ips { type ipv4_addr ; flags interval ; comment \"Networks whose local IPs accept NodePort traffic\" ; }",
            "element 10.0.0.1/32",
            "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
            "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    let local = ["10.0.0.1", "10.0.0.9"];
    assert_eq!(send(&harness, &local, "10.0.0.1"), forwarded());
    assert_eq!(send(&harness, &local, "10.0.0.9"), Outcome::NotMatched);
}

#[tokio::test]
async fn primary_inside_a_cidr_is_merged_into_it() {
    // The kernel rejects overlapping intervals; the fake checks it too.
    let harness = synced(&context(
        Some(&["primary", "10.0.0.0/24"]),
        node_with(&["10.0.0.1"]),
    ))
    .await;
    let golden = node_port_golden(&harness);
    let elements: Vec<&String> = golden.iter().filter(|l| l.starts_with("element")).collect();
    assert_eq!(elements, ["element 10.0.0.0/24"]);
}

/// The bug this layout fixes: the Node object is unknown (`--manifests`
/// without a Node) or does not list the address, yet the address is local
/// and inside the configured network, so it serves node ports.
#[tokio::test]
async fn cidr_serves_a_local_address_the_node_object_does_not_list() {
    let harness = synced(&context(
        Some(&["192.168.5.0/24"]),
        NodeInfo::named("node-a"),
    ))
    .await;
    assert_eq!(
        node_port_golden(&harness),
        [
            "add set ip kube-proxy nodeport-ips { type ipv4_addr ; flags interval ; comment \"Networks whose local IPs accept NodePort traffic\" ; }",
            "element 192.168.5.0/24",
            "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
            "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    let local = ["192.168.5.5"];
    assert_eq!(send(&harness, &local, "192.168.5.5"), forwarded());
    assert_eq!(send(&harness, &local, "192.168.5.6"), Outcome::NotMatched);
}
