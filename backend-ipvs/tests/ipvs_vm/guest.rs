//! What guest tests share: the VM check, namespaces wired like a node with
//! pods on routed veths, and TCP servers that answer with their name.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use proxy_core::conformance::netns::Netns;

/// The variable the VM's init sets for the test binary.
pub const IN_VM_ENV: &str = "KUBE_PROXY_IPVS_VM";

/// The guest's command line for this test binary (placed at `/test/<name>`).
pub fn command_line(exe: &Path) -> Vec<String> {
    let name = exe.file_name().expect("a file name").to_string_lossy();
    vec![
        format!("/test/{name}"),
        "--ignored".into(),
        "--test-threads=1".into(),
        // the passing tests' output too: the conformance report, timings
        "--show-output".into(),
        // benchmarks boot their own VM: the guest's `bench_*` and the
        // host's `ipvs_vm_bench` (ignored too)
        "--skip".into(),
        "bench".into(),
    ]
}

/// The guest's command line for one benchmark of this test binary.
pub fn bench_command_line(exe: &Path, test: &str) -> Vec<String> {
    let name = exe.file_name().expect("a file name").to_string_lossy();
    vec![
        format!("/test/{name}"),
        "--ignored".into(),
        "--exact".into(),
        test.into(),
        "--nocapture".into(),
    ]
}

/// Panics unless this runs inside the IPVS VM.
pub fn require(test: &str) {
    assert!(
        std::env::var(IN_VM_ENV).is_ok_and(|v| v == "1"),
        "{test} runs inside the IPVS VM only; run `cargo test -p backend-ipvs --test ipvs_vm` as root"
    );
}

/// Runs `program args` in `ns` and returns its stdout; panics with its
/// stderr when it fails.
pub fn run(ns: &Netns, program: &str, args: &[&str]) -> String {
    let output = ns
        .command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs an `ip -batch` script in `ns`.
pub fn ip_batch(ns: &Netns, script: &str) {
    let output = ns
        .command("ip")
        .args(["-batch", "-"])
        .output_with_input(script.as_bytes())
        .expect("ip runs");
    assert!(
        output.status.success(),
        "ip -batch failed: {}\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a sysctl (`net/ipv4/ip_forward` style) inside `ns`.
pub fn sysctl(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    ns.run(|| std::fs::write(&path, value))
        .expect("thread in the namespace")
        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
}

/// The node's address on every pod veth.
pub const NODE_POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

/// A node namespace (forwarding on) plus one namespace per pod, each on a
/// routed veth with a /32 address (the node answers for no one else, so
/// pods reach each other only through the node).
pub struct Node {
    /// The node.
    pub node: Netns,
    /// The pods by name.
    pub pods: BTreeMap<String, (Netns, Ipv4Addr)>,
}

impl Node {
    /// A node with the named pods.
    pub fn new(pods: &[(&str, Ipv4Addr)]) -> Node {
        let node = Netns::new().expect("node namespace");
        sysctl(&node, "net/ipv4/ip_forward", "1");
        let mut node_script = String::from("link set lo up\n");
        let mut map = BTreeMap::new();
        for (i, (name, ip)) in pods.iter().enumerate() {
            let pod = Netns::new().expect("pod namespace");
            let veth = format!("veth{i}");
            node_script += &format!(
                "link add {veth} type veth peer name eth0 netns {pod}\n\
                 addr add {NODE_POD_GATEWAY}/32 dev {veth}\n\
                 link set {veth} up\n\
                 route add {ip}/32 dev {veth}\n",
                pod = pod.path().display()
            );
            map.insert((*name).to_string(), (pod, *ip));
        }
        ip_batch(&node, &node_script);
        for (pod, ip) in map.values() {
            ip_batch(
                pod,
                &format!(
                    "link set lo up\n\
                     addr add {ip}/32 dev eth0\n\
                     link set eth0 up\n\
                     route add {NODE_POD_GATEWAY}/32 dev eth0\n\
                     route add default via {NODE_POD_GATEWAY}\n"
                ),
            );
        }
        Node { node, pods: map }
    }

    /// The pod's namespace and address.
    pub fn pod(&self, name: &str) -> &(Netns, Ipv4Addr) {
        self.pods
            .get(name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Starts a TCP server in the pod on `port` that answers every
    /// connection with `"<pod> <peer IP>\n"`.
    pub fn serve_tcp(&self, name: &str, port: u16) {
        self.serve_tcp_on(name, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }

    /// [`Node::serve_tcp`] bound to `addr` (e.g. the pod's IPv6 address,
    /// next to an IPv4 wildcard server on the same port).
    pub fn serve_tcp_on(&self, name: &str, addr: SocketAddr) {
        let (ns, _) = self.pod(name);
        let listener = ns
            .run(move || TcpListener::bind(addr))
            .expect("thread in the namespace")
            .expect("bind in the pod");
        let name = name.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let peer = stream.peer_addr().map(|a| a.ip().to_string());
                let _ = writeln!(stream, "{name} {}", peer.unwrap_or_default());
            }
        });
    }
}

/// One TCP connection from `ns` to `to`: the server's answer
/// (`(name, peer IP)`), or the error.
pub fn connect(ns: &Netns, to: SocketAddr) -> std::io::Result<(String, IpAddr)> {
    ns.run(move || -> std::io::Result<(String, IpAddr)> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let mut words = reply.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let peer = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad reply {reply:?}")))?;
        Ok((name, peer))
    })?
}
