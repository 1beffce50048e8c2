//! `detectLocalMode` + `detectLocal` + `clusterCIDR`: how local pod traffic
//! is recognised.

use ipnet::IpNet;

use super::mode::LocalMode;
use super::net::parse_cidr;
use super::types::KubeProxyConfiguration;
use crate::error::Error;
use crate::model::IpFamily;

/// The effective local-traffic detection, from `detectLocalMode` and its
/// settings (upstream's `getLocalDetectors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectLocal {
    /// `ClusterCIDR` mode: sources inside these CIDRs (at most one per
    /// family, IPv4 first as given) are local.
    ClusterCidr(Vec<IpNet>),
    /// `NodeCIDR` mode: sources inside the Node's `spec.podCIDRs` are local.
    NodeCidr,
    /// `BridgeInterface` mode: packets arriving on this bridge are local.
    BridgeInterface(String),
    /// `InterfaceNamePrefix` mode: packets arriving on an interface with this
    /// name prefix are local.
    InterfaceNamePrefix(String),
    /// No detection: `ClusterCIDR` mode without a `clusterCIDR`. ClusterIP
    /// traffic is then masqueraded only with `masqueradeAll`.
    None,
}

/// Why a `clusterCIDR` value is invalid, or its CIDRs.
pub(super) fn parse_cluster_cidrs(value: &str) -> Result<Vec<IpNet>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() > 2 {
        return Err(format!(
            "\"{value}\" must be a single CIDR or a dual-stack pair of CIDRs (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"
        ));
    }
    let mut cidrs = Vec::with_capacity(items.len());
    for item in items {
        let Some(net) = parse_cidr(item) else {
            return Err(format!(
                "\"{item}\" must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
            ));
        };
        cidrs.push(net);
    }
    if let [a, b] = cidrs.as_slice()
        && IpFamily::of_net(a) == IpFamily::of_net(b)
    {
        return Err(format!(
            "\"{value}\" must be a single CIDR or a dual-stack pair of CIDRs, one of each family"
        ));
    }
    Ok(cidrs)
}

impl KubeProxyConfiguration {
    /// The effective `detectLocalMode`: as configured, or `ClusterCIDR`.
    pub fn effective_detect_local_mode(&self) -> LocalMode {
        self.detect_local_mode.unwrap_or(LocalMode::ClusterCidr)
    }

    /// The CIDRs of `clusterCIDR` (comma-separated; entries are trimmed;
    /// host bits are cleared, as Go's `ParseCIDR` does). Empty when unset.
    /// The error names `clusterCIDR`.
    pub fn cluster_cidrs(&self) -> Result<Vec<IpNet>, Error> {
        parse_cluster_cidrs(&self.cluster_cidr)
            .map_err(|reason| Error::config("clusterCIDR", reason))
    }

    /// The effective local-traffic detection. Errors name the field that
    /// makes it impossible (`clusterCIDR`, `detectLocal.bridgeInterface`,
    /// `detectLocal.interfaceNamePrefix`); [`validate`](Self::validate)
    /// reports the same problems.
    pub fn detect_local(&self) -> Result<DetectLocal, Error> {
        Ok(match self.effective_detect_local_mode() {
            LocalMode::ClusterCidr => {
                let cidrs = self.cluster_cidrs()?;
                if cidrs.is_empty() {
                    DetectLocal::None
                } else {
                    DetectLocal::ClusterCidr(cidrs)
                }
            }
            LocalMode::NodeCidr => DetectLocal::NodeCidr,
            LocalMode::BridgeInterface => {
                let name = &self.detect_local.bridge_interface;
                if name.is_empty() {
                    return Err(Error::config(
                        "detectLocal.bridgeInterface",
                        "must not be empty in BridgeInterface mode",
                    ));
                }
                DetectLocal::BridgeInterface(name.clone())
            }
            LocalMode::InterfaceNamePrefix => {
                let prefix = &self.detect_local.interface_name_prefix;
                if prefix.is_empty() {
                    return Err(Error::config(
                        "detectLocal.interfaceNamePrefix",
                        "must not be empty in InterfaceNamePrefix mode",
                    ));
                }
                DetectLocal::InterfaceNamePrefix(prefix.clone())
            }
        })
    }
}
