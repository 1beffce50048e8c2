//! This node: its [`NodeInfo`] for the views and its [`NodeHealth`] for
//! `/healthz`, derived from the Node object when a source delivers one.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

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
            };
        };
        info.labels = node.metadata.labels.clone().unwrap_or_default();
        let status_addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        for kind in ["InternalIP", "ExternalIP"] {
            for address in status_addresses.iter().filter(|a| a.type_ == kind) {
                match address.address.parse::<IpAddr>() {
                    Ok(ip) if !info.addresses.contains(&ip) => info.addresses.push(ip),
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(node = name, address = %address.address, "ignoring unparsable node address")
                    }
                }
            }
        }
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
        }
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
}
