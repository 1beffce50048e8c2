//! Which capabilities this process has (Linux), to decide whether it may
//! program the kernel's network configuration.

/// `CAP_NET_ADMIN` (linux/capability.h): network configuration, netfilter.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_RESOURCE` (linux/capability.h): lowering `oom_score_adj`.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has capability `cap` in its effective set (read
/// from `/proc/self/status`; false where that cannot be read).
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| status_has_capability(&status, cap))
}

/// Whether this process has `CAP_NET_ADMIN` in its effective set.
pub fn has_net_admin() -> bool {
    has_capability(CAP_NET_ADMIN)
}

/// Whether a `/proc/<pid>/status` text has capability `cap` in `CapEff`.
pub fn status_has_capability(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| cap < 64 && caps & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::{CAP_NET_ADMIN, status_has_capability};

    #[test]
    fn reads_a_capability_from_the_effective_set() {
        let root = "Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";
        assert!(status_has_capability(root, CAP_NET_ADMIN));
        // Permitted but not effective does not count (CAP_NET_BIND_SERVICE
        // and CAP_NET_RAW only are effective here).
        let without = "CapPrm:\t0000000000003000\nCapEff:\t0000000000002400\n";
        assert!(!status_has_capability(without, CAP_NET_ADMIN));
        assert!(status_has_capability(
            "CapEff:\t0000000000001000\n",
            CAP_NET_ADMIN
        ));
        assert!(!status_has_capability("CapEff:\tgarbage\n", CAP_NET_ADMIN));
        assert!(!status_has_capability("", CAP_NET_ADMIN));
        assert!(!status_has_capability(root, 64));
    }
}
