//! The addresses of this host: which service addresses can be listened on,
//! and which clients are the node itself.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proxy_core::IpFamily;

use crate::error::UserspaceError;

/// The IP addresses assigned to this host, plus loopback.
///
/// A service address (ClusterIP, external IP, load-balancer IP) is served
/// only when it is one of these; a client with one of these source addresses
/// is the node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddresses {
    ips: BTreeSet<IpAddr>,
}

impl HostAddresses {
    /// A fixed set (tests, dry runs); loopback addresses always count as local.
    pub fn new(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        HostAddresses {
            ips: ips.into_iter().collect(),
        }
    }

    /// The addresses currently assigned to the host's interfaces.
    pub fn discover() -> Result<Self, UserspaceError> {
        discover_ips().map(Self::new)
    }

    /// Whether `ip` is local: loopback (all of `127.0.0.0/8` on Linux) or
    /// assigned to an interface.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.ips.contains(ip)
    }

    /// The assigned addresses of `family`, sorted.
    pub fn of_family(&self, family: IpFamily) -> impl Iterator<Item = IpAddr> + '_ {
        self.ips
            .iter()
            .copied()
            .filter(move |ip| family.contains(ip))
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
))]
fn discover_ips() -> Result<Vec<IpAddr>, UserspaceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| UserspaceError::LocalAddresses(e.into()))?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
)))]
fn discover_ips() -> Result<Vec<IpAddr>, UserspaceError> {
    // Without an interface list, only loopback is known to be local.
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_always_local() {
        let host = HostAddresses::new([]);
        assert!(host.contains(&"127.0.0.11".parse().unwrap()));
        assert!(host.contains(&"::1".parse().unwrap()));
        assert!(!host.contains(&"10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn discovered_addresses_include_loopback() {
        let host = HostAddresses::discover().unwrap();
        assert!(host.of_family(IpFamily::V4).any(|ip| ip.is_loopback()));
    }
}
