//! End to end: the real `kube-proxy` binary, fed by a manifest directory
//! and a configuration file, carries real connections inside the node
//! network namespace of a conformance scenario.
//!
//! For each mode and each scenario of [`SCENARIOS`]: the scenario's
//! [`NodeTopology`](proxy_core::conformance::netns::NodeTopology) (node,
//! pods, `lan`), its Services and EndpointSlices as YAML files, the binary
//! started inside the node namespace with `--config FILE --manifests DIR`,
//! waited for until `/metrics` shows its first sync and `/healthz` answers
//! 200, every packet of the scenario sent as real connections and compared
//! with the outcome upstream's mode gives it; then the EndpointSlice files
//! are deleted, and after the binary's next sync the packets it forwarded
//! must be rejected (the manifest watch, end to end); SIGTERM (exit 0, the
//! mode's rules left in place), then `kube-proxy --cleanup` (no table or
//! chain of any mode left).
//!
//! The scenario's node is a `kind: Node` in the manifests: the binary
//! learns the node's IPs (`nodePortAddresses: [primary]`, nftables'
//! default), pod CIDRs (`detectLocalMode: NodeCIDR`) and zone (topology
//! hints) from it, as from the API server in a cluster; see
//! `Scenario::node_object`.
//!
//! The library-level kernel tier (`kernel_harness_factory`, see
//! `backend-*/tests/`) runs the same scenarios with the backend in-process;
//! a difference here is a bug of the binary or its runtime (sources,
//! configuration, node state, sync loop).
//!
//! Needs root, iproute2, iptables and nftables; skips with the reason
//! otherwise, and fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`
//! (CI). Everything happens in anonymous namespaces the test creates.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod e2e;

use proxy_core::ProxyMode;
use proxy_core::conformance::load_scenarios;
use proxy_core::conformance::netns::{check_tool, privileged_or_skip_with};

use e2e::scenario_run::run_mode;

/// A representative subset of the conformance scenarios: ClusterIP over
/// TCP and UDP, NodePort, externalTrafficPolicy Local, no endpoints
/// (reject), load-balancer source ranges, two detect-local modes,
/// masqueradeAll and ClientIP session affinity. A mode skips those it
/// lacks the capabilities for. Three need the Node object of the
/// manifests: `nodeport-cluster` its IPs (nftables serves node ports on
/// the primary IPs), `topology-prefer-same-zone` its zone and
/// `detect-local-node-cidr` its pod CIDRs.
const SCENARIOS: &[&str] = &[
    "clusterip-tcp-udp",
    "clusterip-session-affinity",
    "nodeport-cluster",
    "nodeport-local",
    "clusterip-no-endpoints",
    "loadbalancer-source-ranges",
    "detect-local-bridge",
    "detect-local-node-cidr",
    "topology-prefer-same-zone",
    "masquerade-all",
];

/// The tools the test runs in the node namespace besides `ip`: the
/// binary's (`iptables-restore`, `nft`) and those reading what it left.
fn tools_present() -> Result<(), String> {
    check_tool("iptables-restore", &["--version"], "iptables")?;
    check_tool("iptables-save", &["--version"], "iptables")?;
    check_tool("ip6tables-save", &["--version"], "iptables")?;
    check_tool("nft", &["--version"], "nftables")
}

/// Set to `all` or to a comma-separated list of scenario names to run
/// those instead of [`SCENARIOS`] (every scenario takes ~1 s per mode).
const SCENARIOS_ENV: &str = "KUBE_PROXY_E2E_SCENARIOS";

/// The scenarios to run, and how many of them must run (not be skipped)
/// in a mode that can run `min_ran` of [`SCENARIOS`]; at least one of an
/// explicit list.
fn scenario_names(min_ran: usize) -> (Vec<String>, usize) {
    match std::env::var(SCENARIOS_ENV) {
        Ok(list) if list == "all" => (
            load_scenarios()
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            1,
        ),
        Ok(list) if !list.trim().is_empty() => (
            list.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            1,
        ),
        _ => (SCENARIOS.iter().map(ToString::to_string).collect(), min_ran),
    }
}

fn binary_carries_the_scenarios(test: &str, mode: ProxyMode, min_ran: usize) {
    if !privileged_or_skip_with(test, tools_present) {
        return;
    }
    let (names, min_ran) = scenario_names(min_ran);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = run_mode(mode, &names);
    println!("{report}");
    report.assert_passed(min_ran);
}

#[test]
fn iptables_mode_binary_carries_real_connections() {
    binary_carries_the_scenarios(
        "iptables_mode_binary_carries_real_connections",
        ProxyMode::Iptables,
        SCENARIOS.len(),
    );
}

#[test]
fn nftables_mode_binary_carries_real_connections() {
    binary_carries_the_scenarios(
        "nftables_mode_binary_carries_real_connections",
        ProxyMode::Nftables,
        SCENARIOS.len(),
    );
}

/// The userspace mode lacks source ranges (that scenario is skipped),
/// detect-local and client-IP preservation (packets whose outcome depends
/// on them are left out, masquerading is not compared); the rest must
/// pass.
#[test]
fn userspace_mode_binary_carries_real_connections() {
    binary_carries_the_scenarios(
        "userspace_mode_binary_carries_real_connections",
        ProxyMode::Userspace,
        SCENARIOS.len() - 1,
    );
}

/// Health-check node ports through the binary, in `mode`: where they
/// listen for `nodePortAddresses` unset (the mode's default), `primary`
/// and a CIDR; that they follow the host's addresses while running; that
/// a secondary Node IP change is applied in place and a primary one
/// restarts the process.
fn health_check_node_ports_follow_node_port_addresses(test: &str, mode: ProxyMode) {
    use e2e::health_check::{
        ADDED, Answer, CIDR, HealthCheckNode, LOCAL_HCNP, OTHER, PRIMARY, SECONDARY,
    };
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    if !privileged_or_skip_with(test, tools_present) {
        return;
    }
    let started = Instant::now();
    let host = [PRIMARY, SECONDARY, OTHER];
    let served = Answer::Http(200, 2);
    let rebind = Duration::from_secs(5);

    // Unset: nftables defaults to `primary`, the others to every address.
    let node = HealthCheckNode::start(mode, None, &host, "default").unwrap();
    if mode == ProxyMode::Nftables {
        node.check(&[PRIMARY], &[SECONDARY, OTHER]).unwrap();
    } else {
        node.check(&[PRIMARY, SECONDARY, OTHER, Ipv4Addr::LOCALHOST], &[])
            .unwrap();
    }
    drop(node);

    // `primary`: the Node's primary IP, once the host has it (an address
    // configured after kube-proxy started, as at boot).
    let mut node =
        HealthCheckNode::start(mode, Some(&["primary"]), &[SECONDARY, OTHER], "primary").unwrap();
    node.check(&[], &[PRIMARY, SECONDARY, OTHER]).unwrap();
    node.ip(&format!("address add {PRIMARY}/24 dev hc0\n"))
        .unwrap();
    let after = node.wait_for(PRIMARY, LOCAL_HCNP, &served, rebind).unwrap();
    println!(
        "{mode}: primary IP added to the host, served after {} ms",
        after.as_millis()
    );
    node.check(&[PRIMARY], &[SECONDARY, OTHER]).unwrap();

    // The Node's secondary IP changes: a full sync, no restart.
    let before = node.last_sync();
    node.set_node_ips(&[PRIMARY, ADDED]).unwrap();
    node.process
        .wait_synced_after(&node.ns, proxy_core::IpFamily::V4, before, rebind)
        .unwrap();
    assert!(
        node.process.is_running(),
        "a secondary IP change restarted:\n{}",
        node.process.log()
    );
    node.check(&[PRIMARY], &[SECONDARY, OTHER]).unwrap();

    // The Node's primary IP changes: the process exits to be restarted.
    node.set_node_ips(&[OTHER, PRIMARY]).unwrap();
    let status = node.process.wait_exit(rebind).unwrap();
    let log = node.process.log();
    assert!(
        !status.success() && log.contains("primary IPs"),
        "{status}:\n{log}"
    );
    drop(node);

    // A CIDR: the host's addresses inside it, following them.
    let node = HealthCheckNode::start(mode, Some(&[CIDR]), &host, "cidr").unwrap();
    node.check(&[SECONDARY], &[PRIMARY, OTHER]).unwrap();
    node.ip(&format!("address add {ADDED}/24 dev hc0\n"))
        .unwrap();
    let after = node.wait_for(ADDED, LOCAL_HCNP, &served, rebind).unwrap();
    println!(
        "{mode}: address added inside the CIDR, served after {} ms",
        after.as_millis()
    );
    let mut expected = vec![
        format!("{ADDED}:{LOCAL_HCNP}"),
        format!("{SECONDARY}:{LOCAL_HCNP}"),
    ];
    expected.sort();
    node.wait_listeners(LOCAL_HCNP, &expected, rebind).unwrap();
    node.ip(&format!("address del {SECONDARY}/24 dev hc0\n"))
        .unwrap();
    expected.retain(|l| !l.starts_with(&SECONDARY.to_string()));
    let after = node.wait_listeners(LOCAL_HCNP, &expected, rebind).unwrap();
    println!(
        "{mode}: address removed, its listener closed after {} ms",
        after.as_millis()
    );
    node.check(&[ADDED], &[PRIMARY, OTHER]).unwrap();
    drop(node);
    println!(
        "{mode}: health-check node ports checked in {} ms",
        started.elapsed().as_millis()
    );
}

#[test]
fn iptables_mode_health_check_node_ports_follow_node_port_addresses() {
    health_check_node_ports_follow_node_port_addresses(
        "iptables_mode_health_check_node_ports_follow_node_port_addresses",
        ProxyMode::Iptables,
    );
}

#[test]
fn nftables_mode_health_check_node_ports_follow_node_port_addresses() {
    health_check_node_ports_follow_node_port_addresses(
        "nftables_mode_health_check_node_ports_follow_node_port_addresses",
        ProxyMode::Nftables,
    );
}

#[test]
fn userspace_mode_health_check_node_ports_follow_node_port_addresses() {
    health_check_node_ports_follow_node_port_addresses(
        "userspace_mode_health_check_node_ports_follow_node_port_addresses",
        ProxyMode::Userspace,
    );
}
