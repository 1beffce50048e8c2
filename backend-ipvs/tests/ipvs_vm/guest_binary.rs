//! The `kube-proxy` binary itself in `--proxy-mode=ipvs` inside the guest,
//! fed by manifest files as in `kube-proxy/tests/e2e_netns.rs`: a node
//! namespace with pods on routed veths (a client and three web servers) and
//! an outside host (`ext`) on a LAN veth. Real TCP connections from the
//! client pod and from outside reach a ClusterIP and a NodePort; then the
//! EndpointSlice file is rewritten (the new endpoint gets the traffic, the
//! removed one none), the Service's files are deleted (connections fail,
//! the virtual servers go), and `kube-proxy --cleanup` leaves no virtual
//! server, no `kube-ipvs0`, no `KUBE-*` ipset or chain.
//!
//! The node is dual-stack: the Service has an IPv6 ClusterIP too, with an
//! IPv6 EndpointSlice, and the binary serves it through its IPv6 backend
//! (`KUBE-6-` sets, ip6tables) on the same `kube-ipvs0`.
//!
//! The binary is `/test/kube-proxy` (the host test carries it in). Every
//! wait is bounded and says what it waited for.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::Netns;

use crate::guest::{self, Node, connect, ip_batch, run};
use crate::http;

/// Where the host test puts the binary in the guest.
pub const BINARY: &str = "/test/kube-proxy";

const NODE_NAME: &str = "vm-node";
const NODE_LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLUSTER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
/// The node's address on every pod veth, IPv6.
const NODE_POD_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 1);
const NODE_LAN_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 1);
const PORT: u16 = 80;
const NODE_PORT: u16 = 30080;
const TARGET_PORT: u16 = 8080;
const HEALTHZ: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 10256);
const METRICS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 10249);
const LAST_SYNC_METRIC: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";
/// How long the binary may take to program a change (TCG is slow).
const CONVERGE: Duration = Duration::from_secs(30);
/// Connections per check: with `rr`, every endpoint gets some.
const CONNECTIONS: usize = 12;

const PODS: [(&str, Ipv4Addr); 4] = [
    ("client", Ipv4Addr::new(10, 244, 1, 10)),
    ("web-a", Ipv4Addr::new(10, 244, 1, 11)),
    ("web-b", Ipv4Addr::new(10, 244, 1, 12)),
    ("web-c", Ipv4Addr::new(10, 244, 1, 13)),
];

/// A pod's IPv6 address: `fd00:244:1::<last byte of its IPv4 one>`.
fn pod_ip6(name: &str) -> Ipv6Addr {
    let last = pod_ip(name).octets()[3];
    Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, u16::from(last))
}

/// Gives every pod of `node` an IPv6 address on its routed veth, as the
/// IPv4 ones are (a /128, the node's gateway address on each veth).
fn add_ipv6(node: &Node) {
    guest::sysctl(&node.node, "net/ipv6/conf/all/forwarding", "1");
    let mut script = String::new();
    for (i, (name, _)) in PODS.iter().enumerate() {
        script += &format!(
            "addr add {NODE_POD_GATEWAY6}/128 dev veth{i} nodad\n\
             route add {}/128 dev veth{i}\n",
            pod_ip6(name)
        );
        let (pod, _) = node.pod(name);
        ip_batch(
            pod,
            &format!(
                "addr add {}/128 dev eth0 nodad\n\
                 route add {NODE_POD_GATEWAY6}/128 dev eth0\n\
                 route add ::/0 via {NODE_POD_GATEWAY6} dev eth0\n",
                pod_ip6(name)
            ),
        );
    }
    ip_batch(&node.node, &script);
}

fn pod_ip(name: &str) -> Ipv4Addr {
    PODS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, ip)| *ip)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

/// The manifest directory and configuration in `/tmp`, removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(format!("kube-proxy-ipvs-vm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let files = Files { dir };
        std::fs::write(
            files.config(),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
                 kind: KubeProxyConfiguration\n\
                 mode: ipvs\n\
                 hostnameOverride: {NODE_NAME}\n\
                 healthzBindAddress: {HEALTHZ}\n\
                 metricsBindAddress: {METRICS}\n\
                 detectLocalMode: NodeCIDR\n\
                 conntrack:\n  maxPerCore: 0\n"
            ),
        )
        .unwrap();
        files.write(
            "00-node.yaml",
            &format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE_NAME}\n\
                 spec:\n  podCIDRs: [10.244.1.0/24, \"fd00:244:1::/64\"]\n\
                 status:\n  addresses:\n    - type: InternalIP\n      address: {NODE_LAN_IP}\n\
                 \x20   - type: InternalIP\n      address: \"{NODE_LAN_IP6}\"\n"
            ),
        );
        files
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("kube-proxy.log")
    }

    /// Writes a manifest through a temporary file and a rename, as an
    /// editor or a ConfigMap update would.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests().join(name)).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests().join(name)).unwrap();
    }

    fn service(&self) {
        self.write(
            "10-service-web.yaml",
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: default\n  name: web\n\
                 spec:\n  type: NodePort\n  clusterIP: {CLUSTER_IP}\n  clusterIPs: [{CLUSTER_IP}, \"{CLUSTER_IP6}\"]\n\
                 \x20 ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  selector: {{app: web}}\n  ports:\n\
                 \x20   - {{name: http, protocol: TCP, port: {PORT}, targetPort: {TARGET_PORT}, nodePort: {NODE_PORT}}}\n"
            ),
        );
    }

    fn slice(&self, endpoints: &[&str]) {
        let mut text = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: default\n\
             \x20 name: web-1\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\n\
             ports:\n  - {{name: http, protocol: TCP, port: {TARGET_PORT}}}\nendpoints:\n"
        );
        for name in endpoints {
            text += &format!(
                "  - addresses: [{}]\n    conditions: {{ready: true}}\n    nodeName: {NODE_NAME}\n\
                 \x20   targetRef: {{kind: Pod, namespace: default, name: {name}}}\n",
                pod_ip(name)
            );
        }
        self.write("20-endpointslice-web-1.yaml", &text);
    }

    /// The IPv6 EndpointSlice of `web` with `endpoints`' IPv6 addresses.
    fn slice6(&self, endpoints: &[&str]) {
        let mut text = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: default\n\
             \x20 name: web-6\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv6\n\
             ports:\n  - {{name: http, protocol: TCP, port: {TARGET_PORT}}}\nendpoints:\n"
        );
        for name in endpoints {
            text += &format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n    nodeName: {NODE_NAME}\n",
                pod_ip6(name)
            );
        }
        self.write("21-endpointslice-web-6.yaml", &text);
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The running binary; killed and reaped on drop, so a failing test leaves
/// no process behind.
struct KubeProxy {
    child: Option<Child>,
    log: PathBuf,
}

impl KubeProxy {
    fn start(ns: &Netns, files: &Files) -> KubeProxy {
        let log = File::create(files.log()).unwrap();
        let child = ns
            .command(BINARY)
            .args(["--config", path(&files.config()), "--manifests"])
            .arg(files.manifests())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY} in the node namespace: {e}"));
        KubeProxy {
            child: Some(child),
            log: files.log(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Panics with the log when the binary exited.
    fn assert_running(&mut self, waiting_for: &str) {
        let child = self.child.as_mut().expect("kube-proxy runs");
        if let Some(status) = child.try_wait().unwrap() {
            self.child = None;
            panic!(
                "kube-proxy exited ({status}) while waiting for {waiting_for}; its log:\n{}",
                self.log()
            );
        }
    }

    /// Polls `check` until it returns `Ok`, at most [`CONVERGE`]; panics
    /// with the last answer and the binary's log. Returns how long it took.
    fn wait<T>(&mut self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> Duration {
        let start = Instant::now();
        loop {
            self.assert_running(what);
            let last = match check() {
                Ok(_) => return start.elapsed(),
                Err(e) => e,
            };
            if start.elapsed() > CONVERGE {
                panic!(
                    "kube-proxy did not get to {what} within {CONVERGE:?} (last: {last}); its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit within 10 s.
    fn terminate(&mut self) {
        let child = self.child.as_mut().expect("kube-proxy runs");
        // `kill -TERM <pid>` names only our own child (std's kill is SIGKILL)
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid} failed ({status})");
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "kube-proxy did not exit within 10 s of SIGTERM; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = None;
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary's `kubeproxy_sync_proxy_rules_last_timestamp_seconds` for
/// IPv4 (0 before the first successful sync), from `/metrics` in `ns`.
fn last_sync(ns: &Netns) -> Result<f64, String> {
    let response = ns
        .run(|| http::get(METRICS, "/metrics", Duration::from_secs(2)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("GET /metrics: {e}"))?;
    response
        .body
        .lines()
        .filter(|l| l.starts_with(LAST_SYNC_METRIC) && l.contains("ip_family=\"IPv4\""))
        .find_map(|l| l.split_whitespace().last()?.parse().ok())
        .ok_or_else(|| format!("no {LAST_SYNC_METRIC} for IPv4 in /metrics"))
}

/// Ok once a sync completed after `after` (a [`last_sync`] value).
fn synced_after(ns: &Netns, after: f64) -> Result<(), String> {
    let last = last_sync(ns)?;
    if last > after {
        Ok(())
    } else {
        Err(format!(
            "last sync at {last}, waiting for one after {after}"
        ))
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `kube-proxy --cleanup` in `ns`: `Err(its output)` when it fails.
fn cleanup_run(ns: &Netns, files: &Files) -> Result<(), String> {
    let output = ns
        .command(BINARY)
        .args(["--config", path(&files.config()), "--cleanup"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = format!(
        "({}){}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(log)
    }
}

/// The real servers (`ip:port`, weight) of the TCP virtual server `vip`
/// in `ns`, from `ipvsadm -Sn`; `None` when the virtual server is absent.
fn real_servers(ns: &Netns, vip: SocketAddr) -> Option<Vec<(String, u32)>> {
    let saved = run(ns, "ipvsadm", &["-S", "-n"]);
    let service = format!("-t {vip}");
    let mut found = false;
    let mut reals = Vec::new();
    for line in saved.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("-A ") && line.contains(&format!("{service} ")) {
            found = true;
        } else if line.starts_with("-a ") && line.contains(&format!("{service} ")) {
            let value = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| (*w).to_string())
            };
            let weight = value("-w").and_then(|w| w.parse().ok()).unwrap_or(0);
            reals.push((value("-r").unwrap_or_default(), weight));
        }
    }
    found.then_some(reals)
}

/// The real servers with a non-zero weight, by pod IP, or why not yet.
fn serving(ns: &Netns, vip: SocketAddr) -> Result<BTreeSet<Ipv4Addr>, String> {
    let reals = real_servers(ns, vip).ok_or_else(|| format!("no virtual server {vip}"))?;
    Ok(reals
        .iter()
        .filter(|(_, w)| *w > 0)
        .filter_map(|(r, _)| r.parse::<SocketAddr>().ok())
        .filter_map(|r| match r.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        })
        .collect())
}

/// The IPv6 real servers with a non-zero weight of `vip`, or why not yet.
fn expect_serving6(ns: &Netns, vip: SocketAddr, pods: &[&str]) -> Result<(), String> {
    let want: BTreeSet<IpAddr> = pods.iter().map(|p| IpAddr::V6(pod_ip6(p))).collect();
    let reals = real_servers(ns, vip).ok_or_else(|| format!("no virtual server {vip}"))?;
    let got: BTreeSet<IpAddr> = reals
        .iter()
        .filter(|(_, w)| *w > 0)
        .filter_map(|(r, _)| r.parse::<SocketAddr>().ok())
        .map(|r| r.ip())
        .collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("{vip} serves {got:?}, want {want:?}"))
    }
}

fn expect_serving(ns: &Netns, vip: SocketAddr, pods: &[&str]) -> Result<(), String> {
    let want: BTreeSet<Ipv4Addr> = pods.iter().map(|p| pod_ip(p)).collect();
    let got = serving(ns, vip)?;
    if got == want {
        Ok(())
    } else {
        Err(format!("{vip} serves {got:?}, want {want:?}"))
    }
}

/// [`CONNECTIONS`] connections from `from` to `to`: the set of pods that
/// answered; panics on any failure.
fn answered_by(from: &Netns, to: SocketAddr, who: &str) -> BTreeSet<String> {
    (0..CONNECTIONS)
        .map(|i| {
            connect(from, to)
                .unwrap_or_else(|e| panic!("connection {i} from {who} to {to} failed: {e}"))
                .0
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

/// The outside host: a namespace on a /24 LAN veth with the node.
fn outside(node: &Netns) -> Netns {
    let ext = Netns::new().expect("ext namespace");
    ip_batch(
        node,
        &format!(
            "link add lan0 type veth peer name eth0 netns {}\n\
             addr add {NODE_LAN_IP}/24 dev lan0\n\
             addr add {NODE_LAN_IP6}/64 dev lan0 nodad\n\
             link set lan0 up\n",
            ext.path().display()
        ),
    );
    ip_batch(
        &ext,
        &format!(
            "link set lo up\n\
             addr add {EXT_IP}/24 dev eth0\n\
             link set eth0 up\n\
             route add default via {NODE_LAN_IP}\n"
        ),
    );
    ext
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn the_binary_in_ipvs_mode_serves_manifests_follows_changes_and_cleans_up() {
    guest::require("the_binary_in_ipvs_mode_serves_manifests_follows_changes_and_cleans_up");
    assert!(
        Path::new(BINARY).exists(),
        "{BINARY} is missing: the host test carries target/<profile>/kube-proxy in"
    );
    let started = Instant::now();
    let node = Node::new(&PODS);
    add_ipv6(&node);
    let ext = outside(&node.node);
    for (web, _) in &PODS[1..] {
        node.serve_tcp(web, TARGET_PORT);
        node.serve_tcp_on(web, SocketAddr::from((pod_ip6(web), TARGET_PORT)));
    }
    let (client, _) = node.pod("client");
    let cluster = SocketAddr::from((CLUSTER_IP, PORT));
    let node_port_lan = SocketAddr::from((NODE_LAN_IP, NODE_PORT));
    let cluster6 = SocketAddr::from((CLUSTER_IP6, PORT));
    let files = Files::new();
    files.service();
    files.slice(&["web-a", "web-b"]);
    files.slice6(&["web-a", "web-b"]);

    // 1. start: a first sync, /healthz answers 200, and both virtual
    // servers carry a and b
    let mut kp = KubeProxy::start(&node.node, &files);
    let first = kp.wait("a healthy first sync", || {
        synced_after(&node.node, 0.0)?;
        node.node
            .run(|| http::get(HEALTHZ, "/healthz", Duration::from_secs(2)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("GET /healthz: {e}"))
            .and_then(|r| match r.status {
                200 => Ok(()),
                s => Err(format!("/healthz answered {s}")),
            })?;
        expect_serving(&node.node, cluster, &["web-a", "web-b"])?;
        expect_serving(&node.node, node_port_lan, &["web-a", "web-b"])?;
        expect_serving6(&node.node, cluster6, &["web-a", "web-b"])
    });
    let links = run(
        &node.node,
        "ip",
        &["-o", "addr", "show", "dev", "kube-ipvs0"],
    );
    assert!(
        links.contains(&format!("{CLUSTER_IP}/32")),
        "the ClusterIP is bound to kube-ipvs0: {links}"
    );
    assert!(
        links.contains(&format!("{CLUSTER_IP6}/128")),
        "the IPv6 ClusterIP is bound to kube-ipvs0 too: {links}"
    );
    let ab = set(&["web-a", "web-b"]);
    assert_eq!(answered_by(client, cluster, "the client pod"), ab);
    // dual-stack: the IPv6 ClusterIP through the IPv6 backend
    assert_eq!(answered_by(client, cluster6, "the client pod (IPv6)"), ab);
    assert_eq!(answered_by(&ext, node_port_lan, "outside"), ab);
    assert_eq!(answered_by(client, node_port_lan, "the client pod"), ab);
    // from outside through a node port: masqueraded to the node's address
    // on the pods' side, so replies come back through the node
    let (_, peer) = connect(&ext, node_port_lan).unwrap();
    assert_eq!(
        peer,
        std::net::IpAddr::V4(guest::NODE_POD_GATEWAY),
        "an outside client's node-port traffic is masqueraded to the node's address\n\
         iptables-legacy:\n{}\niptables-nft:\n{}\nipsets:\n{}\nlog:\n{}",
        run(&node.node, "iptables-legacy-save", &[]),
        run(&node.node, "iptables-nft-save", &[]),
        run(&node.node, "ipset", &["list"]),
        kp.log()
    );

    // 2. the slice's file rewritten: a out, c in
    let before = last_sync(&node.node).unwrap();
    files.slice(&["web-b", "web-c"]);
    let change = kp.wait("web-b and web-c serving after the slice changed", || {
        synced_after(&node.node, before)?;
        expect_serving(&node.node, cluster, &["web-b", "web-c"])?;
        expect_serving(&node.node, node_port_lan, &["web-b", "web-c"])
    });
    let bc = set(&["web-b", "web-c"]);
    assert_eq!(answered_by(client, cluster, "the client pod"), bc);
    assert_eq!(answered_by(&ext, node_port_lan, "outside"), bc);

    // 3. the Service and its slice removed: no virtual server, no answer
    let before = last_sync(&node.node).unwrap();
    files.remove("20-endpointslice-web-1.yaml");
    files.remove("21-endpointslice-web-6.yaml");
    files.remove("10-service-web.yaml");
    let removal = kp.wait("the virtual servers removed", || {
        synced_after(&node.node, before)?;
        for vip in [cluster, node_port_lan, cluster6] {
            if real_servers(&node.node, vip).is_some() {
                return Err(format!("{vip} is still a virtual server"));
            }
        }
        Ok(())
    });
    for (from, to, who) in [
        (client, cluster, "the client pod"),
        (&ext, node_port_lan, "outside"),
    ] {
        let answer = connect(from, to);
        assert!(
            answer.is_err(),
            "a connection from {who} to the removed Service's {to} failed, got {answer:?}"
        );
    }

    // 4. stop, then --cleanup removes every trace of the ipvs mode
    kp.terminate();
    assert!(
        run(&node.node, "ip", &["link", "show"]).contains("kube-ipvs0"),
        "kube-ipvs0 stays after SIGTERM (only --cleanup removes it)"
    );
    // The iptables and ipvs modes share chains (`KUBE-PROXY-FIREWALL`, ...):
    // whichever cleanup runs first may find a chain still referenced by the
    // other's rules; `--cleanup` retries such failures after every other
    // mode's cleanup, so one run must leave nothing.
    cleanup_run(&node.node, &files)
        .unwrap_or_else(|log| panic!("kube-proxy --cleanup failed:\n{log}"));
    let vs = run(&node.node, "ipvsadm", &["-S", "-n"]);
    assert!(
        vs.trim().is_empty(),
        "virtual servers left after --cleanup:\n{vs}"
    );
    let links = run(&node.node, "ip", &["link", "show"]);
    assert!(
        !links.contains("kube-ipvs0"),
        "kube-ipvs0 left after --cleanup:\n{links}"
    );
    let sets = run(&node.node, "ipset", &["list", "-n"]);
    assert!(
        !sets.lines().any(|s| s.starts_with("KUBE-")),
        "ipsets left after --cleanup:\n{sets}"
    );
    for save in [
        "iptables-legacy-save",
        "iptables-nft-save",
        "ip6tables-legacy-save",
        "ip6tables-nft-save",
    ] {
        let rules = run(&node.node, save, &[]);
        assert!(
            !rules.contains("KUBE-"),
            "{save}: KUBE-* chains or rules left after --cleanup:\n{rules}"
        );
    }
    println!(
        "kube-proxy binary in ipvs mode: first sync served after {first:?}, endpoint change \
         programmed after {change:?}, Service removal after {removal:?}; whole test {:?}",
        started.elapsed()
    );
}
