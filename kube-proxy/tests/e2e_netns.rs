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
//! `e2e::files::node_object`.
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
