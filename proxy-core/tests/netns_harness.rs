//! The real-kernel tier's plumbing: namespaces, topology, echo servers,
//! a hand-written nft DNAT, and a backend driven through `KernelHarness`.
//!
//! Needs root; run with `cargo test -p proxy-core --features netns --test
//! netns_harness`. Without privileges each test prints `SKIP: …` and
//! passes, unless `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI). Unwraps are
//! allowed here: helpers outside `#[test]` functions panic on setup failures.
#![cfg(feature = "netns")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::backend::BackendContext;
use proxy_core::conformance::address_plan;
use proxy_core::conformance::netns::{
    KernelHarness, Netns, NodeTopology, PrivilegeGate, SendOptions, check_tool,
    kernel_harness_factory, parse_echo_reply, privileged_or_skip, privileged_or_skip_with,
};
use proxy_core::conformance::{HarnessFactory, Origin, Outcome, Packet};
use proxy_core::topology::ServiceTopology;
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, IpFamily, NodeView, Protocol, ProxyMode,
    SyncStats,
};

// ---------------------------------------------------------------- helpers

fn nft_available() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")
}

fn ctx(family: IpFamily) -> BackendContext {
    BackendContext::for_tests(family, Arc::new(address_plan::node()))
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    items.into_iter().collect()
}

fn packet(
    origin: Origin,
    source: &str,
    protocol: Protocol,
    destination: &str,
    port: u16,
) -> Packet {
    Packet {
        origin,
        source: ip(source),
        protocol,
        destination: ip(destination),
        port,
    }
}

/// Output of `ip args…` in the caller's (root) namespace.
fn root_ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Everything a test could have added to the root namespace.
fn root_snapshot() -> BTreeMap<&'static str, String> {
    let strip_lifetimes = |s: String| {
        s.lines()
            .map(|l| {
                l.split("valid_lft")
                    .next()
                    .unwrap_or(l)
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    BTreeMap::from([
        ("netns", root_ip(&["netns", "list"])),
        ("link", root_ip(&["-o", "link"])),
        ("addr", strip_lifetimes(root_ip(&["-o", "addr"]))),
        ("route4", root_ip(&["-4", "route", "show", "table", "all"])),
        ("route6", root_ip(&["-6", "route", "show", "table", "all"])),
        ("rule4", root_ip(&["-4", "rule"])),
        ("rule6", root_ip(&["-6", "rule"])),
    ])
}

/// Links of a namespace, by name.
fn links(ns: &Netns) -> BTreeSet<String> {
    let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Adds veth `name` in `witness` whose peer lives in `target`: when
/// `target` is destroyed, `name` disappears from `witness`.
fn add_witness_link(witness: &Netns, name: &str, target: &Netns) {
    let status = witness
        .command("ip")
        .args([
            "link", "add", name, "type", "veth", "peer", "name", "witness", "netns",
        ])
        .arg(target.path())
        .status()
        .unwrap();
    assert!(status.success(), "cannot add witness link {name}");
}

/// Waits until `witness` has no link but `lo` (namespace destruction is
/// asynchronous in the kernel).
fn wait_for_witness_links_gone(witness: &Netns) -> Result<(), BTreeSet<String>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: BTreeSet<String> = links(witness).into_iter().filter(|l| l != "lo").collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One TCP exchange with an echo server from inside `ns`, bound to `source`.
fn tcp_echo(ns: &Netns, source: IpAddr, destination: SocketAddr) -> (SocketAddr, IpAddr) {
    ns.block_on(move || async move {
        let socket = match source {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4().unwrap(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6().unwrap(),
        };
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(destination))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        let mut reply = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut reply)
            .await
            .unwrap();
        parse_echo_reply(&reply).unwrap_or_else(|| panic!("bad echo reply {reply:?}"))
    })
    .unwrap()
}

/// One UDP exchange with an echo server from inside `ns`, bound to `source`.
fn udp_echo(ns: &Netns, source: IpAddr, destination: SocketAddr) -> (SocketAddr, IpAddr) {
    ns.run(move || {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(source, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.connect(destination).unwrap();
        socket.send(b"ping").unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        parse_echo_reply(std::str::from_utf8(&buf[..n]).unwrap()).unwrap()
    })
    .unwrap()
}

fn nft(ns: &Netns, script: &str) {
    let out = ns
        .command("nft")
        .args(["-f", "-"])
        .output_with_input(script.as_bytes())
        .unwrap();
    assert!(
        out.status.success(),
        "nft failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------ gate

#[test]
fn privilege_gate_runs_skips_or_fails() {
    assert_eq!(PrivilegeGate::decide(Ok(()), false), PrivilegeGate::Run);
    assert_eq!(PrivilegeGate::decide(Ok(()), true), PrivilegeGate::Run);
    assert_eq!(
        PrivilegeGate::decide(Err("not root".into()), false),
        PrivilegeGate::Skip("not root".into())
    );
    assert_eq!(
        PrivilegeGate::decide(Err("not root".into()), true),
        PrivilegeGate::Fail("not root".into())
    );
    assert!(PrivilegeGate::Run.apply("t"));
    assert!(!PrivilegeGate::Skip("no ip".into()).apply("t"));
    let failed = std::panic::catch_unwind(|| PrivilegeGate::Fail("no ip".into()).apply("t"));
    let message = failed.expect_err("a required privilege must fail the test");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("no ip"),
        "the failure names the reason: {text:?}"
    );
}

#[test]
fn check_tool_names_the_missing_package() {
    let err = check_tool("kpt-no-such-tool", &["--version"], "kpt-package").unwrap_err();
    assert!(err.contains("kpt-package"), "{err}");
}

// -------------------------------------------------------------- namespaces

#[test]
fn netns_runs_code_and_commands_inside_and_keeps_the_caller_out() {
    if !privileged_or_skip("netns_runs_code_and_commands_inside_and_keeps_the_caller_out") {
        return;
    }
    let caller_ns = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    let ns = Netns::new().unwrap();
    let inside = ns
        .run(|| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
        })
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        inside,
        caller_ns.ino(),
        "run() executes in another namespace"
    );
    assert_eq!(
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(),
        caller_ns.ino(),
        "the caller's thread never moves"
    );
    // A fresh namespace has only lo, and commands see that.
    assert_eq!(links(&ns), set(["lo".to_string()]));
    assert!(ns.same_as(&ns.try_clone().unwrap()).unwrap());
    assert!(!ns.same_as(&Netns::new().unwrap()).unwrap());

    // A socket bound inside stays inside: reachable from the namespace,
    // not from another one.
    ns.command("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    let listener = ns
        .run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(ns.run(|| TcpStream::connect(addr).is_ok()).unwrap());
    let other = Netns::new().unwrap();
    other
        .command("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(other.run(|| TcpStream::connect(addr).is_err()).unwrap());
}

#[test]
fn dropping_a_netns_destroys_it() {
    if !privileged_or_skip("dropping_a_netns_destroys_it") {
        return;
    }
    let witness = Netns::new().unwrap();
    let ns = Netns::new().unwrap();
    add_witness_link(&witness, "w0", &ns);
    assert!(links(&witness).contains("w0"));
    assert!(links(&ns).contains("witness"));
    drop(ns);
    wait_for_witness_links_gone(&witness)
        .expect("the namespace (and so its veth pair) is destroyed");
}

// ---------------------------------------------------------------- topology

#[test]
fn topology_is_fast_cleans_up_and_leaves_the_root_namespace_alone() {
    if !privileged_or_skip("topology_is_fast_cleans_up_and_leaves_the_root_namespace_alone") {
        return;
    }
    let before = root_snapshot();
    let witness = Netns::new().unwrap();
    let started = Instant::now();
    let mut topology = NodeTopology::new(&ctx(IpFamily::V4)).unwrap();
    topology
        .add_endpoints(
            &set([
                sock("10.244.1.10:8080"),
                sock("10.244.1.11:8080"),
                sock("10.244.1.11:9090"),
            ]),
            &set([sock("10.244.2.10:8080")]),
        )
        .unwrap();
    topology
        .add_vips(&set([ip("10.96.0.10"), ip("198.51.100.10")]))
        .unwrap();
    let built = started.elapsed();
    println!("topology with 2 pods, 1 remote endpoint, 2 VIPs: {built:?}");
    assert!(built < Duration::from_secs(3), "building took {built:?}");

    // Every namespace of the topology gets a witness veth.
    add_witness_link(&witness, "w-node", topology.node());
    add_witness_link(&witness, "w-lan", topology.lan());
    add_witness_link(
        &witness,
        "w-pod-a",
        topology.pod(ip("10.244.1.10")).unwrap(),
    );
    add_witness_link(
        &witness,
        "w-pod-b",
        topology.pod(ip("10.244.1.11")).unwrap(),
    );
    assert_eq!(links(&witness).len(), 5);
    // The node has its uplink, bridge and one veth per pod.
    let node_links = links(topology.node());
    for name in ["eth0", "cbr0", "veth0", "veth1"] {
        assert!(
            node_links.contains(name),
            "node lacks {name}: {node_links:?}"
        );
    }

    let started = Instant::now();
    drop(topology);
    wait_for_witness_links_gone(&witness).expect("every namespace of the topology is destroyed");
    println!("topology destroyed in {:?}", started.elapsed());
    drop(witness);
    assert_eq!(root_snapshot(), before, "the root namespace is unchanged");
}

#[test]
fn clients_reach_echo_servers_directly_and_see_their_own_address() {
    if !privileged_or_skip("clients_reach_echo_servers_directly_and_see_their_own_address") {
        return;
    }
    let mut topology = NodeTopology::new(&ctx(IpFamily::V4)).unwrap();
    topology
        .add_endpoints(
            &set([sock("10.244.1.10:8080"), sock("10.244.1.20:9090")]),
            &set([sock("10.244.2.10:8080")]),
        )
        .unwrap();
    let client = topology.pod(ip("10.244.1.20")).unwrap();

    // Pod to pod on the bridge, TCP and UDP.
    assert_eq!(
        tcp_echo(client, ip("10.244.1.20"), sock("10.244.1.10:8080")),
        (sock("10.244.1.10:8080"), ip("10.244.1.20"))
    );
    assert_eq!(
        udp_echo(client, ip("10.244.1.20"), sock("10.244.1.10:8080")),
        (sock("10.244.1.10:8080"), ip("10.244.1.20"))
    );
    // Pod to a remote endpoint: routed by the node to lan, not NATed.
    assert_eq!(
        tcp_echo(client, ip("10.244.1.20"), sock("10.244.2.10:8080")),
        (sock("10.244.2.10:8080"), ip("10.244.1.20"))
    );
    // The node itself to a pod.
    assert_eq!(
        tcp_echo(topology.node(), ip("10.0.0.1"), sock("10.244.1.10:8080")),
        (sock("10.244.1.10:8080"), ip("10.0.0.1"))
    );

    // The same through `send`: the destination itself answers, which is
    // "not matched" by any service rule.
    let direct = packet(
        Origin::LocalPod,
        "10.244.1.20",
        Protocol::Tcp,
        "10.244.1.10",
        8080,
    );
    assert_eq!(
        topology.send(&direct, SendOptions::default()).unwrap(),
        Outcome::NotMatched
    );
    // An external client reaches a pod through the node (lan routes the pod CIDR).
    let external = packet(
        Origin::External,
        "203.0.113.10",
        Protocol::Udp,
        "10.244.1.10",
        8080,
    );
    assert_eq!(
        topology.send(&external, SendOptions::default()).unwrap(),
        Outcome::NotMatched
    );
    assert_eq!(
        udp_echo(topology.lan(), ip("203.0.113.10"), sock("10.244.1.10:8080")),
        (sock("10.244.1.10:8080"), ip("203.0.113.10"))
    );
}

#[test]
fn ipv6_pods_are_reachable_at_once() {
    if !privileged_or_skip("ipv6_pods_are_reachable_at_once") {
        return;
    }
    let mut topology = NodeTopology::new(&ctx(IpFamily::V6)).unwrap();
    topology
        .add_endpoints(
            &set([sock("[fd00:244:1::10]:8080"), sock("[fd00:244:1::20]:8080")]),
            &set([sock("[fd00:244:2::10]:8080")]),
        )
        .unwrap();
    let client = topology.pod(ip("fd00:244:1::20")).unwrap();
    assert_eq!(
        tcp_echo(client, ip("fd00:244:1::20"), sock("[fd00:244:1::10]:8080")),
        (sock("[fd00:244:1::10]:8080"), ip("fd00:244:1::20"))
    );
    assert_eq!(
        udp_echo(client, ip("fd00:244:1::20"), sock("[fd00:244:2::10]:8080")),
        (sock("[fd00:244:2::10]:8080"), ip("fd00:244:1::20"))
    );
    let unmatched = packet(
        Origin::LocalPod,
        "fd00:244:1::20",
        Protocol::Tcp,
        "fd00:96::99",
        80,
    );
    assert_eq!(
        topology.send(&unmatched, SendOptions::default()).unwrap(),
        Outcome::NotMatched
    );
}

#[test]
fn unmatched_traffic_is_answered_distinctly_not_timed_out() {
    if !privileged_or_skip("unmatched_traffic_is_answered_distinctly_not_timed_out") {
        return;
    }
    let mut topology = NodeTopology::new(&ctx(IpFamily::V4)).unwrap();
    topology.add_vips(&set([ip("198.51.100.10")])).unwrap();
    for p in [
        // A ClusterIP no rule matches, from a pod, the node and outside.
        packet(
            Origin::LocalPod,
            "10.244.1.20",
            Protocol::Tcp,
            "10.96.0.99",
            80,
        ),
        packet(Origin::Host, "10.0.0.1", Protocol::Tcp, "10.96.0.99", 80),
        packet(
            Origin::External,
            "203.0.113.10",
            Protocol::Udp,
            "10.96.0.99",
            53,
        ),
        // An external IP no rule matches (no routing loop between node and lan).
        packet(
            Origin::External,
            "203.0.113.10",
            Protocol::Tcp,
            "198.51.100.10",
            80,
        ),
        // A node port no rule matches: the host echo server answers.
        packet(
            Origin::External,
            "203.0.113.10",
            Protocol::Tcp,
            "10.0.0.1",
            30080,
        ),
        packet(Origin::Host, "127.0.0.1", Protocol::Tcp, "127.0.0.1", 30080),
        packet(Origin::Host, "10.0.0.1", Protocol::Udp, "10.0.0.1", 30080),
    ] {
        // Unreachables come back at once, or with the SYN retransmission
        // after 1 s (see SendOptions::timeout); never as a timeout.
        let started = Instant::now();
        assert_eq!(
            topology.send(&p, SendOptions::default()).unwrap(),
            Outcome::NotMatched,
            "{p}"
        );
        println!("{p}: not matched in {:?}", started.elapsed());
    }
}

// ------------------------------------------------------------ nft plumbing

const NFT_SERVICES: &str = r#"
table ip kpt {
  chain prerouting { type nat hook prerouting priority -100; policy accept;
    jump services
  }
  chain output { type nat hook output priority -100; policy accept;
    jump services
  }
  chain services {
    ip daddr 10.96.0.10 tcp dport 80 dnat to numgen random mod 2 map { 0 : 10.244.1.10, 1 : 10.244.1.11 } : 8080
    ip daddr 10.96.0.10 udp dport 53 dnat to numgen random mod 2 map { 0 : 10.244.1.10, 1 : 10.244.1.11 } : 8080
    ip daddr 10.96.0.11 tcp dport 80 ip saddr 10.244.1.10 meta mark set 0x4000
    ip daddr 10.96.0.11 tcp dport 80 dnat to 10.244.1.10:8080
    ip daddr 10.96.0.12 tcp dport 80 dnat to 10.244.2.10:8080
  }
  chain postrouting { type nat hook postrouting priority 100; policy accept;
    meta mark & 0x4000 == 0x4000 masquerade
  }
  chain filter { type filter hook forward priority -110; policy accept;
    ip daddr 10.96.0.20 tcp dport 80 reject
    ip daddr 10.96.0.30 tcp dport 80 drop
  }
  chain filter-output { type filter hook output priority -110; policy accept;
    ip daddr 10.96.0.20 tcp dport 80 reject
  }
}
"#;

/// An IPv4 node with the local endpoints `10.244.1.10:8080` and
/// `10.244.1.11:8080` and the endpoints `remote` on other nodes.
fn web_pods(remote: &[SocketAddr]) -> NodeTopology {
    let mut topology = NodeTopology::new(&ctx(IpFamily::V4)).unwrap();
    topology
        .add_endpoints(
            &set([sock("10.244.1.10:8080"), sock("10.244.1.11:8080")]),
            &remote.iter().copied().collect(),
        )
        .unwrap();
    topology
}

#[test]
fn an_nft_dnat_in_the_node_takes_clients_to_endpoints_through_a_vip() {
    if !privileged_or_skip_with(
        "an_nft_dnat_in_the_node_takes_clients_to_endpoints_through_a_vip",
        nft_available,
    ) {
        return;
    }
    let mut topology = web_pods(&[sock("10.244.2.10:8080")]);
    topology
        .add_vips(&set([
            ip("10.96.0.12"),
            ip("10.96.0.10"),
            ip("10.96.0.11"),
            ip("10.96.0.20"),
            ip("10.96.0.30"),
        ]))
        .unwrap();
    nft(topology.node(), NFT_SERVICES);

    let both = set([sock("10.244.1.10:8080"), sock("10.244.1.11:8080")]);
    let forwarded = |masqueraded| Outcome::Forwarded {
        endpoints: both.clone(),
        masqueraded,
    };
    let options = SendOptions::default();
    let started = Instant::now();
    let cases = [
        (
            packet(
                Origin::LocalPod,
                "10.244.1.20",
                Protocol::Tcp,
                "10.96.0.10",
                80,
            ),
            forwarded(false),
        ),
        (
            packet(
                Origin::LocalPod,
                "10.244.1.20",
                Protocol::Udp,
                "10.96.0.10",
                53,
            ),
            forwarded(false),
        ),
        (
            packet(Origin::Host, "10.0.0.1", Protocol::Tcp, "10.96.0.10", 80),
            forwarded(false),
        ),
        (
            packet(
                Origin::External,
                "203.0.113.10",
                Protocol::Tcp,
                "10.96.0.10",
                80,
            ),
            forwarded(false),
        ),
        // Hairpin: the pod reaches itself through the VIP, masqueraded
        // (needs hairpin mode on its bridge port and br_netfilter).
        (
            packet(
                Origin::LocalPod,
                "10.244.1.10",
                Protocol::Tcp,
                "10.96.0.11",
                80,
            ),
            Outcome::Forwarded {
                endpoints: set([sock("10.244.1.10:8080")]),
                masqueraded: true,
            },
        ),
        (
            packet(
                Origin::LocalPod,
                "10.244.1.20",
                Protocol::Tcp,
                "10.96.0.20",
                80,
            ),
            Outcome::Rejected,
        ),
        (
            packet(Origin::Host, "10.0.0.1", Protocol::Tcp, "10.96.0.20", 80),
            Outcome::Rejected,
        ),
        (
            packet(
                Origin::LocalPod,
                "10.244.1.20",
                Protocol::Tcp,
                "10.96.0.10",
                81,
            ),
            Outcome::NotMatched,
        ),
    ];
    let count = cases.len();
    for (p, expected) in cases {
        assert_eq!(topology.send(&p, options).unwrap(), expected, "{p}");
    }
    println!(
        "{} packets with up to 64 connections each: {:?}",
        count,
        started.elapsed()
    );

    let dropped = packet(
        Origin::LocalPod,
        "10.244.1.20",
        Protocol::Tcp,
        "10.96.0.30",
        80,
    );
    let quick = SendOptions {
        timeout: Duration::from_millis(300),
        ..options
    };
    assert_eq!(topology.send(&dropped, quick).unwrap(), Outcome::Dropped);
}

// -------------------------------------------------------- KernelHarness

/// A minimal backend for the plumbing test: every ClusterIP port becomes
/// an nft DNAT to its cluster endpoints, applied with the `nft` binary
/// (which must run inside the node namespace). Each sync also spawns a
/// task that must keep running after `sync` returns.
struct NftDnatBackend {
    ticks: std::sync::mpsc::Sender<&'static str>,
}

#[async_trait::async_trait]
impl Backend for NftDnatBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        _changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let script = self.render(view)?;
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| BackendError::unsupported("nft").with_source(e))?;
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        if !status.success() {
            return Err(BackendError::dataplane(format!("nft failed:\n{script}")));
        }
        let ticks = self.ticks.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = ticks.send("tick");
        });
        Ok(SyncStats {
            full: true,
            ports_written: view.len(),
            ..SyncStats::default()
        })
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        let mut rules = String::new();
        for (_, port) in view.iter() {
            let sp = &port.port;
            if port.cluster.is_empty() {
                continue;
            }
            let map: Vec<String> = port
                .cluster
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{i} : {} . {}", e.ip, e.port))
                .collect();
            rules.push_str(&format!(
                "    ip daddr {} {} dport {} dnat ip to numgen random mod {} map {{ {} }}\n",
                sp.cluster_ip,
                sp.protocol.lower(),
                sp.port,
                map.len(),
                map.join(", ")
            ));
        }
        Ok(format!(
            "table ip kpt-test\ndelete table ip kpt-test\ntable ip kpt-test {{\n  chain pre {{ type nat hook prerouting priority -100; policy accept;\n{rules}  }}\n}}\n"
        ))
    }
}

/// Every attempt is a new flow, also after a probe from before the rules:
/// the topology gives each attempt the next of its source ports, so no
/// attempt meets the conntrack entry of an earlier one. (A port the kernel
/// picks can repeat one whose entry still lives: a SYN forwarded
/// unanswered before a Service was programmed leaves one in `SYN_SENT` for
/// two minutes, and a later attempt from that port skipped the new DNAT
/// and was rejected — once in 64 attempts, in CI.)
#[cfg(feature = "runtime")]
#[test]
fn every_attempt_is_a_new_flow_even_after_a_probe_from_before_the_rules() {
    use proxy_core::runtime::conntrack::{ConntrackTable, IPPROTO_TCP, NetlinkConntrack};
    if !privileged_or_skip_with(
        "every_attempt_is_a_new_flow_even_after_a_probe_from_before_the_rules",
        nft_available,
    ) {
        return;
    }
    let mut topology = web_pods(&[]);
    topology.add_vips(&set([ip("10.96.0.10")])).unwrap();
    let to_vip = packet(
        Origin::LocalPod,
        "10.244.1.20",
        Protocol::Tcp,
        "10.96.0.10",
        80,
    );
    let options = SendOptions::default();
    // No rule for the VIP yet, but connection tracking on (a `ct` match):
    // the SYN leaves the node, `lan` answers unreachable, and the flow's
    // conntrack entry stays, in `SYN_SENT`, for two minutes.
    nft(
        topology.node(),
        "table ip track { chain prerouting { type filter hook prerouting priority 0; policy accept; ct state new counter; }; }",
    );
    assert_eq!(
        topology.send(&to_vip, options).unwrap(),
        Outcome::NotMatched
    );
    nft(topology.node(), NFT_SERVICES);
    assert_eq!(
        topology.send(&to_vip, options).unwrap(),
        Outcome::Forwarded {
            endpoints: set([sock("10.244.1.10:8080"), sock("10.244.1.11:8080")]),
            masqueraded: false,
        }
    );
    let flows = topology
        .node()
        .run(|| NetlinkConntrack::new().list(IpFamily::V4))
        .unwrap()
        .unwrap();
    let mut ports: Vec<u16> = flows
        .iter()
        .filter(|e| e.protocol == IPPROTO_TCP && e.original.src.ip() == ip("10.244.1.20"))
        .map(|e| e.original.src.port())
        .collect();
    ports.sort_unstable();
    let attempts = 1 + options.forwarded_attempts;
    assert_eq!(ports.len(), attempts, "one flow per attempt: {ports:?}");
    let first = ports[0];
    assert!(
        ports.iter().zip(first..).all(|(p, q)| *p == q),
        "the attempts took the topology's next ports in turn: {ports:?}"
    );
}

fn web_view(family: IpFamily) -> NodeView {
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap();
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.10"], "nodeName": "node-a", "conditions": {"ready": true}},
            {"addresses": ["10.244.2.10"], "nodeName": "node-b", "conditions": {"ready": true}}
        ]
    }))
    .unwrap();
    let mut topology = ServiceTopology::new();
    let _ = topology.apply_service(&service);
    let _ = topology.apply_endpoint_slice(&slice);
    NodeView::build(&topology, Arc::new(address_plan::node()), family)
}

#[tokio::test]
async fn kernel_harness_runs_the_backend_inside_the_node_namespace() {
    if !privileged_or_skip_with(
        "kernel_harness_runs_the_backend_inside_the_node_namespace",
        nft_available,
    ) {
        return;
    }
    let root_rules_before = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap()
        .stdout;
    let (ticks, tick) = std::sync::mpsc::channel();
    let ticks = std::sync::Mutex::new(ticks);
    let factory = kernel_harness_factory(
        move |_ctx: &BackendContext| -> Result<Box<dyn Backend>, BackendError> {
            Ok(Box::new(NftDnatBackend {
                ticks: ticks.lock().unwrap().clone(),
            }))
        },
    );
    let mut harness = factory.harness(&ctx(IpFamily::V4)).unwrap();
    assert!(!harness.capabilities().sctp, "the harness cannot send SCTP");
    assert!(harness.capabilities().ipv6);
    assert_eq!(harness.backend().mode(), ProxyMode::Nftables);

    let view = web_view(IpFamily::V4);
    assert_eq!(view.len(), 1, "the test view has the web service");
    let stats = harness
        .backend()
        .sync(&view, &ChangeSet::full())
        .await
        .unwrap();
    assert_eq!(stats.ports_written, 1);
    assert!(
        harness
            .backend()
            .render(&view)
            .unwrap()
            .contains("10.96.0.10")
    );
    // The task the backend spawned ran after sync returned.
    assert_eq!(tick.recv_timeout(Duration::from_secs(2)).unwrap(), "tick");

    // The rules went into the node namespace, not the root one.
    let root_rules_after = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        root_rules_after, root_rules_before,
        "root ruleset untouched"
    );

    // The topology grew for the view: the local endpoint got a pod and
    // the remote one an address on lan. (This backend never masquerades,
    // so an external client could not talk to the remote endpoint, which
    // would answer it directly.)
    let expected = Outcome::Forwarded {
        endpoints: set([sock("10.244.1.10:8080"), sock("10.244.2.10:8080")]),
        masqueraded: false,
    };
    let p = packet(
        Origin::LocalPod,
        "10.244.1.20",
        Protocol::Tcp,
        "10.96.0.10",
        80,
    );
    assert_eq!(harness.send(&p).await.unwrap(), expected, "{p}");
    assert_eq!(harness.dump().await, None);
    assert!(!harness.backend().dataplane_lost().await);
    harness.backend().cleanup().await.unwrap();
}

#[test]
fn kernel_harness_reports_a_backend_that_cannot_be_built() {
    if !privileged_or_skip("kernel_harness_reports_a_backend_that_cannot_be_built") {
        return;
    }
    let make = Arc::new(
        |_: &BackendContext| -> Result<Box<dyn Backend>, BackendError> {
            Err(BackendError::config("no such thing"))
        },
    );
    let err = KernelHarness::new(&ctx(IpFamily::V4), make)
        .err()
        .expect("the build error comes back");
    assert_eq!(err.message(), "no such thing");
}
