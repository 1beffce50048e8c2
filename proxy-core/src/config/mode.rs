//! The proxy mode (`mode`) and the local-traffic detection mode
//! (`detectLocalMode`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Which dataplane kube-proxy programs (`mode` in the configuration).
///
/// The configuration's empty string means "the platform default" and is
/// represented as `None` in [`KubeProxyConfiguration::mode`](super::KubeProxyConfiguration::mode);
/// [`effective_mode`](super::KubeProxyConfiguration::effective_mode) resolves
/// it to [`ProxyMode::Iptables`], as upstream does on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// `iptables`: the Linux default.
    Iptables,
    /// `ipvs`: IPVS virtual servers plus ipsets (deprecated upstream since v1.35).
    Ipvs,
    /// `nftables`: GA upstream since v1.33.
    Nftables,
    /// `userspace`: an in-process TCP/UDP proxy. Removed upstream in v1.26;
    /// this implementation keeps it (configured by the `userspace` section).
    Userspace,
    /// `kernelspace`: Windows HNS. Parsed for compatibility; not valid on Linux.
    Kernelspace,
}

impl ProxyMode {
    /// Every mode, in declaration order.
    pub const ALL: [ProxyMode; 5] = [
        ProxyMode::Iptables,
        ProxyMode::Ipvs,
        ProxyMode::Nftables,
        ProxyMode::Userspace,
        ProxyMode::Kernelspace,
    ];

    /// The configuration name (`iptables`, `ipvs`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Nftables => "nftables",
            ProxyMode::Userspace => "userspace",
            ProxyMode::Kernelspace => "kernelspace",
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a, b, c` of the given names.
fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|m| name(*m)).collect::<Vec<_>>().join(", ")
}

impl FromStr for ProxyMode {
    type Err = Error;

    /// Parses a mode name (exact, lowercase). The error is an
    /// [`Error::Config`] for field `mode` that lists the valid values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProxyMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::config(
                    "mode",
                    format!(
                        "unknown proxy mode \"{s}\"; valid values: {}",
                        names(&ProxyMode::ALL, ProxyMode::as_str)
                    ),
                )
            })
    }
}

/// How kube-proxy tells traffic from local pods apart (`detectLocalMode`).
///
/// The configuration's empty string means "default" and is represented as
/// `None`; it resolves to [`LocalMode::ClusterCidr`], as upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LocalMode {
    /// `ClusterCIDR`: the source is inside `clusterCIDR`.
    ClusterCidr,
    /// `NodeCIDR`: the source is inside the Node's `spec.podCIDRs`.
    NodeCidr,
    /// `BridgeInterface`: the packet arrives on `detectLocal.bridgeInterface`.
    BridgeInterface,
    /// `InterfaceNamePrefix`: the packet arrives on an interface whose name
    /// starts with `detectLocal.interfaceNamePrefix`.
    InterfaceNamePrefix,
}

impl LocalMode {
    /// Every local mode, in declaration order.
    pub const ALL: [LocalMode; 4] = [
        LocalMode::ClusterCidr,
        LocalMode::NodeCidr,
        LocalMode::BridgeInterface,
        LocalMode::InterfaceNamePrefix,
    ];

    /// The configuration name (`ClusterCIDR`, `NodeCIDR`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            LocalMode::ClusterCidr => "ClusterCIDR",
            LocalMode::NodeCidr => "NodeCIDR",
            LocalMode::BridgeInterface => "BridgeInterface",
            LocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
        }
    }
}

impl fmt::Display for LocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LocalMode {
    type Err = Error;

    /// Parses a local mode name (exact case). The error is an
    /// [`Error::Config`] for field `detectLocalMode` listing the valid values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LocalMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::config(
                    "detectLocalMode",
                    format!(
                        "unsupported value \"{s}\"; supported values: {}",
                        names(&LocalMode::ALL, LocalMode::as_str)
                    ),
                )
            })
    }
}

impl Serialize for LocalMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LocalMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_mode_names_round_trip() {
        for m in ProxyMode::ALL {
            assert_eq!(m.to_string().parse::<ProxyMode>().unwrap(), m);
        }
        let err = "ipvz".parse::<ProxyMode>().unwrap_err().to_string();
        assert!(
            err.contains("mode")
                && err.contains("iptables, ipvs, nftables, userspace, kernelspace"),
            "{err}"
        );
        assert!("IPTABLES".parse::<ProxyMode>().is_err());
    }

    #[test]
    fn local_mode_names_round_trip() {
        for m in LocalMode::ALL {
            assert_eq!(m.to_string().parse::<LocalMode>().unwrap(), m);
        }
        let err = "PodCIDR".parse::<LocalMode>().unwrap_err().to_string();
        assert!(
            err.contains("detectLocalMode") && err.contains("ClusterCIDR, NodeCIDR"),
            "{err}"
        );
    }
}
