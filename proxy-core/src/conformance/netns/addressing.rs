//! The fixed addresses of the topology, and small address helpers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The IPv4 ClusterIP range of the conformance scenarios
/// (`proxy-core/conformance/README.md`). Unmatched traffic into it fails
/// with `EHOSTUNREACH` in the topology.
pub const SERVICE_CIDR_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 16);

/// The IPv6 ClusterIP range of the conformance scenarios.
pub const SERVICE_CIDR_V6: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0), 112);

/// Both ClusterIP ranges.
pub fn service_cidrs() -> [IpNet; 2] {
    [IpNet::V4(SERVICE_CIDR_V4), IpNet::V6(SERVICE_CIDR_V6)]
}

/// The `lan` end of the node's uplink, the node's IPv4 default gateway
/// (link-local, so it never collides with a scenario address).
pub(crate) const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 1);
/// The node's own uplink address, its first (primary) IPv4 address on
/// `eth0`: MASQUERADE picks it, so a masqueraded packet that the node itself
/// sent from a node address is told apart from an unmasqueraded one.
pub(crate) const NODE_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 2);
/// The `lan` end of the node's uplink for IPv6, the node's IPv6 default gateway.
pub(crate) const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The node end of the uplink for IPv6 (`lan` routes IPv6 pod CIDRs and
/// VIPs through it).
pub(crate) const NODE_LINK_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
/// The pods' IPv4 gateway when a pod's address is outside every pod CIDR.
pub(crate) const FALLBACK_POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway when a pod's address is outside every pod CIDR.
pub(crate) const FALLBACK_POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// A fixed MAC for the bridge: otherwise it takes the lowest MAC of its
/// ports and changes when a pod is added, which strands the neighbour
/// entries of existing pods.
pub(crate) const BRIDGE_MAC: &str = "02:00:00:00:00:01";
/// The routing table that makes unmatched forwarded traffic fail fast.
pub(crate) const UNREACHABLE_TABLE: u32 = 100;
/// The routing table of `lan` that sends what remote endpoints answer
/// through the node.
pub(crate) const REMOTE_REPLY_TABLE: u32 = 200;
/// The priority of the per-remote-endpoint rules in `lan`.
pub(crate) const REMOTE_REPLY_RULE_PREF: u32 = 50;
/// Where `lan`'s local table moves to (from 0), behind those rules.
pub(crate) const LOCAL_RULE_PREF: u32 = 60;

/// The pod gateway of `cidr`: its first address (`10.244.1.1` for
/// `10.244.1.0/24`).
pub fn pod_gateway(cidr: IpNet) -> IpAddr {
    match cidr {
        IpNet::V4(net) => IpAddr::V4(Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))),
        IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(u128::from(net.network()).wrapping_add(1))),
    }
}

/// `ip/32` or `ip/128`.
pub(crate) fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// ` nodad` for IPv6 addresses (the flag is meaningless, and warned about,
/// for IPv4).
pub(crate) fn nodad(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() { " nodad" } else { "" }
}

/// The default route's prefix for the family of `ip`.
pub(crate) fn default_prefix(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() { "::/0" } else { "0.0.0.0/0" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_gateway_is_the_first_address_of_the_cidr() {
        let v4: IpNet = "10.244.1.0/24".parse().unwrap();
        let v6: IpNet = "fd00:10:244:1::/64".parse().unwrap();
        assert_eq!(pod_gateway(v4), "10.244.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            pod_gateway(v6),
            "fd00:10:244:1::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn service_cidrs_match_the_scenario_address_plan() {
        assert_eq!(service_cidrs()[0].to_string(), "10.96.0.0/16");
        assert_eq!(service_cidrs()[1].to_string(), "fd00:96::/112");
    }
}
