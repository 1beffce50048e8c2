//! This node: its [`NodeInfo`] for the views and its [`NodeHealth`] for
//! `/healthz`, derived from the Node object when a source delivers one, and
//! the settings that need what the Node says but find nothing.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::config::{DetectLocal, KubeProxyConfiguration};
use crate::model::{IpFamily, NodeInfo};

use super::observer::NodeHealth;

/// The taint the cluster autoscaler puts on a node it is about to delete;
/// `/healthz` then reports the node ineligible (KEP-3836).
pub const TAINT_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

/// What the runtime knows about its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// For the views and backends.
    pub info: Arc<NodeInfo>,
    /// For `/healthz`.
    pub health: NodeHealth,
    /// How many IPs the Node object's `status.addresses` lists; `None`
    /// without a Node object.
    listed_ips: Option<usize>,
}

/// What a change of the node asks of the runtime ([`NodeState::change_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// Nothing the views or backends use changed.
    Unchanged,
    /// Applied in place by a full sync of every family: the views carry
    /// the new [`NodeInfo`] (secondary IPs, labels, pod CIDRs that no
    /// setting uses), and what follows the views (the health-check node
    /// ports) picks it up.
    FullSync,
    /// The backends were built with what changed (a family's primary IP,
    /// or the pod CIDRs under `detectLocalMode: NodeCIDR`): like upstream's
    /// NodeManager, exit so that the restart programs it. The reason.
    Restart(String),
}

impl NodeState {
    /// The state of node `name` from its Node object, if known.
    ///
    /// `bind_ip` is the configured `bindAddress` when it names a specific
    /// address: like upstream, it then is the primary IP of its family, ahead
    /// of the Node's addresses. Addresses are ordered as upstream's
    /// `GetNodeHostIPs`: InternalIPs, then ExternalIPs.
    pub fn new(name: &str, bind_ip: Option<IpAddr>, node: Option<&Node>) -> Self {
        let mut info = NodeInfo::named(name);
        info.addresses
            .extend(bind_ip.filter(|ip| !ip.is_unspecified()));
        let Some(node) = node else {
            return NodeState {
                info: Arc::new(info),
                health: NodeHealth::default(),
                listed_ips: None,
            };
        };
        info.labels = node.metadata.labels.clone().unwrap_or_default();
        let status_addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        let mut listed = 0;
        for kind in ["InternalIP", "ExternalIP"] {
            for address in status_addresses.iter().filter(|a| a.type_ == kind) {
                match address.address.parse::<IpAddr>() {
                    Ok(ip) => {
                        listed += 1;
                        if !info.addresses.contains(&ip) {
                            info.addresses.push(ip);
                        }
                    }
                    Err(_) => {
                        tracing::warn!(node = name, address = %address.address, "ignoring unparsable node address")
                    }
                }
            }
        }
        let listed_ips = Some(listed);
        let spec = node.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        for cidr in cidrs {
            match cidr.parse() {
                Ok(net) => info.pod_cidrs.push(net),
                Err(_) => {
                    tracing::warn!(node = name, %cidr, "ignoring unparsable spec.podCIDRs entry")
                }
            }
        }
        let tainted_for_deletion = spec
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == TAINT_TO_BE_DELETED);
        NodeState {
            info: Arc::new(info),
            health: NodeHealth {
                known: true,
                deleting: node.metadata.deletion_timestamp.is_some(),
                tainted_for_deletion,
            },
            listed_ips,
        }
    }

    /// The primary IP of each family this node has one of, the primary
    /// family's first: upstream's `GetNodeHostIPs` (first InternalIP, else
    /// ExternalIP, of each family) after `bindAddress`, which takes its
    /// family's place.
    pub fn primary_ips(&self) -> Vec<IpAddr> {
        self.families()
            .into_iter()
            .filter_map(|family| self.info.primary_ip(family))
            .collect()
    }

    /// Keeps the node IPs of `previous` when the Node object is still there
    /// but lists none: upstream ignores such an update ("Failed to retrieve
    /// NodeIPs") rather than restarting without a node IP. Logged.
    pub fn keep_ips_of_unlisted(&mut self, previous: &NodeState) {
        if self.listed_ips != Some(0) || previous.info.addresses == self.info.addresses {
            return;
        }
        tracing::warn!(node = %self.info.name, kept = ?previous.info.addresses, "the Node object lists no IP in status.addresses; keeping its former IPs");
        let mut info = NodeInfo::clone(&self.info);
        info.addresses = previous.info.addresses.clone();
        self.info = Arc::new(info);
    }

    /// What the change from `self` to `new` asks of the runtime: a restart
    /// when a family's primary IP changed (appeared, went or moved; the
    /// primary family swapped), or when `watch_pod_cidrs`
    /// (`detectLocalMode: NodeCIDR`) and the pod CIDRs changed, as
    /// upstream's NodeManager; otherwise a full sync if anything of the
    /// [`NodeInfo`] changed (another IP added or removed, labels).
    pub fn change_to(&self, new: &NodeState, watch_pod_cidrs: bool) -> NodeChange {
        if self.info == new.info {
            return NodeChange::Unchanged;
        }
        let (before, after) = (self.primary_ips(), new.primary_ips());
        if before != after {
            return NodeChange::Restart(format!(
                "the primary IPs of node {} changed from {before:?} to {after:?}",
                new.info.name
            ));
        }
        if watch_pod_cidrs && self.info.pod_cidrs != new.info.pod_cidrs {
            return NodeChange::Restart(format!(
                "the pod CIDRs of node {} changed from {:?} to {:?} (detectLocalMode: NodeCIDR)",
                new.info.name, self.info.pod_cidrs, new.info.pod_cidrs
            ));
        }
        NodeChange::FullSync
    }

    /// Logs (warning) each configured setting that needs something of the
    /// node that is not known, as upstream does at start-up: a
    /// `detectLocalMode: NodeCIDR` without a pod CIDR, a `primary` in
    /// `nodePortAddresses` without a node IP, no node IP at all. `families`
    /// are the families served.
    ///
    /// Call it at start with `previous: None`, and with the former state
    /// whenever the node changes: a condition the former state already had
    /// is not logged again, so each is logged once per occurrence, never per
    /// sync.
    pub fn warn_unresolved_settings(
        &self,
        config: &KubeProxyConfiguration,
        families: &[IpFamily],
        previous: Option<&NodeState>,
    ) {
        let before = previous
            .map(|p| p.missing_node_info(config, families))
            .unwrap_or_default();
        for setting in self.missing_node_info(config, families) {
            if !before.contains(&setting) {
                match setting.family() {
                    Some(family) => {
                        tracing::warn!(node = %self.info.name, ip_family = %family, "{setting}")
                    }
                    None => tracing::warn!(node = %self.info.name, "{setting}"),
                }
            }
        }
    }

    /// The configured settings of `families` that need something of the
    /// node that is not known.
    pub(crate) fn missing_node_info(
        &self,
        config: &KubeProxyConfiguration,
        families: &[IpFamily],
    ) -> Vec<MissingNodeInfo> {
        let mut unresolved = Vec::new();
        if self.info.addresses.is_empty() {
            unresolved.push(MissingNodeInfo::NodeIp);
        }
        // An invalid configuration is reported by its validation.
        if let Ok(DetectLocal::NodeCidr) = config.detect_local() {
            unresolved.extend(
                families
                    .iter()
                    .filter(|f| self.info.pod_cidr(**f).is_none())
                    .map(|f| MissingNodeInfo::PodCidr(*f)),
            );
        }
        if let Ok(addresses) = config.node_port_addresses()
            && addresses.primary
        {
            for family in families {
                if self.info.primary_ip(*family).is_none() {
                    let other_addresses = addresses
                        .cidrs
                        .iter()
                        .any(|net| IpFamily::of_net(net) == *family);
                    unresolved.push(MissingNodeInfo::PrimaryIp {
                        family: *family,
                        other_addresses,
                    });
                }
            }
        }
        unresolved
    }

    /// The families this node has an address of, primary family first;
    /// both when nothing is known (the host decides).
    pub fn families(&self) -> Vec<IpFamily> {
        let mut families: Vec<IpFamily> = Vec::new();
        for ip in &self.info.addresses {
            let family = IpFamily::of(ip);
            if !families.contains(&family) {
                families.push(family);
            }
        }
        for family in IpFamily::ALL {
            if !families.contains(&family) {
                families.push(family);
            }
        }
        families
    }
}

/// What a configured setting needs of the node but is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingNodeInfo {
    /// No node IP at all: neither `bindAddress` nor the Node names one.
    NodeIp,
    /// `detectLocalMode: NodeCIDR`, but the Node has no pod CIDR of this
    /// family: local traffic of the family is not detected.
    PodCidr(IpFamily),
    /// `nodePortAddresses` contains `primary`, but no node IP of `family`
    /// is known; `other_addresses` when the list has CIDRs of the family.
    PrimaryIp {
        /// The family without a node IP.
        family: IpFamily,
        /// The list names other addresses of the family.
        other_addresses: bool,
    },
}

impl MissingNodeInfo {
    /// The family it is about, if one.
    fn family(&self) -> Option<IpFamily> {
        match self {
            MissingNodeInfo::NodeIp => None,
            MissingNodeInfo::PodCidr(family) | MissingNodeInfo::PrimaryIp { family, .. } => {
                Some(*family)
            }
        }
    }
}

impl fmt::Display for MissingNodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingNodeInfo::NodeIp => f.write_str(
                "No node IP is known: set bindAddress to the node's IP, or give the node's \
                 Node object status.addresses (with --manifests, a kind: Node named like this \
                 node in the manifests); node-IP-based settings resolve to nothing",
            ),
            MissingNodeInfo::PodCidr(family) => write!(
                f,
                "Detect-local-mode set to NodeCIDR, but no PodCIDR defined at node for \
                 {family}: traffic from local pods is not detected (the Node object's \
                 spec.podCIDRs sets it)"
            ),
            MissingNodeInfo::PrimaryIp {
                family,
                other_addresses,
            } => {
                write!(
                    f,
                    "nodePortAddresses contains \"primary\", but no {family} node IP is known: "
                )?;
                if *other_addresses {
                    write!(
                        f,
                        "node ports are served on {family} only on the other nodePortAddresses"
                    )
                } else {
                    write!(f, "node ports are not served on {family}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn addresses_put_internal_ips_first_and_bind_address_ahead() {
        let n = node(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "spec": {"podCIDRs": ["10.0.1.0/24", "fd00::/64"]},
            "status": {"addresses": [
                {"type": "ExternalIP", "address": "203.0.113.9"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "2001:db8::2"},
                {"type": "InternalIP", "address": "192.168.0.2"}
            ]}
        }));
        let state = NodeState::new("n1", None, Some(&n));
        let ips: Vec<String> = state
            .info
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["2001:db8::2", "192.168.0.2", "203.0.113.9"]);
        assert_eq!(state.info.zone(), "z1");
        assert_eq!(state.info.pod_cidrs.len(), 2);
        assert_eq!(state.families(), [IpFamily::V6, IpFamily::V4]);
        assert!(state.health.known && !state.health.deleting && !state.health.tainted_for_deletion);

        let bound = NodeState::new("n1", Some("192.168.1.2".parse().unwrap()), Some(&n));
        assert_eq!(
            bound.info.primary_ip(IpFamily::V4),
            Some("192.168.1.2".parse().unwrap())
        );
        assert_eq!(bound.families()[0], IpFamily::V4);
    }

    fn with_ips(internal: &[&str], cidrs: &[&str]) -> Node {
        let addresses: Vec<serde_json::Value> = internal
            .iter()
            .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip}))
            .collect();
        node(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": cidrs},
            "status": {"addresses": addresses}
        }))
    }

    fn change(before: &[&str], after: &[&str], watch_pod_cidrs: bool) -> NodeChange {
        let old = NodeState::new("n1", None, Some(&with_ips(before, &["10.0.1.0/24"])));
        let new = NodeState::new("n1", None, Some(&with_ips(after, &["10.0.1.0/24"])));
        old.change_to(&new, watch_pod_cidrs)
    }

    #[test]
    fn only_a_primary_ip_change_asks_for_a_restart() {
        let dual = ["192.168.0.2", "2001:db8::2"];
        assert_eq!(change(&dual, &dual, false), NodeChange::Unchanged);
        // Secondary IPs come and go in place.
        assert_eq!(
            change(&dual, &["192.168.0.2", "2001:db8::2", "192.168.0.3"], false),
            NodeChange::FullSync
        );
        assert_eq!(
            change(&["192.168.0.2", "192.168.0.3", "2001:db8::2"], &dual, false),
            NodeChange::FullSync
        );
        // A family's primary moved, appeared or went; the primary family swapped.
        for after in [
            &["192.168.0.3", "192.168.0.2", "2001:db8::2"][..],
            &["192.168.0.2"][..],
            &["2001:db8::2", "192.168.0.2"][..],
        ] {
            match change(&dual, after, false) {
                NodeChange::Restart(why) => {
                    assert!(why.contains("n1") && why.contains("primary IPs"), "{why}")
                }
                other => panic!("{after:?}: expected a restart, got {other:?}"),
            }
        }
        assert!(matches!(
            change(&["192.168.0.2"], &dual, false),
            NodeChange::Restart(_)
        ));
    }

    #[test]
    fn bind_address_holds_its_familys_primary_ip() {
        let bind = Some("192.168.9.9".parse().unwrap());
        let old = NodeState::new("n1", bind, Some(&with_ips(&["192.168.0.2"], &[])));
        let new = NodeState::new("n1", bind, Some(&with_ips(&["192.168.0.3"], &[])));
        assert_eq!(old.change_to(&new, false), NodeChange::FullSync);
        assert_eq!(
            old.primary_ips(),
            ["192.168.9.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn pod_cidrs_restart_only_under_node_cidr() {
        let old = NodeState::new(
            "n1",
            None,
            Some(&with_ips(&["192.168.0.2"], &["10.0.1.0/24"])),
        );
        let new = NodeState::new(
            "n1",
            None,
            Some(&with_ips(&["192.168.0.2"], &["10.0.2.0/24"])),
        );
        assert_eq!(old.change_to(&new, false), NodeChange::FullSync);
        match old.change_to(&new, true) {
            NodeChange::Restart(why) => assert!(why.contains("NodeCIDR"), "{why}"),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn a_node_listing_no_ip_keeps_the_former_ones_and_a_deleted_one_does_not() {
        let old = NodeState::new("n1", None, Some(&with_ips(&["192.168.0.2"], &[])));
        let mut unlisted = NodeState::new("n1", None, Some(&with_ips(&[], &[])));
        unlisted.keep_ips_of_unlisted(&old);
        assert_eq!(unlisted.info.addresses, old.info.addresses);
        assert_eq!(old.change_to(&unlisted, false), NodeChange::Unchanged);

        let mut deleted = NodeState::new("n1", None, None);
        deleted.keep_ips_of_unlisted(&old);
        assert!(deleted.info.addresses.is_empty());
        assert!(matches!(
            old.change_to(&deleted, false),
            NodeChange::Restart(_)
        ));
    }

    #[test]
    fn health_reports_deletion_and_autoscaler_taint() {
        let n = node(serde_json::json!({
            "metadata": {"name": "n1", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"taints": [{"key": TAINT_TO_BE_DELETED, "effect": "NoSchedule"}]}
        }));
        let state = NodeState::new("n1", Some("0.0.0.0".parse().unwrap()), Some(&n));
        assert_eq!(
            state.health,
            NodeHealth {
                known: true,
                deleting: true,
                tainted_for_deletion: true
            }
        );
        assert!(
            state.info.addresses.is_empty(),
            "unspecified bind address is not a node IP"
        );
        assert!(!NodeState::new("n1", None, None).health.known);
    }

    fn config(yaml: &str) -> KubeProxyConfiguration {
        let mut config: KubeProxyConfiguration = serde_saphyr::from_str(yaml).unwrap();
        config.apply_defaults();
        config
    }

    #[test]
    fn unresolved_settings_name_what_is_missing_per_family() {
        let both = [IpFamily::V4, IpFamily::V6];
        let nft = config("mode: nftables\ndetectLocalMode: NodeCIDR\n");
        let nothing = NodeState::new("n1", None, None);
        assert_eq!(
            nothing.missing_node_info(&nft, &both),
            [
                MissingNodeInfo::NodeIp,
                MissingNodeInfo::PodCidr(IpFamily::V4),
                MissingNodeInfo::PodCidr(IpFamily::V6),
                MissingNodeInfo::PrimaryIp {
                    family: IpFamily::V4,
                    other_addresses: false
                },
                MissingNodeInfo::PrimaryIp {
                    family: IpFamily::V6,
                    other_addresses: false
                },
            ]
        );

        let v4_only = node(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.0.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}
        }));
        let state = NodeState::new("n1", None, Some(&v4_only));
        assert_eq!(state.missing_node_info(&nft, &[IpFamily::V4]), []);
        assert_eq!(
            state.missing_node_info(&nft, &both),
            [
                MissingNodeInfo::PodCidr(IpFamily::V6),
                MissingNodeInfo::PrimaryIp {
                    family: IpFamily::V6,
                    other_addresses: false
                },
            ]
        );

        // iptables serves node ports on every local IP by default, and the
        // default detect-local mode needs no Node.
        let ipt = config("mode: iptables\n");
        assert_eq!(
            nothing.missing_node_info(&ipt, &both),
            [MissingNodeInfo::NodeIp]
        );
        let listed = config("mode: iptables\nnodePortAddresses: [primary, localhost]\n");
        assert_eq!(
            NodeState::new("n1", Some("192.168.1.2".parse().unwrap()), None)
                .missing_node_info(&listed, &both),
            [MissingNodeInfo::PrimaryIp {
                family: IpFamily::V6,
                other_addresses: true
            }]
        );
    }

    #[test]
    fn unresolved_settings_say_what_is_not_served() {
        let text = MissingNodeInfo::PrimaryIp {
            family: IpFamily::V6,
            other_addresses: false,
        }
        .to_string();
        assert!(
            text.contains("IPv6") && text.contains("not served"),
            "{text}"
        );
        let text = MissingNodeInfo::PodCidr(IpFamily::V4).to_string();
        assert!(
            text.starts_with("Detect-local-mode set to NodeCIDR, but no PodCIDR defined"),
            "{text}"
        );
        let text = MissingNodeInfo::NodeIp.to_string();
        assert!(
            text.contains("bindAddress") && text.contains("kind: Node"),
            "{text}"
        );
    }
}
