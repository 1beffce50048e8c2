//! A dual-stack node in the guest: one [`IpvsBackend`] per family in one
//! namespace, sharing `kube-ipvs0`. Each binds and unbinds only its own
//! family's addresses, keeps its own sets (`KUBE-…` of family `inet`,
//! `KUBE-6-…` of family `inet6`) and rules (iptables, ip6tables), and
//! carries real TCP connections over its family.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use backend_ipvs::netlink::IpvsNetlink;
use backend_ipvs::{IpvsBackend, SystemHost};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::BackendContext;
use proxy_core::conformance::netns::Netns;
use proxy_core::exec::SystemExecutor;
use proxy_core::{Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServiceTopology};

use crate::guest;

const VIP4: &str = "10.96.0.10";
const VIP6: &str = "fd00:96::10";
/// The endpoint: the node itself (a server on the node's loopback-free
/// addresses), so no pod namespace is needed for either family.
const NODE4: &str = "10.0.0.1";
const NODE6: &str = "fd00::1";

fn node() -> Arc<NodeInfo> {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec![NODE4.parse().unwrap(), NODE6.parse().unwrap()];
    Arc::new(node)
}

fn backend(family: IpFamily) -> IpvsBackend {
    IpvsBackend::new(
        &BackendContext::for_tests(family, node()),
        Arc::new(SystemExecutor::default()),
        Arc::new(SystemHost::default()),
    )
    .unwrap()
}

fn topology(with_v6: bool) -> ServiceTopology {
    let (families, ips) = if with_v6 {
        (vec!["IPv4", "IPv6"], vec![VIP4, VIP6])
    } else {
        (vec!["IPv4"], vec![VIP4])
    };
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "t"},
        "spec": {"clusterIP": VIP4, "clusterIPs": ips, "ipFamilies": families,
                 "ipFamilyPolicy": "PreferDualStack",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }))
    .unwrap();
    let mut topology = ServiceTopology::new();
    assert!(topology.apply_service(&service).errors.is_empty());
    for (family, ip) in [("IPv4", NODE4), ("IPv6", NODE6)] {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("web-{}", family.to_lowercase()), "namespace": "t",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": family,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": "node-a", "conditions": {"ready": true}}]
        }))
        .unwrap();
        let applied = topology.apply_endpoint_slice(&slice);
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    }
    topology
}

fn bound(ns: &Netns) -> BTreeSet<IpAddr> {
    let json = guest::run(ns, "ip", &["-j", "addr", "show", "dev", "kube-ipvs0"]);
    let links: serde_json::Value = serde_json::from_str(&json).unwrap();
    links[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .filter(|ip: &IpAddr| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn each_family_keeps_its_own_addresses_sets_and_rules_on_a_shared_kube_ipvs0() {
    guest::require("each_family_keeps_its_own_addresses_sets_and_rules_on_a_shared_kube_ipvs0");
    let ns = Netns::new().unwrap();
    guest::ip_batch(
        &ns,
        &format!(
            "link set lo up\nlink add eth0 type dummy\nlink set eth0 up\n\
             addr add {NODE4}/24 dev eth0\naddr add {NODE6}/64 dev eth0 nodad\n"
        ),
    );
    // an endpoint on the node for each family
    let listeners: Vec<TcpListener> = [NODE4, NODE6]
        .iter()
        .map(|a| {
            let addr = SocketAddr::new(ip(a), 8080);
            ns.run(move || TcpListener::bind(addr)).unwrap().unwrap()
        })
        .collect();
    for listener in listeners {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let local = stream
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let _ = std::io::Write::write_all(&mut stream, format!("{local} x\n").as_bytes());
            }
        });
    }

    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut v4 = backend(IpFamily::V4);
        let mut v6 = backend(IpFamily::V6);
        let both = topology(true);
        let view = |t: &ServiceTopology, f| NodeView::build(t, node(), f);
        rt.block_on(v4.sync(&view(&both, IpFamily::V4), &ChangeSet::full()))
            .unwrap();
        rt.block_on(v6.sync(&view(&both, IpFamily::V6), &ChangeSet::full()))
            .unwrap();
        // a full sync of one family leaves the other's address alone
        rt.block_on(v4.sync(&view(&both, IpFamily::V4), &ChangeSet::full()))
            .unwrap();
        (rt, v4, v6)
    })
    .map(|(rt, mut v4, mut v6)| {
        assert_eq!(bound(&ns), BTreeSet::from([ip(VIP4), ip(VIP6)]));
        let sets = guest::run(&ns, "ipset", &["list", "-n"]);
        for set in [
            "KUBE-CLUSTER-IP",
            "KUBE-6-CLUSTER-IP",
            "KUBE-6-HEALTH-CHECK-NODE-PORT",
        ] {
            assert!(sets.lines().any(|l| l == set), "{set} in {sets}");
        }
        let header = guest::run(&ns, "ipset", &["list", "-t", "KUBE-6-CLUSTER-IP"]);
        assert!(header.contains("family inet6"), "{header}");
        let members = guest::run(&ns, "ipset", &["list", "KUBE-6-CLUSTER-IP"]);
        assert!(members.contains("fd00:96::10,tcp:80"), "{members}");
        // whichever variant the iptables layer picked
        let save = |tool: &str| {
            ["legacy", "nft"]
                .map(|v| guest::run(&ns, &format!("{tool}-{v}-save"), &["-t", "nat"]))
                .concat()
        };
        let rules6 = save("ip6tables");
        assert!(
            rules6.contains("-A KUBE-SERVICES -s ::1/128 -j RETURN"),
            "{rules6}"
        );
        assert!(rules6.contains("KUBE-6-CLUSTER-IP"), "{rules6}");
        let rules4 = save("iptables");
        assert!(rules4.contains("KUBE-CLUSTER-IP"), "{rules4}");
        assert!(!rules4.contains("KUBE-6-"), "{rules4}");
        // the jumps once each, though IPv4 had two full syncs
        let jump = "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
        assert_eq!(rules4.matches(jump).count(), 1, "{rules4}");
        assert_eq!(rules6.matches(jump).count(), 1, "{rules6}");
        let services = ns
            .run(|| IpvsNetlink::open().unwrap().services().unwrap())
            .unwrap();
        let keys: BTreeSet<String> = services.iter().map(|s| s.key.to_string()).collect();
        assert!(keys.iter().any(|k| k.contains(VIP4)), "{keys:?}");
        assert!(keys.iter().any(|k| k.contains(VIP6)), "{keys:?}");

        // real connections over each family, through IPVS to the endpoint
        for (vip, endpoint) in [(VIP4, NODE4), (VIP6, NODE6)] {
            let to = SocketAddr::new(ip(vip), 80);
            let reply = ns
                .run(move || -> std::io::Result<String> {
                    let mut stream = std::net::TcpStream::connect_timeout(
                        &to,
                        std::time::Duration::from_secs(2),
                    )?;
                    let mut reply = String::new();
                    std::io::Read::read_to_string(&mut stream, &mut reply)?;
                    Ok(reply)
                })
                .unwrap()
                .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
            let want = SocketAddr::new(ip(endpoint), 8080).to_string();
            assert!(
                reply.starts_with(&want),
                "{to} answered {reply:?}, want {want}"
            );
        }

        // the IPv6 ClusterIP goes: only its address is unbound
        let v4_only = topology(false);
        ns.run(|| {
            rt.block_on(v6.sync(
                &NodeView::build(&v4_only, node(), IpFamily::V6),
                &ChangeSet::full(),
            ))
            .unwrap();
            rt.block_on(v4.sync(
                &NodeView::build(&v4_only, node(), IpFamily::V4),
                &ChangeSet::full(),
            ))
            .unwrap();
        })
        .unwrap();
        assert_eq!(bound(&ns), BTreeSet::from([ip(VIP4)]));
    })
    .unwrap();
}
