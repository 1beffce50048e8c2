//! [`WatchScope`]: which nf_tables objects are ours, per proxy mode.

use crate::config::ProxyMode;
use crate::model::IpFamily;

use super::message::{NFPROTO_IPV4, NFPROTO_IPV6, ObjectChange, ObjectKind};

/// The nftables mode's table, in families `ip` and `ip6`.
const NFTABLES_TABLE: &str = "kube-proxy";
/// The iptables tables our `KUBE-*` chains live in (as `iptables-nft`
/// programs them: nf_tables tables of family `ip` / `ip6`). `mangle` holds
/// the canary chain.
const XTABLES_TABLES: [&str; 3] = ["nat", "filter", "mangle"];
/// The prefix of every chain the iptables and ipvs modes own.
const CHAIN_PREFIX: &str = "KUBE-";

/// What the watcher reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchScope {
    /// nftables mode: anything in table `kube-proxy` (families ip / ip6).
    Nftables {
        /// The families served.
        families: Vec<IpFamily>,
    },
    /// iptables and ipvs modes through `iptables-nft`: in tables `nat`,
    /// `filter`, `mangle` (families ip / ip6), a deleted table or `KUBE-*`
    /// chain, and any rule added to or deleted from a `KUBE-*` chain or
    /// jumping to one (the jumps from the built-in chains). With
    /// `iptables-legacy` nothing is announced and polling remains.
    Xtables {
        /// The families served.
        families: Vec<IpFamily>,
    },
}

impl WatchScope {
    /// The scope of `mode`, `None` when the mode has no nf_tables state the
    /// watcher can tell apart from its own writes (userspace: its `nft`
    /// processes are spawned by the `nftables` crate, whose pids are not
    /// recorded; kernelspace: Windows).
    pub(crate) fn for_mode(mode: ProxyMode, families: Vec<IpFamily>) -> Option<Self> {
        match mode {
            ProxyMode::Nftables => Some(WatchScope::Nftables { families }),
            ProxyMode::Iptables | ProxyMode::Ipvs => Some(WatchScope::Xtables { families }),
            ProxyMode::Userspace | ProxyMode::Kernelspace => None,
        }
    }

    /// The families served.
    pub(crate) fn families(&self) -> &[IpFamily] {
        match self {
            WatchScope::Nftables { families } | WatchScope::Xtables { families } => families,
        }
    }

    /// The family whose dataplane `change` touches, if it is ours.
    pub(crate) fn concerns(&self, change: &ObjectChange) -> Option<IpFamily> {
        let family = match change.family {
            NFPROTO_IPV4 => IpFamily::V4,
            NFPROTO_IPV6 => IpFamily::V6,
            _ => return None,
        };
        if !self.families().contains(&family) {
            return None;
        }
        let ours = match self {
            WatchScope::Nftables { .. } => {
                // A new empty table of our name is harmless; anything else
                // in it is a change.
                change.table == NFTABLES_TABLE
                    && !(change.kind == ObjectKind::Table && change.added)
            }
            WatchScope::Xtables { .. } => {
                let is_ours = |chain: &str| chain.starts_with(CHAIN_PREFIX);
                XTABLES_TABLES.contains(&change.table.as_str())
                    && match change.kind {
                        ObjectKind::Table => !change.added,
                        // A new chain is empty; a deleted one of ours matters.
                        ObjectKind::Chain => {
                            !change.added && change.chain.as_deref().is_some_and(is_ours)
                        }
                        ObjectKind::Rule => {
                            change.chain.as_deref().is_some_and(is_ours)
                                || change.jumps_to.iter().any(|c| is_ours(c))
                        }
                        ObjectKind::Other => false,
                    }
            }
        };
        ours.then_some(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(family: u8, added: bool, kind: ObjectKind, table: &str) -> ObjectChange {
        ObjectChange {
            family,
            added,
            kind,
            table: table.to_string(),
            chain: None,
            jumps_to: Vec::new(),
        }
    }

    fn rule(table: &str, chain: &str, jumps: &[&str]) -> ObjectChange {
        ObjectChange {
            chain: Some(chain.to_string()),
            jumps_to: jumps.iter().map(|s| s.to_string()).collect(),
            ..change(NFPROTO_IPV4, false, ObjectKind::Rule, table)
        }
    }

    #[test]
    fn nftables_mode_watches_its_table_in_the_served_families() {
        let scope = WatchScope::for_mode(ProxyMode::Nftables, vec![IpFamily::V4])
            .unwrap_or_else(|| unreachable!());
        let del = change(NFPROTO_IPV4, false, ObjectKind::Table, "kube-proxy");
        assert_eq!(scope.concerns(&del), Some(IpFamily::V4));
        let elem = change(NFPROTO_IPV4, false, ObjectKind::Other, "kube-proxy");
        assert_eq!(scope.concerns(&elem), Some(IpFamily::V4));
        let added_rule = ObjectChange {
            added: true,
            ..rule("kube-proxy", "services", &[])
        };
        assert_eq!(scope.concerns(&added_rule), Some(IpFamily::V4));
        // Not served, not ours, a new empty table, another family kind.
        let v6 = change(NFPROTO_IPV6, false, ObjectKind::Table, "kube-proxy");
        assert_eq!(scope.concerns(&v6), None);
        assert_eq!(
            scope.concerns(&change(NFPROTO_IPV4, false, ObjectKind::Table, "firewalld")),
            None
        );
        assert_eq!(
            scope.concerns(&change(NFPROTO_IPV4, true, ObjectKind::Table, "kube-proxy")),
            None
        );
        assert_eq!(
            scope.concerns(&change(1, false, ObjectKind::Table, "kube-proxy")),
            None
        );
    }

    #[test]
    fn iptables_mode_watches_kube_chains_and_the_jumps_to_them() {
        let scope = WatchScope::for_mode(ProxyMode::Iptables, vec![IpFamily::V4, IpFamily::V6])
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            scope.concerns(&rule("nat", "KUBE-SERVICES", &[])),
            Some(IpFamily::V4)
        );
        assert_eq!(
            scope.concerns(&rule("nat", "PREROUTING", &["KUBE-SERVICES"])),
            Some(IpFamily::V4)
        );
        assert_eq!(
            scope.concerns(&rule("filter", "FORWARD", &["DOCKER"])),
            None,
            "someone else's jump"
        );
        assert_eq!(
            scope.concerns(&rule("raw", "KUBE-X", &[])),
            None,
            "not a table of ours"
        );
        assert_eq!(
            scope.concerns(&change(NFPROTO_IPV6, false, ObjectKind::Table, "nat")),
            Some(IpFamily::V6)
        );
        assert_eq!(
            scope.concerns(&change(NFPROTO_IPV4, true, ObjectKind::Table, "nat")),
            None
        );
        let deleted_chain = ObjectChange {
            chain: Some("KUBE-SVC-ABC".to_string()),
            ..change(NFPROTO_IPV4, false, ObjectKind::Chain, "nat")
        };
        assert_eq!(scope.concerns(&deleted_chain), Some(IpFamily::V4));
        let new_chain = ObjectChange {
            added: true,
            ..deleted_chain
        };
        assert_eq!(scope.concerns(&new_chain), None);
        let kube_proxy_table = change(NFPROTO_IPV4, false, ObjectKind::Table, "kube-proxy");
        assert_eq!(scope.concerns(&kube_proxy_table), None);
    }

    #[test]
    fn userspace_mode_is_not_watched() {
        assert_eq!(
            WatchScope::for_mode(ProxyMode::Userspace, vec![IpFamily::V4]),
            None
        );
    }
}
