//! `backend_ipvs::netlink` against the guest's real IPVS: create, list,
//! change and delete virtual and real servers of every protocol and both
//! families, cross-checked with `ipvsadm -Ln`; then real connections
//! through a service made over netlink, counted by the kernel.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use backend_ipvs::netlink::{
    IpvsNetlink, IpvsProtocol, RealServer, ServiceFlags, ServiceKey, Timeouts, VirtualServer,
};
use proxy_core::conformance::netns::Netns;

use crate::guest::{self, Node};

/// `EEXIST`, `ESRCH`.
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;

fn key(address: &str, protocol: IpvsProtocol, port: u16) -> ServiceKey {
    ServiceKey {
        address: address.parse().unwrap(),
        protocol,
        port,
    }
}

fn ip(address: &str) -> IpAddr {
    address.parse().unwrap()
}

fn open_in(ns: &Netns) -> IpvsNetlink {
    ns.run(IpvsNetlink::open)
        .expect("thread in the namespace")
        .expect("the IPVS family resolves in the guest")
}

/// The kernel's services, sorted, with the kernel's `HASHED` flag removed.
fn listed(ipvs: &mut IpvsNetlink) -> Vec<VirtualServer> {
    let mut services = ipvs.services().expect("list services");
    for s in &mut services {
        s.flags = s.flags.settable();
    }
    services.sort_by_key(|s| s.key);
    services
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn netlink_creates_lists_changes_and_deletes_services_and_real_servers() {
    guest::require("netlink_creates_lists_changes_and_deletes_services_and_real_servers");
    let ns = Netns::new().unwrap();
    // Without any local address the namespace has no local routing table,
    // and IPVS refuses every IPv4 real server with EINVAL
    // (inet_addr_type() says RTN_BROADCAST): a node always has lo up.
    guest::ip_batch(&ns, "link set lo up\n");
    let mut ipvs = open_in(&ns);
    assert_eq!(listed(&mut ipvs), [], "a new namespace has no services");

    let tcp = VirtualServer::new(key("10.96.0.10", IpvsProtocol::Tcp, 80), "rr");
    let udp6 = VirtualServer::new(key("fd00::a", IpvsProtocol::Udp, 53), "wrr").persistent(10800);
    let sctp = VirtualServer::new(key("10.96.0.11", IpvsProtocol::Sctp, 9000), "sh");
    for s in [&tcp, &udp6, &sctp] {
        ipvs.new_service(s).unwrap();
    }
    let mut expected = vec![tcp.clone(), udp6.clone(), sctp.clone()];
    expected.sort_by_key(|s| s.key);
    assert_eq!(listed(&mut ipvs), expected);
    assert!(
        ipvs.services()
            .unwrap()
            .iter()
            .all(|s| s.flags.contains(ServiceFlags::HASHED))
    );
    let again = ipvs.new_service(&tcp).unwrap_err();
    assert_eq!(again.os_error(), Some(EEXIST), "{again}");

    // real servers: IPv4 and IPv6, weights, listed back
    let a = RealServer::masquerade(ip("10.244.1.10"), 8080);
    let b = RealServer::masquerade(ip("10.244.1.11"), 8080).with_weight(3);
    let c = RealServer::masquerade(ip("fd00:10::10"), 5353);
    ipvs.new_destination(&tcp.key, &a).unwrap();
    ipvs.new_destination(&tcp.key, &b).unwrap();
    ipvs.new_destination(&udp6.key, &c).unwrap();
    let servers = |ipvs: &mut IpvsNetlink, k: &ServiceKey| {
        let mut d: Vec<RealServer> = ipvs
            .destinations(k)
            .unwrap()
            .into_iter()
            .map(|d| d.server)
            .collect();
        d.sort();
        d
    };
    assert_eq!(servers(&mut ipvs, &tcp.key), [a, b]);
    assert_eq!(servers(&mut ipvs, &udp6.key), [c]);
    assert_eq!(servers(&mut ipvs, &sctp.key), []);

    // cross-check with ipvsadm's view of the same namespace
    let text = guest::run(&ns, "ipvsadm", &["-Ln"]);
    for line in [
        "TCP  10.96.0.10:80 rr",
        "-> 10.244.1.10:8080             Masq    1",
        "-> 10.244.1.11:8080             Masq    3",
        "UDP  [fd00::a]:53 wrr persistent 10800",
        "-> [fd00:10::10]:5353           Masq    1",
        "SCTP 10.96.0.11:9000 sh",
    ] {
        assert!(text.contains(line), "ipvsadm -Ln lacks {line:?}:\n{text}");
    }

    // changes: weight 0 (graceful termination), scheduler and persistence
    ipvs.set_destination(&tcp.key, &b.with_weight(0)).unwrap();
    assert_eq!(servers(&mut ipvs, &tcp.key), [a, b.with_weight(0)]);
    let tcp_sh = VirtualServer {
        scheduler: "sh".into(),
        ..tcp.clone().persistent(300)
    };
    ipvs.set_service(&tcp_sh).unwrap();
    let now = listed(&mut ipvs);
    assert_eq!(now.iter().find(|s| s.key == tcp.key), Some(&tcp_sh));

    // timeouts, as upstream's --ipvs-tcp-timeout & co. set them
    let timeouts = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    ipvs.set_timeouts(&timeouts).unwrap();
    assert_eq!(ipvs.timeouts().unwrap(), timeouts);

    // deletes
    ipvs.delete_destination(&tcp.key, a.address, a.port)
        .unwrap();
    assert_eq!(servers(&mut ipvs, &tcp.key), [b.with_weight(0)]);
    assert_eq!(
        ipvs.service(&sctp.key).unwrap().map(|s| s.scheduler),
        Some("sh".to_string())
    );
    ipvs.delete_service(&sctp.key).unwrap();
    assert_eq!(
        ipvs.service(&sctp.key).unwrap(),
        None,
        "a missing service is None"
    );
    let gone = ipvs.delete_service(&sctp.key).unwrap_err();
    assert_eq!(gone.os_error(), Some(ESRCH), "{gone}");
    assert_eq!(listed(&mut ipvs).len(), 2);
    ipvs.flush().unwrap();
    assert_eq!(listed(&mut ipvs), []);
    let text = guest::run(&ns, "ipvsadm", &["-Ln"]);
    assert_eq!(
        text.lines().count(),
        3,
        "only ipvsadm's header is left:\n{text}"
    );
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn a_service_made_over_netlink_carries_connections_and_counts_them() {
    guest::require("a_service_made_over_netlink_carries_connections_and_counts_them");
    let client_ip = Ipv4Addr::new(10, 244, 1, 20);
    let node = Node::new(&[
        ("pod-a", Ipv4Addr::new(10, 244, 1, 10)),
        ("pod-b", Ipv4Addr::new(10, 244, 1, 11)),
        ("client", client_ip),
    ]);
    node.serve_tcp("pod-a", 8080);
    node.serve_tcp("pod-b", 8080);
    guest::ip_batch(
        &node.node,
        "link add kube-ipvs0 type dummy\naddr add 10.96.0.10/32 dev kube-ipvs0\n",
    );
    let mut ipvs = open_in(&node.node);
    let service = key("10.96.0.10", IpvsProtocol::Tcp, 80);
    ipvs.new_service(&VirtualServer::new(service, "rr"))
        .unwrap();
    for pod in ["10.244.1.10", "10.244.1.11"] {
        ipvs.new_destination(&service, &RealServer::masquerade(ip(pod), 8080))
            .unwrap();
    }
    let (client, _) = node.pod("client");
    let vip = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 80));
    let mut answers = BTreeMap::<String, usize>::new();
    for _ in 0..8 {
        let (name, peer) = guest::connect(client, vip).expect("a connection through IPVS");
        assert_eq!(peer, client_ip);
        *answers.entry(name).or_default() += 1;
    }
    assert_eq!(
        answers,
        BTreeMap::from([("pod-a".to_string(), 4), ("pod-b".to_string(), 4)])
    );
    // the kernel's connection entries (closed ones linger as inactive)
    for d in ipvs.destinations(&service).unwrap() {
        assert_eq!(
            d.active_connections + d.inactive_connections,
            4,
            "connections counted for {:?}",
            d.server.address
        );
    }
    // weight 0: no new connections go there, the other takes them all
    ipvs.set_destination(
        &service,
        &RealServer::masquerade(ip("10.244.1.10"), 8080).with_weight(0),
    )
    .unwrap();
    for _ in 0..4 {
        let (name, _) = guest::connect(client, vip).expect("a connection through IPVS");
        assert_eq!(
            name, "pod-b",
            "a weight-0 real server takes no new connection"
        );
    }
}
