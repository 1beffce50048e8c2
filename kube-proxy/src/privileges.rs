//! Whether this process may change the network configuration.

use proxy_core::backend::privileges::{CAP_SYS_RESOURCE, has_capability};

/// Whether a `/proc/self/uid_map` text is that of a user namespace other
/// than the initial one, which maps all 2³²-1 ids onto themselves.
fn is_user_namespace_map(uid_map: &str) -> bool {
    let identity = ["0", "0", "4294967295"];
    let mut lines = uid_map.lines().filter(|line| !line.trim().is_empty());
    let first = lines
        .next()
        .map(|line| line.split_whitespace().collect::<Vec<_>>());
    !(first.as_deref() == Some(identity.as_slice()) && lines.next().is_none())
}

/// Whether this process runs in a user namespace (a rootless container);
/// false when it cannot be told.
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| is_user_namespace_map(&map))
}

/// Why lowering `oom_score_adj` was refused, as far as can be told.
fn oom_score_adj_denial_reason() -> &'static str {
    if in_user_namespace() {
        "running in a user namespace: lowering it needs CAP_SYS_RESOURCE in the host's namespace"
    } else if !has_capability(CAP_SYS_RESOURCE) {
        "lowering it needs CAP_SYS_RESOURCE, which this process lacks"
    } else {
        "refused by the kernel or a security module"
    }
}

/// Sets `/proc/self/oom_score_adj`. A refusal is expected in a container
/// without `CAP_SYS_RESOURCE` (upstream logs it at `-v=2`): it is logged
/// at info with the likely reason. Other failures are warnings.
pub fn set_oom_score_adj(value: i32) {
    let Err(error) = std::fs::write("/proc/self/oom_score_adj", value.to_string()) else {
        return;
    };
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        let reason = oom_score_adj_denial_reason();
        tracing::info!(value, %error, reason, "cannot set oom_score_adj; keeping the inherited score");
    } else {
        tracing::warn!(value, %error, "cannot set oom_score_adj");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_user_namespace_maps_every_id_onto_itself() {
        assert!(!is_user_namespace_map("         0          0 4294967295\n"));
        assert!(is_user_namespace_map("         0     100000      65536\n"));
        assert!(is_user_namespace_map("0 0 4294967295\n1 1 1\n"));
        assert!(is_user_namespace_map(""), "an unmapped namespace");
    }
}
