//! The host's interface addresses.

use std::net::IpAddr;

/// The addresses configured on this host's interfaces (for the health-check
/// node port listeners when `nodePortAddresses` selects some of them).
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|addr| {
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_a_loopback_address() -> std::io::Result<()> {
        let addrs = host_addresses()?;
        assert!(addrs.iter().any(IpAddr::is_loopback), "{addrs:?}");
        Ok(())
    }
}
