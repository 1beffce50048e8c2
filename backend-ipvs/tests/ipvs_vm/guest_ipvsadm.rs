//! First proof of the VM: a virtual server made with `ipvsadm` carries real
//! TCP connections between network namespaces inside the guest.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::guest::{self, Node};

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn ipvsadm_round_robin_virtual_server_carries_tcp_between_namespaces() {
    guest::require("ipvsadm_round_robin_virtual_server_carries_tcp_between_namespaces");
    let started = Instant::now();
    let client_ip = Ipv4Addr::new(10, 244, 1, 20);
    let node = Node::new(&[
        ("pod-a", Ipv4Addr::new(10, 244, 1, 10)),
        ("pod-b", Ipv4Addr::new(10, 244, 1, 11)),
        ("client", client_ip),
    ]);
    node.serve_tcp("pod-a", 8080);
    node.serve_tcp("pod-b", 8080);
    // upstream's layout: the VIP on the kube-ipvs0 dummy (left down, as
    // upstream does: a local address needs no up link), masquerading
    // real servers
    guest::ip_batch(
        &node.node,
        "link add kube-ipvs0 type dummy\naddr add 10.96.0.10/32 dev kube-ipvs0\n",
    );
    let ipvsadm = |args: &[&str]| guest::run(&node.node, "ipvsadm", args);
    ipvsadm(&["-A", "-t", "10.96.0.10:80", "-s", "rr"]);
    ipvsadm(&["-a", "-t", "10.96.0.10:80", "-r", "10.244.1.10:8080", "-m"]);
    ipvsadm(&["-a", "-t", "10.96.0.10:80", "-r", "10.244.1.11:8080", "-m"]);

    let (client, _) = node.pod("client");
    let vip = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 80));
    let mut answers = BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let (name, peer) = guest::connect(client, vip).expect("a connection through IPVS");
        assert_eq!(
            peer, client_ip,
            "masquerade-forwarding keeps the client's address"
        );
        *answers.entry(name).or_default() += 1;
    }
    assert_eq!(
        answers,
        BTreeMap::from([("pod-a".to_string(), 10), ("pod-b".to_string(), 10)]),
        "rr alternates between the two real servers"
    );
    let listing = ipvsadm(&["-Ln"]);
    assert!(listing.contains("TCP  10.96.0.10:80 rr"), "{listing}");

    // a VIP without real servers refuses at once: IPVS passes the SYN to
    // the local stack, which has no listener on the VIP
    ipvsadm(&["-d", "-t", "10.96.0.10:80", "-r", "10.244.1.10:8080"]);
    ipvsadm(&["-d", "-t", "10.96.0.10:80", "-r", "10.244.1.11:8080"]);
    let error = guest::connect(client, vip).expect_err("no real server left");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
    eprintln!("20 connections through IPVS in {:?}", started.elapsed());
}
