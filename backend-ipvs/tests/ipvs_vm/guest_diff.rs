//! `kube-proxy diff --proxy-mode ipvs`'s comparison on the real kernel: a
//! choice of the conformance suite's scenarios (persistence, a node port
//! and a ClusterIP under `Local` policy, load-balancer source ranges) synced by [`IpvsBackend`]
//! in a node namespace, then the live state read as `diff` reads it
//! (virtual servers over netlink, `ipset save`, `iptables-save`,
//! `kube-ipvs0`) and compared with [`IpvsBackend::wanted`]: equal after
//! every sync; after a real server (`ipvsadm -d`), an ipset entry (`ipset
//! del`) and a `kube-ipvs0` address (`ip addr del`) are deleted from
//! outside, exactly that damage.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use backend_ipvs::trace::live::read_live;
use backend_ipvs::wanted::{DiffStatus, PortDifference, WantedState, node_addresses};
use backend_ipvs::{IpvsBackend, SystemHost};
use proxy_core::conformance::load_scenarios;
use proxy_core::conformance::netns::NodeTopology;
use proxy_core::exec::SystemExecutor;
use proxy_core::{Backend, ChangeSet};

use crate::guest;

/// The scenarios compared.
const SCENARIOS: [&str; 3] = [
    "clusterip-session-affinity",
    "nodeport-local",
    "loadbalancer-source-ranges",
];

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
) -> (WantedState, Vec<PortDifference>) {
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
                    [PortDifference {
                        service_port: "default/web:http".into(),
                        status: DiffStatus::Different,
                        missing: vec![
                            "ipset KUBE-CLUSTER-IP 10.96.0.10,tcp:80".into(),
                            "kube-ipvs0 address 10.96.0.10".into(),
                            format!("real server tcp 10.96.0.10:80 -> {victim} weight 1"),
                        ],
                        extra: vec![],
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
