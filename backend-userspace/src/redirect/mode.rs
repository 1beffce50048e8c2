//! [`RedirectMode`]: whether VIP traffic is captured with nftables redirect
//! rules, and how the automatic choice is made.

use proxy_core::exec::nft::Nft;

/// Whether the backend installs nftables redirect rules for ClusterIPs,
/// external IPs and load-balancer IPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedirectMode {
    /// On when the process can program nftables: `CAP_NET_ADMIN` in its
    /// effective set and an `nft` program on `PATH`. Decided when the
    /// backend is built.
    Auto,
    /// Always on (the sync fails if `nft` cannot be run).
    On,
    /// Never: only node ports and VIPs assigned to this host are served.
    /// The default: a library user opts in to kernel rules.
    #[default]
    Off,
}

impl RedirectMode {
    /// Whether redirect rules are to be used, probing the process for
    /// [`RedirectMode::Auto`].
    pub fn enabled(self) -> bool {
        match self {
            RedirectMode::On => true,
            RedirectMode::Off => false,
            RedirectMode::Auto => can_program_nftables(),
        }
    }
}

/// Whether this process may program nftables: `CAP_NET_ADMIN` is effective
/// and `nft` is on `PATH`.
pub fn can_program_nftables() -> bool {
    proxy_core::backend::privileges::has_net_admin() && Nft::default().is_installed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_modes_do_not_probe() {
        assert!(RedirectMode::On.enabled());
        assert!(!RedirectMode::Off.enabled());
    }
}
