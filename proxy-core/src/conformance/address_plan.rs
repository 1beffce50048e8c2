//! The address plan every scenario uses, so that the real-kernel tier can
//! build one topology for all of them (`proxy-core/conformance/README.md`
//! draws it).
//!
//! | what | IPv4 | IPv6 |
//! |---|---|---|
//! | node under test `node-a` (zone `zone-a`), uplink `eth0` | 10.0.0.1 | fd00::1 |
//! | its pod CIDR, bridge `cbr0` (pod veths `veth*`) | 10.244.1.0/24 (`cbr0` = .1) | fd00:244:1::/64 |
//! | `node-b` (zone `zone-b`) and its pods | 10.0.0.2, 10.244.2.0/24 | fd00::2, fd00:244:2::/64 |
//! | `node-c` (zone `zone-a`) and its pods | 10.0.0.3, 10.244.3.0/24 | fd00::3, fd00:244:3::/64 |
//! | cluster CIDR | 10.244.0.0/16 | fd00:244::/32 |
//! | external clients | 203.0.113.0/24 | 2001:db8:113::/64 |
//! | ClusterIPs | 10.96.0.0/16 | fd00:96::/112 |
//! | external IPs | 198.51.100.0/24 | 2001:db8:51::/64 |
//! | load-balancer IPs | 192.0.2.0/24 | 2001:db8:2::/64 |
//! | node ports | 30000–32767 | same |
//! | endpoint ports | 8080, 9090 (TCP, UDP, SCTP), 5353 (UDP, TCP) | same |

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::NodeInfo;

/// `topology.kubernetes.io/zone`, the label that carries a node's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The name of the node under test.
pub const NODE_NAME: &str = "node-a";
/// The zone of the node under test.
pub const NODE_ZONE: &str = "zone-a";
/// The IPv4 address of the node under test (on [`UPLINK`](super::UPLINK)).
pub const NODE_IPV4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The IPv6 address of the node under test (on [`UPLINK`](super::UPLINK)).
pub const NODE_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// The IPv4 pod CIDR of the node under test.
pub const POD_CIDR_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 1, 0), 24);
/// The IPv6 pod CIDR of the node under test.
pub const POD_CIDR_V6: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 0), 64);

/// The node under test as scenarios see it unless they override it:
/// `node-a` in `zone-a`, addresses 10.0.0.1 and fd00::1, pod CIDRs
/// 10.244.1.0/24 and fd00:244:1::/64.
pub fn node() -> NodeInfo {
    NodeInfo {
        name: NODE_NAME.to_string(),
        labels: BTreeMap::from([(ZONE_LABEL.to_string(), NODE_ZONE.to_string())]),
        addresses: vec![IpAddr::V4(NODE_IPV4), IpAddr::V6(NODE_IPV6)],
        pod_cidrs: vec![IpNet::V4(POD_CIDR_V4), IpNet::V6(POD_CIDR_V6)],
    }
}
