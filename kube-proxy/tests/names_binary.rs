//! The two name bugs, through the real binary in a network namespace, in
//! iptables and nftables modes, fed by one manifest file:
//!
//! - a Service whose name holds a double quote once made `iptables-restore`
//!   refuse the whole input (and `nft` the whole transaction): now it is
//!   rejected with one error naming the object and the field, and every
//!   other Service of the same file is programmed;
//! - a Service with 63-character namespace and name and no endpoints once
//!   made `nft` refuse the whole transaction (its element comment was over
//!   128 characters): now it is programmed (its ClusterIP is rejected).
//!
//! Proof by real connections: through a valid Service to a listener in the
//! namespace, and a refused connection to the no-endpoint Service.
//!
//! Needs root, iproute2, iptables and nftables; skips with the reason
//! otherwise, and fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[allow(dead_code)] // the helpers of e2e_netns.rs; this file uses a few
mod e2e;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
use proxy_core::{IpFamily, ProxyMode};

use e2e::files::{HEALTHZ_ADDRESS, METRICS_ADDRESS};
use e2e::process::KubeProxyProcess;

/// The node's address, on `eth0` in the namespace.
const NODE_IP: &str = "10.0.0.1";
/// Where the valid Services' endpoint listens.
const ENDPOINT_PORT: u16 = 8080;

fn tools_present() -> Result<(), String> {
    check_tool("ip", &["-V"], "iproute2")?;
    check_tool("iptables-restore", &["--version"], "iptables")?;
    check_tool("nft", &["--version"], "nftables")
}

fn long(prefix: &str) -> String {
    let mut s = prefix.to_string();
    while s.len() < 63 {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s
}

/// One manifest file: a Node, the quoted-name Service, the long no-endpoint
/// Service, and two valid Services with the node itself as endpoint.
fn manifest() -> String {
    let service = |ns: &str, name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{namespace: '{ns}', name: '{name}'}}\n\
             spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: {ENDPOINT_PORT}}}]\n"
        )
    };
    let slice = |ns: &str, name: &str, endpoints: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{namespace: '{ns}', name: '{name}-1', labels: {{kubernetes.io/service-name: '{name}'}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {ENDPOINT_PORT}}}]\n\
             endpoints: [{endpoints}]\n"
        )
    };
    let here = format!("{{addresses: [{NODE_IP}], nodeName: node-a}}");
    let (long_ns, long_name) = (long("namespace-"), long("service-"));
    [
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: node-a}}\n\
             status: {{addresses: [{{type: InternalIP, address: {NODE_IP}}}]}}\n"
        ),
        service("ns", "api", "172.30.0.10"),
        slice("ns", "api", &here),
        service("ns", "we\"b", "172.30.0.11"),
        service(&long_ns, &long_name, "172.30.0.12"),
        slice(&long_ns, &long_name, ""),
        service("ns", "web", "172.30.0.13"),
        slice("ns", "web", &here),
    ]
    .join("---\n")
}

fn config_yaml(mode: ProxyMode) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: {mode}\nhostnameOverride: node-a\n\
         healthzBindAddress: {HEALTHZ_ADDRESS}\nmetricsBindAddress: {METRICS_ADDRESS}\n\
         conntrack: {{maxPerCore: 0}}\n"
    )
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ip(ns: &Netns, args: &[&str]) {
    let status = ns.command("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?} failed");
}

/// A node namespace: `lo` up, `eth0` (a veth: this kernel may have no
/// `dummy`) with the node address and the route the ClusterIPs use.
fn node() -> Netns {
    let ns = Netns::new().unwrap();
    ip(&ns, &["link", "set", "lo", "up"]);
    ip(
        &ns,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ],
    );
    ip(
        &ns,
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"],
    );
    ip(&ns, &["link", "set", "eth0", "up"]);
    ip(&ns, &["link", "set", "eth1", "up"]);
    ip(&ns, &["route", "add", "172.30.0.0/16", "dev", "eth0"]);
    ns
}

/// Connects to `to` from inside `ns`; returns the echoed greeting, or the
/// error kind.
fn connect(ns: &Netns, to: &str) -> Result<String, ErrorKind> {
    let to: SocketAddr = to.parse().unwrap();
    ns.run(|| {
        let mut stream =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.kind())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(|e| e.kind())?;
        Ok(reply)
    })
    .unwrap()
}

fn binary_programs_valid_services_next_to_bad_and_long_names(mode: ProxyMode) {
    let dir = TempDir(
        std::env::temp_dir().join(format!("kube-proxy-names-{mode}-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.0.join("manifests")).unwrap();
    std::fs::write(dir.0.join("manifests/objects.yaml"), manifest()).unwrap();
    std::fs::write(dir.0.join("config.yaml"), config_yaml(mode)).unwrap();

    let ns = node();
    let listener = ns
        .run(|| TcpListener::bind((NODE_IP, ENDPOINT_PORT)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"hello from the endpoint");
        }
    });

    let (config, manifests) = (dir.0.join("config.yaml"), dir.0.join("manifests"));
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--manifests",
        manifests.to_str().unwrap(),
    ];
    let mut process = KubeProxyProcess::start(&ns, &args, &dir.0.join("run.log")).unwrap();
    process
        .wait_synced(&ns, IpFamily::V4, Duration::from_secs(20))
        .unwrap();
    let log = process.log();

    // One clear error, naming the object and the field.
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{mode}: one error expected:\n{log}");
    assert!(
        errors[0].contains("Service ns/we\\\"b: invalid metadata.name:")
            && errors[0].contains("object ignored"),
        "{mode}: {}",
        errors[0]
    );

    // Both valid Services carry real connections; the no-endpoint one is refused.
    for vip in ["172.30.0.10:80", "172.30.0.13:80"] {
        assert_eq!(
            connect(&ns, vip).as_deref(),
            Ok("hello from the endpoint"),
            "{mode}: through {vip}\n{log}"
        );
    }
    assert_eq!(
        connect(&ns, "172.30.0.12:80"),
        Err(ErrorKind::ConnectionRefused),
        "{mode}: the long-named Service without endpoints is rejected"
    );
    let status = process.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{mode}: exit {status}\n{}", process.log());
}

#[test]
fn iptables_mode_programs_valid_services_next_to_bad_and_long_names() {
    if !privileged_or_skip_with(
        "iptables_mode_programs_valid_services_next_to_bad_and_long_names",
        tools_present,
    ) {
        return;
    }
    binary_programs_valid_services_next_to_bad_and_long_names(ProxyMode::Iptables);
}

#[test]
fn nftables_mode_programs_valid_services_next_to_bad_and_long_names() {
    if !privileged_or_skip_with(
        "nftables_mode_programs_valid_services_next_to_bad_and_long_names",
        tools_present,
    ) {
        return;
    }
    binary_programs_valid_services_next_to_bad_and_long_names(ProxyMode::Nftables);
}
