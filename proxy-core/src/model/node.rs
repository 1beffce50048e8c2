use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::IpFamily;

/// The label that carries a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What kube-proxy knows about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// The node name (`--hostname-override`, or the host name).
    pub name: String,
    /// The node's labels, when the Node object is known.
    pub labels: BTreeMap<String, String>,
    /// The node's IPs, primary first per family (`status.addresses`
    /// InternalIP then ExternalIP, or `--bind-address`).
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs`.
    pub pod_cidrs: Vec<IpNet>,
}

impl NodeInfo {
    /// A node known only by name.
    pub fn named(name: impl Into<String>) -> Self {
        NodeInfo {
            name: name.into(),
            ..NodeInfo::default()
        }
    }

    /// The zone from the `topology.kubernetes.io/zone` label (`""` when unset).
    pub fn zone(&self) -> &str {
        self.labels.get(ZONE_LABEL).map_or("", String::as_str)
    }

    /// The primary IP of `family`, if known.
    pub fn primary_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|ip| family.contains(ip))
    }

    /// The pod CIDR of `family`, if known.
    pub fn pod_cidr(&self, family: IpFamily) -> Option<IpNet> {
        self.pod_cidrs
            .iter()
            .copied()
            .find(|n| IpFamily::of_net(n) == family)
    }

    /// Shared handle.
    pub fn shared(self) -> Arc<NodeInfo> {
        Arc::new(self)
    }
}
