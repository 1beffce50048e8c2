//! No API-valid object can make the kernel refuse a transaction: a
//! property test generates Services and EndpointSlices whose names are as
//! long as the API server allows (63-character namespaces, Service and
//! port names, 253-character slice names), with many ports, with and
//! without endpoints, node ports, external and load-balancer IPs, source
//! ranges, session affinity and both traffic policies, in both families;
//! and every kernel-facing backend of the binary (iptables, nftables,
//! userspace redirects) programs them with the real tools, in a network
//! namespace the test creates.
//!
//! Besides the tools' acceptance, every comment in the rendered rules is
//! checked against the dataplane's limit (iptables cuts longer ones
//! silently): 255 bytes for `xt_comment`, 128 for nft.
//!
//! Needs root, iptables and nftables; skips with the reason otherwise, and
//! fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use proxy_core::backend::BackendContext;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
use proxy_core::{ChangeSet, IpFamily, NodeInfo, NodeView, ProxyMode, ServiceTopology};

/// The node the objects are generated for.
const NODE: &str = "node-a";
/// Cases per run: each programs three backends in a fresh namespace.
const CASES: u32 = 32;

fn tools_present() -> Result<(), String> {
    check_tool("iptables-restore", &["--version"], "iptables")?;
    check_tool("nft", &["--version"], "nftables")
}

/// A DNS-1123 label of exactly `len` characters, unique by `tag` (its
/// first characters), filled from `seed`.
fn label(tag: &str, seed: &str, len: usize) -> String {
    let mut out = tag.to_string();
    for c in seed.chars().cycle().take(len.saturating_sub(tag.len())) {
        out.push(c);
    }
    out.truncate(len);
    // End with an alphanumeric character.
    if out.ends_with('-') {
        out.pop();
        out.push('z');
    }
    out
}

/// One generated Service port.
#[derive(Debug, Clone)]
struct GenPort {
    udp: bool,
    name_len: usize,
}

/// One generated Service and its slice.
#[derive(Debug, Clone)]
struct GenService {
    seed: String,
    long: bool,
    kind: u8,
    ports: Vec<GenPort>,
    endpoints: Vec<bool>,
    external_ips: bool,
    source_ranges: bool,
    affinity: bool,
    external_local: bool,
    internal_local: bool,
}

fn gen_service() -> impl Strategy<Value = GenService> {
    (
        "[a-z0-9-]{8,40}",
        prop::bool::weighted(0.8),
        0u8..3,
        prop::collection::vec(
            (any::<bool>(), prop_oneof![Just(63usize), 1usize..63])
                .prop_map(|(udp, name_len)| GenPort { udp, name_len }),
            1..6,
        ),
        prop::collection::vec(any::<bool>(), 0..4),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                seed,
                long,
                kind,
                ports,
                endpoints,
                (external_ips, source_ranges, affinity),
                (external_local, internal_local),
            )| GenService {
                seed,
                long,
                kind,
                ports,
                endpoints,
                external_ips,
                source_ranges,
                affinity,
                external_local,
                internal_local,
            },
        )
}

/// An address of `family` in a /16 (v4) or /64 (v6): `10.<net>.<a>.<b>`.
fn addr(family: IpFamily, net: u8, a: usize, b: usize) -> String {
    match family {
        IpFamily::V4 => format!("10.{net}.{a}.{}", b + 1),
        IpFamily::V6 => format!("fd00:{net:x}:ffff:ffff:ffff:ffff:{a:x}:{:x}", b + 1),
    }
}

/// The Service and EndpointSlice of `g`, the `i`th of the case.
fn objects(g: &GenService, i: usize, family: IpFamily) -> (Value, Value) {
    let (ns_len, name_len, slice_len) = if g.long { (63, 63, 253) } else { (10, 12, 20) };
    let namespace = label(&format!("n{i}-"), &g.seed, ns_len);
    let name = label(&format!("s{i}-"), &g.seed, name_len);
    // A subdomain: labels of at most 63 characters joined by dots.
    let slice_name = (0..4)
        .map(|k| label(&format!("e{i}{k}"), &g.seed, 63))
        .collect::<Vec<_>>()
        .join(".")
        .chars()
        .take(slice_len)
        .collect::<String>()
        .trim_end_matches(['.', '-'])
        .to_string();
    let kind = ["ClusterIP", "NodePort", "LoadBalancer"][usize::from(g.kind)];
    let port_names: Vec<String> = g
        .ports
        .iter()
        .enumerate()
        .map(|(k, p)| label(&format!("{k}p"), &g.seed, p.name_len))
        .collect();
    let ports: Vec<Value> = g
        .ports
        .iter()
        .zip(&port_names)
        .enumerate()
        .map(|(k, (p, port_name))| {
            let mut port = json!({
                "name": port_name,
                "port": 80 + k,
                "protocol": if p.udp { "UDP" } else { "TCP" },
                "targetPort": 8080 + k,
            });
            if kind != "ClusterIP" {
                port["nodePort"] = json!(30000 + i * 10 + k);
            }
            port
        })
        .collect();
    let mut spec = json!({
        "type": kind,
        "clusterIP": addr(family, 96, i, 0),
        "clusterIPs": [addr(family, 96, i, 0)],
        "ports": ports,
        "internalTrafficPolicy": if g.internal_local { "Local" } else { "Cluster" },
    });
    if kind != "ClusterIP" || g.external_ips {
        spec["externalTrafficPolicy"] = json!(if g.external_local { "Local" } else { "Cluster" });
    }
    if g.external_ips {
        spec["externalIPs"] = json!([addr(family, 97, i, 0), addr(family, 97, i, 1)]);
    }
    if g.affinity {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 86400}});
    }
    let mut status = json!({});
    if kind == "LoadBalancer" {
        if g.external_local {
            spec["healthCheckNodePort"] = json!(32000 + i);
        }
        if g.source_ranges {
            let prefix = if family == IpFamily::V4 { 24 } else { 64 };
            spec["loadBalancerSourceRanges"] = json!([
                format!("{}/{prefix}", addr(family, 99, i, 0)),
                format!("{}/{prefix}", addr(family, 99, i + 100, 0)),
            ]);
        }
        status = json!({"loadBalancer": {"ingress": [{"ip": addr(family, 98, i, 0)}]}});
    }
    let service = json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
        "status": status,
    });
    let endpoints: Vec<Value> = g
        .endpoints
        .iter()
        .enumerate()
        .map(|(k, local)| {
            json!({
                "addresses": [addr(family, 244, i, k)],
                "conditions": {"ready": true},
                "nodeName": if *local { NODE.to_string() } else { label("node-b", &g.seed, 63) },
            })
        })
        .collect();
    let slice_ports: Vec<Value> = g
        .ports
        .iter()
        .zip(&port_names)
        .enumerate()
        .map(|(k, (p, port_name))| {
            json!({
                "name": port_name,
                "port": 8080 + k,
                "protocol": if p.udp { "UDP" } else { "TCP" },
            })
        })
        .collect();
    let slice = json!({
        "metadata": {"namespace": namespace, "name": slice_name,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": if family == IpFamily::V4 { "IPv4" } else { "IPv6" },
        "ports": slice_ports,
        "endpoints": endpoints,
    });
    (service, slice)
}

/// The topology of `services`, which must all be valid.
fn topology(services: &[GenService], family: IpFamily) -> Result<ServiceTopology, TestCaseError> {
    let mut topology = ServiceTopology::new();
    for (i, g) in services.iter().enumerate() {
        let (svc, slice) = objects(g, i, family);
        let svc: Service = serde_json::from_value(svc).unwrap();
        let slice: EndpointSlice = serde_json::from_value(slice).unwrap();
        let applied = topology.apply_service(&svc);
        prop_assert!(applied.errors.is_empty(), "{:?}", applied.errors);
        let applied = topology.apply_endpoint_slice(&slice);
        prop_assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    }
    Ok(topology)
}

fn context(mode: ProxyMode, family: IpFamily) -> BackendContext {
    let yaml = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: {mode}\nclusterCIDR: 10.244.0.0/16,fd00:f4::/56\n"
    );
    let mut config = KubeProxyConfiguration::from_yaml(&yaml).unwrap();
    config.apply_defaults();
    config.validate().unwrap();
    let node = NodeInfo {
        addresses: vec!["10.0.0.1".parse().unwrap(), "fd00:1::1".parse().unwrap()],
        ..NodeInfo::named(NODE)
    };
    BackendContext::new(Arc::new(config), node.shared(), family).unwrap()
}

/// Every `comment "…"` (nft) or `--comment "…"` (iptables) in `text`.
fn comments(text: &str) -> Vec<&str> {
    text.split("comment \"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(c, _)| c))
        .collect()
}

/// Programs `view` with `mode`'s backend in a fresh namespace; checks its
/// comments against `comment_max`.
fn program(mode: ProxyMode, family: IpFamily, view: &NodeView) -> Result<(), String> {
    let comment_max = match mode {
        ProxyMode::Nftables => 128,
        _ => 255,
    };
    let ns = Netns::new().map_err(|e| format!("creating a namespace: {e}"))?;
    ns.block_on(|| async {
        let registry = kube_proxy::registry::registry();
        let factory = registry.get(mode).ok_or(format!("no {mode} backend"))?;
        let mut backend = factory
            .build(&context(mode, family))
            .map_err(|e| format!("building: {e}"))?;
        let text = backend.render(view).map_err(|e| format!("render: {e}"))?;
        if mode == ProxyMode::Userspace && !text.contains("kube-proxy-userspace") {
            return Err(format!(
                "the userspace backend writes no redirect rules:\n{text}"
            ));
        }
        for c in comments(&text) {
            if c.len() > comment_max || c.contains('\n') {
                return Err(format!("comment of {} bytes: {c:?}", c.len()));
            }
        }
        backend
            .sync(view, &ChangeSet::full())
            .await
            .map_err(|e| format!("{mode} {family} sync refused: {e}\n{text}"))?;
        backend.cleanup().await.map_err(|e| format!("cleanup: {e}"))
    })
    .map_err(|e| format!("entering the namespace: {e}"))?
}

#[test]
fn api_valid_objects_at_maximum_lengths_are_accepted_by_the_real_tools() {
    let test = "api_valid_objects_at_maximum_lengths_are_accepted_by_the_real_tools";
    if !privileged_or_skip_with(test, tools_present) {
        return;
    }
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(gen_service(), 1..5),
        prop::bool::weighted(0.7),
    );
    runner
        .run(&strategy, |(services, v4)| {
            let family = if v4 { IpFamily::V4 } else { IpFamily::V6 };
            let topology = topology(&services, family)?;
            let view = NodeView::build(&topology, NodeInfo::named(NODE).shared(), family);
            for mode in [
                ProxyMode::Iptables,
                ProxyMode::Nftables,
                ProxyMode::Userspace,
            ] {
                program(mode, family, &view).map_err(TestCaseError::fail)?;
            }
            Ok(())
        })
        .unwrap();
}
