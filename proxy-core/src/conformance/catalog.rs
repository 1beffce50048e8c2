//! The scenario files embedded in the crate, so a downstream crate's tests
//! run them without the source tree.

use crate::error::Error;

use super::scenario::Scenario;

macro_rules! scenario_files {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/scenarios/", $file)))),*]
    };
}

/// Every embedded scenario file as `(file name, contents)`, in run order.
/// Scenarios with the same family, node and configuration are next to each
/// other, so the suite can chain partial syncs between them.
pub const SCENARIO_FILES: &[(&str, &str)] = scenario_files![
    "clusterip-basic.yaml",
    "clusterip-multiport.yaml",
    "clusterip-tcp-udp.yaml",
    "clusterip-sctp.yaml",
    "clusterip-no-endpoints.yaml",
    "clusterip-unready-ignored.yaml",
    "clusterip-only-unready-rejected.yaml",
    "clusterip-hairpin.yaml",
    "clusterip-session-affinity.yaml",
    "internal-local.yaml",
    "internal-local-no-local-endpoints.yaml",
    "terminating-fallback-cluster.yaml",
    "terminating-fallback-local.yaml",
    "topology-prefer-same-zone.yaml",
    "topology-prefer-same-node.yaml",
    "topology-hints-incomplete.yaml",
    "topology-hints-other-zone.yaml",
    "detect-local-cluster-cidr.yaml",
    "nodeport-cluster.yaml",
    "nodeport-udp.yaml",
    "nodeport-local.yaml",
    "nodeport-local-no-local-endpoints.yaml",
    "nodeport-no-endpoints.yaml",
    "long-names.yaml",
    "nodeport-localhost.yaml",
    "external-ip-cluster.yaml",
    "external-ip-local.yaml",
    "external-ip-no-endpoints.yaml",
    "loadbalancer-cluster.yaml",
    "loadbalancer-source-ranges.yaml",
    "loadbalancer-source-ranges-node.yaml",
    "loadbalancer-source-range-zero.yaml",
    "loadbalancer-local.yaml",
    "loadbalancer-local-no-local-endpoints.yaml",
    "loadbalancer-ipmode-proxy.yaml",
    "detect-local-none.yaml",
    "nodeport-local-no-detector.yaml",
    "detect-local-node-cidr.yaml",
    "detect-local-bridge.yaml",
    "detect-local-interface-prefix.yaml",
    "masquerade-all.yaml",
    "nodeport-addresses.yaml",
    "nodeport-localhost-disabled.yaml",
    "ipv6-clusterip.yaml",
    "ipv6-nodeport.yaml",
    "ipv6-local-policy.yaml",
];

/// Parses every embedded scenario.
pub fn try_load_scenarios() -> Result<Vec<Scenario>, Error> {
    SCENARIO_FILES
        .iter()
        .map(|(file, text)| Scenario::from_yaml(file, text))
        .collect()
}

/// Parses every embedded scenario.
///
/// # Panics
///
/// If an embedded file does not load: that is a bug of this crate, caught
/// by its own tests (`tests/conformance_oracle.rs`).
pub fn load_scenarios() -> Vec<Scenario> {
    match try_load_scenarios() {
        Ok(s) => s,
        Err(e) => panic!("embedded conformance scenario does not load: {e}"),
    }
}
