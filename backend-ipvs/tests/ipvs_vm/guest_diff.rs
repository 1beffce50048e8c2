//! `kube-proxy diff --proxy-mode ipvs`'s comparison on the real kernel: a
//! conformance scenario (a node port and a ClusterIP under `Local` policy)
//! synced by [`IpvsBackend`]
//! in a node namespace, then the live state read as `diff` reads it
//! (virtual servers over netlink, `ipset save`, `iptables-save`,
//! `kube-ipvs0`) and compared with [`IpvsBackend::wanted`]: equal after
//! every sync; after a real server (`ipvsadm -d`), an ipset entry (`ipset
//! del`) and a `kube-ipvs0` address (`ip addr del`) are deleted from
//! outside, exactly that damage. And the binary: `kube-proxy diff` equal
//! (exit 0) once the daemon has synced a manifest, then exit 1 naming the
//! real server deleted with `ipvsadm -d`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use backend_ipvs::trace::live::read_live;
use backend_ipvs::wanted::{PortDiff, Status, WantedState, node_addresses};
use backend_ipvs::{IpvsBackend, SystemHost};
use proxy_core::conformance::load_scenarios;
use proxy_core::conformance::netns::NodeTopology;
use proxy_core::exec::SystemExecutor;
use proxy_core::{Backend, ChangeSet};

use crate::guest;

/// The scenarios compared.
/// (One, to keep the tier's guest time short: the host's unit tests of
/// `backend_ipvs::wanted` compare five scenarios' listings.)
const SCENARIOS: [&str; 1] = ["nodeport-local"];

/// Runs `program args` (in the calling thread's namespace); panics with
/// its stderr when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The wanted state and the comparison with the live one, read now.
fn compare(
    rt: &tokio::runtime::Runtime,
    backend: &IpvsBackend,
    view: &proxy_core::NodeView,
    family: proxy_core::IpFamily,
) -> (WantedState, Vec<PortDiff>) {
    let wanted = backend.wanted(view, node_addresses().unwrap());
    let live = rt.block_on(read_live(family)).unwrap();
    let diff = wanted.compare(&live);
    (wanted, diff)
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn diff_is_equal_after_syncs_and_reports_exactly_the_damage() {
    guest::require("diff_is_equal_after_syncs_and_reports_exactly_the_damage");
    let started = std::time::Instant::now();
    let scenarios: Vec<_> = load_scenarios()
        .into_iter()
        .filter(|s| SCENARIOS.contains(&s.name()))
        .collect();
    assert_eq!(scenarios.len(), SCENARIOS.len(), "a scenario was renamed");
    for scenario in &scenarios {
        let ctx = scenario.context();
        let topology = NodeTopology::new(ctx).unwrap();
        let view = scenario.view();
        topology
            .node()
            .run(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let mut backend = IpvsBackend::new(
                    ctx,
                    Arc::new(SystemExecutor::default()),
                    Arc::new(SystemHost::default()),
                )
                .unwrap();
                rt.block_on(backend.sync(view, &ChangeSet::full())).unwrap();
                let (wanted, diff) = compare(&rt, &backend, view, ctx.family);
                assert_eq!(diff, [], "{}: equal after a sync", scenario.name());
                assert!(
                    wanted
                        .ports
                        .values()
                        .any(|p| p.virtual_servers.iter().any(|v| !v.reals.is_empty())),
                    "{}: a virtual server with real servers",
                    scenario.name()
                );
                if scenario.name() != "nodeport-local" {
                    return;
                }
                // damage from outside: one real server of the ClusterIP,
                // its KUBE-CLUSTER-IP entry, its kube-ipvs0 address
                let cluster = wanted.ports["default/web:http"]
                    .virtual_servers
                    .iter()
                    .find(|v| v.address.to_string() == "10.96.0.10:80")
                    .expect("the ClusterIP's virtual server");
                let node_port_reals: BTreeSet<SocketAddr> = wanted.ports["default/web:http"]
                    .virtual_servers
                    .iter()
                    .filter(|v| v.address != cluster.address)
                    .flat_map(|v| v.reals.iter().map(|r| r.address))
                    .collect();
                // the remote endpoint: on the ClusterIP only (policy Local)
                let victim = cluster
                    .reals
                    .iter()
                    .map(|r| r.address)
                    .find(|a| !node_port_reals.contains(a))
                    .expect("a real server of the ClusterIP only");
                run(
                    "ipvsadm",
                    &["-d", "-t", "10.96.0.10:80", "-r", &victim.to_string()],
                );
                run("ipset", &["del", "KUBE-CLUSTER-IP", "10.96.0.10,tcp:80"]);
                run("ip", &["addr", "del", "10.96.0.10/32", "dev", "kube-ipvs0"]);
                let (_, diff) = compare(&rt, &backend, view, ctx.family);
                assert_eq!(
                    diff,
                    [PortDiff {
                        service_port: "default/web:http".into(),
                        status: Status::Different,
                        missing_rules: vec![
                            "ipset KUBE-CLUSTER-IP 10.96.0.10,tcp:80".into(),
                            "kube-ipvs0 address 10.96.0.10".into(),
                            format!("real server tcp 10.96.0.10:80 -> {victim} weight 1"),
                        ],
                        extra_rules: vec![],
                        missing_endpoints: BTreeSet::from([victim]),
                        extra_endpoints: BTreeSet::new(),
                    }],
                    "exactly the damage"
                );
                // the next sync repairs it
                rt.block_on(backend.sync(view, &ChangeSet::full())).unwrap();
                assert_eq!(compare(&rt, &backend, view, ctx.family).1, []);
            })
            .unwrap();
    }
    println!(
        "ipvs diff: {} scenarios equal after sync, damage reported exactly, in {:?}",
        scenarios.len(),
        started.elapsed()
    );
}

/// A child process killed and reaped on drop (a failing test leaves none).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kube-proxy diff` of the configuration in `dir`, in `ns`: exit code
/// and stdout.
fn binary_diff(ns: &proxy_core::conformance::netns::Netns, dir: &std::path::Path) -> (i32, String) {
    let out = ns
        .command(crate::guest_binary::BINARY)
        .arg("diff")
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--manifests")
        .arg(dir.join("manifests"))
        .output()
        .expect("kube-proxy diff runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn the_binary_diff_is_equal_after_the_daemon_syncs_and_names_a_deleted_real_server() {
    guest::require(
        "the_binary_diff_is_equal_after_the_daemon_syncs_and_names_a_deleted_real_server",
    );
    let started = std::time::Instant::now();
    let ns = proxy_core::conformance::netns::Netns::new().unwrap();
    guest::ip_batch(
        &ns,
        "link set lo up\nlink add eth0 type dummy\naddr add 192.168.60.1/24 dev eth0\nlink set eth0 up\n",
    );
    let dir = std::env::temp_dir().join(format!("kube-proxy-ipvs-diff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    std::fs::write(
        dir.join("config.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
         hostnameOverride: diff-node\nhealthzBindAddress: 127.0.0.1:10256\n\
         metricsBindAddress: 127.0.0.1:10249\ndetectLocalMode: NodeCIDR\nconntrack:\n  maxPerCore: 0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/00-node.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: diff-node\nspec:\n  podCIDRs: [10.244.1.0/24]\n\
         status:\n  addresses:\n    - type: InternalIP\n      address: 192.168.60.1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/10-service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: default\n  name: web\n\
         spec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports:\n\
         \x20   - {name: http, protocol: TCP, port: 80, targetPort: 8080}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/20-slice.yaml"),
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: default\n\
         \x20 name: web-1\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\n\
         ports:\n  - {name: http, protocol: TCP, port: 8080}\nendpoints:\n\
         \x20 - addresses: [10.244.2.10]\n    conditions: {ready: true}\n    nodeName: other\n\
         \x20 - addresses: [10.244.2.11]\n    conditions: {ready: true}\n    nodeName: other\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("kube-proxy.log")).unwrap();
    let daemon = Reaped(
        ns.command(crate::guest_binary::BINARY)
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("--manifests")
            .arg(dir.join("manifests"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kube-proxy starts"),
    );
    // equal once the daemon has synced
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut code, mut text) = binary_diff(&ns, &dir);
    while code != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
        (code, text) = binary_diff(&ns, &dir);
    }
    assert_eq!(
        code,
        0,
        "diff never equal:\n{text}\nlog:\n{}",
        std::fs::read_to_string(dir.join("kube-proxy.log")).unwrap_or_default()
    );
    assert!(text.contains("ipvs IPv4: the live state matches"), "{text}");
    // stopped (its periodic verify would repair the damage), then damaged
    drop(daemon);
    let out = ns
        .command("ipvsadm")
        .args(["-d", "-t", "10.96.0.10:80", "-r", "10.244.2.10:8080"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = binary_diff(&ns, &dir);
    assert_eq!(code, 1, "{text}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(lines[0].starts_with("ipvs IPv4: 1 of"), "{text}");
    assert_eq!(
        lines[1..4],
        [
            "DIFFERENT default/web:http",
            "endpoints not programmed: 10.244.2.10:8080",
            "- real server tcp 10.96.0.10:80 -> 10.244.2.10:8080 weight 1",
        ],
        "{text}"
    );
    println!(
        "ipvs diff (binary): equal after the daemon's sync, then the damage, in {:?}",
        started.elapsed()
    );
}
