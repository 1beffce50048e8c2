//! The rules that link built-in chains to kube-proxy's chains.

use crate::names::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_POSTROUTING,
    KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};

/// One jump from a built-in chain into one of ours; ensured (prepended) on
/// every full sync, removed on cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    /// The table.
    pub table: &'static str,
    /// The built-in chain holding the rule.
    pub from: &'static str,
    /// Our chain.
    pub to: &'static str,
    /// The comment (`None`: kubelet's uncommented rules).
    pub comment: Option<&'static str>,
    /// Extra matches before the comment.
    pub extra: &'static [&'static str],
}

const NEW: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];

/// Upstream's `iptablesJumpChains`, in its order.
pub const JUMPS: &[Jump] = &[
    jump(
        "filter",
        "INPUT",
        KUBE_EXTERNAL_SERVICES,
        "kubernetes externally-visible service portals",
        NEW,
    ),
    jump(
        "filter",
        "FORWARD",
        KUBE_EXTERNAL_SERVICES,
        "kubernetes externally-visible service portals",
        NEW,
    ),
    jump(
        "filter",
        "INPUT",
        KUBE_NODEPORTS,
        "kubernetes health check service ports",
        &[],
    ),
    jump(
        "filter",
        "FORWARD",
        KUBE_SERVICES,
        "kubernetes service portals",
        NEW,
    ),
    jump(
        "filter",
        "OUTPUT",
        KUBE_SERVICES,
        "kubernetes service portals",
        NEW,
    ),
    jump(
        "filter",
        "FORWARD",
        KUBE_FORWARD,
        "kubernetes forwarding rules",
        &[],
    ),
    jump(
        "filter",
        "INPUT",
        KUBE_PROXY_FIREWALL,
        "kubernetes load balancer firewall",
        NEW,
    ),
    jump(
        "filter",
        "OUTPUT",
        KUBE_PROXY_FIREWALL,
        "kubernetes load balancer firewall",
        NEW,
    ),
    jump(
        "filter",
        "FORWARD",
        KUBE_PROXY_FIREWALL,
        "kubernetes load balancer firewall",
        NEW,
    ),
    jump(
        "nat",
        "OUTPUT",
        KUBE_SERVICES,
        "kubernetes service portals",
        &[],
    ),
    jump(
        "nat",
        "PREROUTING",
        KUBE_SERVICES,
        "kubernetes service portals",
        &[],
    ),
    jump(
        "nat",
        "POSTROUTING",
        KUBE_POSTROUTING,
        "kubernetes postrouting rules",
        &[],
    ),
];

/// Upstream's duplicates of kubelet's `KUBE-FIREWALL` jumps: ensured, but
/// not removed on cleanup (kubelet owns an identical copy).
pub const KUBELET_JUMPS: &[Jump] = &[
    Jump {
        table: "filter",
        from: "INPUT",
        to: KUBE_FIREWALL,
        comment: None,
        extra: &[],
    },
    Jump {
        table: "filter",
        from: "OUTPUT",
        to: KUBE_FIREWALL,
        comment: None,
        extra: &[],
    },
];

const fn jump(
    table: &'static str,
    from: &'static str,
    to: &'static str,
    comment: &'static str,
    extra: &'static [&'static str],
) -> Jump {
    Jump {
        table,
        from,
        to,
        comment: Some(comment),
        extra,
    }
}

impl Jump {
    /// The rule's arguments (what follows `-I CHAIN`).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = self.extra.iter().map(|s| (*s).to_string()).collect();
        if let Some(comment) = self.comment {
            args.extend(["-m", "comment", "--comment", comment].map(String::from));
        }
        args.extend(["-j".to_string(), self.to.to_string()]);
        args
    }
}

/// The jumps a full sync ensures: all of upstream's, plus kubelet's
/// `KUBE-FIREWALL` ones.
pub fn ensured() -> impl Iterator<Item = &'static Jump> {
    JUMPS.iter().chain(KUBELET_JUMPS)
}
