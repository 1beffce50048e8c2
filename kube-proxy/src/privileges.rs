//! Whether this process may change the network configuration.

/// `CAP_NET_ADMIN`'s bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// Whether the effective capability set holds `CAP_NET_ADMIN` (read from
/// `/proc/self/status`; false when it cannot be read).
pub fn has_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Sets `/proc/self/oom_score_adj`; failures are logged.
pub fn set_oom_score_adj(value: i32) {
    if let Err(error) = std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        tracing::warn!(value, %error, "cannot set oom_score_adj");
    }
}

/// The addresses configured on this host's interfaces (for the health-check
/// node port listeners when `nodePortAddresses` selects some of them); empty
/// when they cannot be listed.
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!("cannot list the host's addresses");
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|addr| {
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6()
                    .map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}
