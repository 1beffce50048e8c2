//! What upstream's IPVS mode installs, by name (`pkg/proxy/ipvs/proxier.go`:
//! `iptablesJumpChain`, `iptablesCleanupChains`, `ipsetInfo`,
//! `defaultDummyDevice`; `ipset.go`: the set names and `NewIPSet`).

use std::borrow::Cow;

use proxy_core::IpFamily;

/// The dummy interface every service address is bound to.
pub(crate) const DUMMY_DEVICE: &str = "kube-ipvs0";

/// A jump rule upstream prepends to a built-in chain:
/// `-t <table> -I <from> -m comment --comment <comment> -j <to>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jump {
    pub(crate) table: &'static str,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) comment: &'static str,
}

impl Jump {
    /// The rule arguments after the chain name.
    pub(crate) fn rule(&self) -> [&'static str; 6] {
        ["-m", "comment", "--comment", self.comment, "-j", self.to]
    }
}

const fn jump(
    table: &'static str,
    from: &'static str,
    to: &'static str,
    comment: &'static str,
) -> Jump {
    Jump {
        table,
        from,
        to,
        comment,
    }
}

/// Upstream's `iptablesJumpChain`, in its order.
pub(crate) const JUMPS: [Jump; 9] = [
    jump(
        "nat",
        "OUTPUT",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    jump(
        "nat",
        "PREROUTING",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    jump(
        "nat",
        "POSTROUTING",
        "KUBE-POSTROUTING",
        "kubernetes postrouting rules",
    ),
    jump(
        "filter",
        "FORWARD",
        "KUBE-FORWARD",
        "kubernetes forwarding rules",
    ),
    jump(
        "filter",
        "INPUT",
        "KUBE-NODE-PORT",
        "kubernetes health check rules",
    ),
    jump(
        "filter",
        "INPUT",
        "KUBE-PROXY-FIREWALL",
        "kube-proxy firewall rules",
    ),
    jump(
        "filter",
        "FORWARD",
        "KUBE-PROXY-FIREWALL",
        "kube-proxy firewall rules",
    ),
    jump(
        "filter",
        "INPUT",
        "KUBE-IPVS-FILTER",
        "kubernetes ipvs access filter",
    ),
    jump(
        "filter",
        "OUTPUT",
        "KUBE-IPVS-OUT-FILTER",
        "kubernetes ipvs access filter",
    ),
];

/// Upstream's `iptablesCleanupChains` as `(table, chain)`, in its order.
///
/// Most names are shared with the iptables mode, which is why the runtime
/// never runs this cleanup when starting the iptables mode.
pub(crate) const CHAINS: [(&str, &str); 11] = [
    ("nat", "KUBE-SERVICES"),
    ("nat", "KUBE-POSTROUTING"),
    ("nat", "KUBE-NODE-PORT"),
    ("nat", "KUBE-LOAD-BALANCER"),
    ("nat", "KUBE-MARK-MASQ"),
    ("filter", "KUBE-FORWARD"),
    ("filter", "KUBE-NODE-PORT"),
    ("filter", "KUBE-PROXY-FIREWALL"),
    ("filter", "KUBE-SOURCE-RANGES-FIREWALL"),
    ("filter", "KUBE-IPVS-FILTER"),
    ("filter", "KUBE-IPVS-OUT-FILTER"),
];

/// Upstream's `ipsetInfo` names (IPv4 spelling), in its order.
pub(crate) const IPSETS: [&str; 17] = [
    "KUBE-LOOP-BACK",
    "KUBE-CLUSTER-IP",
    "KUBE-EXTERNAL-IP",
    "KUBE-EXTERNAL-IP-LOCAL",
    "KUBE-LOAD-BALANCER",
    "KUBE-LOAD-BALANCER-FW",
    "KUBE-LOAD-BALANCER-LOCAL",
    "KUBE-LOAD-BALANCER-SOURCE-IP",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    "KUBE-NODE-PORT-TCP",
    "KUBE-NODE-PORT-LOCAL-TCP",
    "KUBE-NODE-PORT-UDP",
    "KUBE-NODE-PORT-LOCAL-UDP",
    "KUBE-NODE-PORT-SCTP-HASH",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
    "KUBE-HEALTH-CHECK-NODE-PORT",
    "KUBE-IPVS-IPS",
];

/// The longest ipset name the kernel accepts (`IPSET_MAXNAMELEN - 1`).
const IPSET_NAME_MAX: usize = 31;

/// The name of the set `name` (from [`IPSETS`]) in `family`: IPv6 sets
/// replace the `KUBE-` prefix with `KUBE-6-` and are cut to 31 characters,
/// as upstream's `NewIPSet` does.
pub(crate) fn ipset_name(name: &'static str, family: IpFamily) -> Cow<'static, str> {
    match (family, name.strip_prefix("KUBE-")) {
        (IpFamily::V6, Some(rest)) => {
            let mut v6 = format!("KUBE-6-{rest}");
            // The names are ASCII, so any byte index is a char boundary.
            v6.truncate(IPSET_NAME_MAX);
            Cow::Owned(v6)
        }
        _ => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_set_names_are_upstreams_and_ipv6_ones_are_prefixed_and_cut() {
        assert_eq!(
            ipset_name("KUBE-CLUSTER-IP", IpFamily::V4),
            "KUBE-CLUSTER-IP"
        );
        assert_eq!(
            ipset_name("KUBE-CLUSTER-IP", IpFamily::V6),
            "KUBE-6-CLUSTER-IP"
        );
        // 32 characters with the prefix: upstream keeps the first 31.
        assert_eq!(
            ipset_name("KUBE-NODE-PORT-LOCAL-SCTP-HASH", IpFamily::V6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        for name in IPSETS {
            assert!(name.len() <= IPSET_NAME_MAX, "{name}");
            assert!(
                ipset_name(name, IpFamily::V6).len() <= IPSET_NAME_MAX,
                "{name}"
            );
        }
    }

    #[test]
    fn every_jump_targets_a_chain_that_cleanup_deletes() {
        for j in JUMPS {
            assert!(CHAINS.contains(&(j.table, j.to)), "{j:?}");
        }
    }
}
