//! [`RedirectMode`]: whether VIP traffic is captured with nftables redirect
//! rules, and how the automatic choice is made.

use std::path::Path;

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

/// `CAP_NET_ADMIN` (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

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
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    has_net_admin(&status) && nft_on_path()
}

/// Whether a `/proc/<pid>/status` text has `CAP_NET_ADMIN` in `CapEff`.
fn has_net_admin(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn nft_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join("nft"))))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_is_bit_12_of_the_effective_set() {
        let root = "Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";
        assert!(has_net_admin(root));
        // CAP_NET_BIND_SERVICE (10) and CAP_NET_RAW (13) only.
        let without = "CapPrm:\t0000000000003000\nCapEff:\t0000000000002400\n";
        assert!(!has_net_admin(without));
        assert!(has_net_admin("CapEff:\t0000000000001000\n"));
        assert!(!has_net_admin("CapEff:\tgarbage\n"));
        assert!(!has_net_admin(""));
    }

    #[test]
    fn forced_modes_do_not_probe() {
        assert!(RedirectMode::On.enabled());
        assert!(!RedirectMode::Off.enabled());
    }
}
