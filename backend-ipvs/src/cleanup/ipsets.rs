//! Step 4: destroy upstream IPVS mode's ipsets.

use std::collections::BTreeSet;

use proxy_core::IpFamily;
use tracing::{debug, info};

use crate::error::IpvsError;
use crate::host::{Applied, Command, Host, run_checked, run_idempotent};
use crate::layout::{IPSETS, ipset_name};

/// What `ipset` prints for a missing set.
const NOT_FOUND: [&str; 1] = ["does not exist"];

/// Destroys upstream's ipsets of `family` (`KUBE-6-` names for IPv6; upstream
/// itself only destroys the IPv4 names). Runs after the iptables step: a
/// set still referenced by a rule cannot be destroyed.
///
/// `ipset list -n` tells which sets exist, so only those are touched.
/// Without `ipset` no set can be listed or destroyed, and none is assumed.
pub(crate) async fn destroy(host: &dyn Host, family: IpFamily) -> Vec<IpvsError> {
    if !host.has_program("ipset") {
        debug!("no ipset tool, no IPVS ipsets to destroy");
        return Vec::new();
    }
    let listed = match run_checked(host, Command::new("ipset", ["list", "-n"])).await {
        Ok(listed) => listed,
        Err(error) => return vec![error],
    };
    let existing: BTreeSet<&str> = listed.lines().map(str::trim).collect();
    let mut failures = Vec::new();
    let mut destroyed = 0usize;
    for name in IPSETS.into_iter().map(|name| ipset_name(name, family)) {
        if !existing.contains(name.as_ref()) {
            continue;
        }
        let command = Command::new("ipset", ["destroy", name.as_ref()]);
        match run_idempotent(host, command, &NOT_FOUND).await {
            Ok(Applied::Done) => destroyed += 1,
            Ok(Applied::NotFound) => {}
            Err(error) => failures.push(error),
        }
    }
    if destroyed > 0 {
        info!(%family, destroyed, "destroyed the IPVS ipsets");
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const LISTED: &str = "KUBE-CLUSTER-IP\nKUBE-NODE-PORT-TCP\nKUBE-6-CLUSTER-IP\n\
        KUBE-6-NODE-PORT-LOCAL-SCTP-HAS\nOTHER-SET\n";

    #[tokio::test]
    async fn ipv4_destroys_the_existing_unprefixed_sets_in_upstream_order() {
        let host = FakeHost::new()
            .with_programs(&["ipset"])
            .respond("ipset list -n", FakeHost::ok(LISTED));
        assert!(destroy(&host, IpFamily::V4).await.is_empty());
        assert_eq!(
            host.commands(),
            [
                "ipset list -n",
                "ipset destroy KUBE-CLUSTER-IP",
                "ipset destroy KUBE-NODE-PORT-TCP",
            ]
        );
    }

    #[tokio::test]
    async fn ipv6_destroys_the_prefixed_and_cut_names() {
        let host = FakeHost::new()
            .with_programs(&["ipset"])
            .respond("ipset list -n", FakeHost::ok(LISTED));
        assert!(destroy(&host, IpFamily::V6).await.is_empty());
        assert_eq!(
            host.commands(),
            [
                "ipset list -n",
                "ipset destroy KUBE-6-CLUSTER-IP",
                "ipset destroy KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
            ]
        );
    }

    #[tokio::test]
    async fn a_set_gone_meanwhile_is_fine_and_one_in_use_is_an_error() {
        let host = FakeHost::new()
            .with_programs(&["ipset"])
            .respond("ipset list -n", FakeHost::ok(LISTED))
            .respond(
                "ipset destroy KUBE-CLUSTER-IP",
                FakeHost::fail(1, "ipset v7.17: The set with the given name does not exist"),
            )
            .respond(
                "ipset destroy KUBE-NODE-PORT-TCP",
                FakeHost::fail(
                    1,
                    "ipset v7.17: Set cannot be destroyed: it is in use by a kernel component",
                ),
            );
        let failures = destroy(&host, IpFamily::V4).await;
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0]
                .to_string()
                .contains("ipset destroy KUBE-NODE-PORT-TCP")
        );
    }

    #[tokio::test]
    async fn without_ipset_nothing_runs() {
        let host = FakeHost::new();
        assert!(destroy(&host, IpFamily::V4).await.is_empty());
        assert!(host.commands().is_empty());
    }
}
