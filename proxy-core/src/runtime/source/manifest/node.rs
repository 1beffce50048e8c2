//! A `kind: Node` of a manifest file: decoded, and checked in the fields
//! kube-proxy reads, so that a mistake is reported with its field's path.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes `value` as a Node. The error names the field at fault
/// (`spec.podCIDRs[1]: ...`) when it is one kube-proxy reads (labels,
/// deletionTimestamp, podCIDR(s), taints, addresses) or the section
/// (`metadata`, `spec`, `status`) that holds it.
pub(super) fn decode_node(value: Value) -> Result<Node, String> {
    locate_type_error(&value)?;
    let node: Node = serde_json::from_value(value).map_err(|e| e.to_string())?;
    check_values(&node)?;
    Ok(node)
}

/// The value at `path` (object keys), if present and not null.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// Fails with `path: reason` if the value at `path` does not decode as `T`.
fn decodes_as<T: DeserializeOwned>(value: &Value, path: &[&str]) -> Result<(), String> {
    let Some(field) = at(value, path) else {
        return Ok(());
    };
    serde_json::from_value::<T>(field.clone())
        .map(drop)
        .map_err(|e| format!("{}: {e}", path.join(".")))
}

/// Like [`decodes_as`] for a list: each item on its own, so the error
/// names the item (`status.addresses[2]`).
fn items_decode_as<T: DeserializeOwned>(value: &Value, path: &[&str]) -> Result<(), String> {
    let Some(field) = at(value, path) else {
        return Ok(());
    };
    let name = path.join(".");
    let Value::Array(items) = field else {
        return Err(format!("{name}: must be a list"));
    };
    for (index, item) in items.iter().enumerate() {
        serde_json::from_value::<T>(item.clone()).map_err(|e| format!("{name}[{index}]: {e}"))?;
    }
    Ok(())
}

/// Finds which field a decoding error of the whole Node would be about:
/// the fields kube-proxy reads first, then their sections.
fn locate_type_error(value: &Value) -> Result<(), String> {
    decodes_as::<BTreeMap<String, String>>(value, &["metadata", "labels"])?;
    decodes_as::<Time>(value, &["metadata", "deletionTimestamp"])?;
    decodes_as::<ObjectMeta>(value, &["metadata"])?;
    decodes_as::<String>(value, &["spec", "podCIDR"])?;
    items_decode_as::<String>(value, &["spec", "podCIDRs"])?;
    items_decode_as::<Taint>(value, &["spec", "taints"])?;
    decodes_as::<NodeSpec>(value, &["spec"])?;
    items_decode_as::<NodeAddress>(value, &["status", "addresses"])?;
    decodes_as::<NodeStatus>(value, &["status"])
}

/// Checks the values kube-proxy uses: node IPs and pod CIDRs must parse,
/// and `spec.podCIDRs` holds at most one CIDR per family (as the API
/// server validates it).
fn check_values(node: &Node) -> Result<(), String> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    for (index, address) in addresses.iter().enumerate() {
        let node_ip = matches!(address.type_.as_str(), "InternalIP" | "ExternalIP");
        if node_ip && address.address.parse::<IpAddr>().is_err() {
            return Err(format!(
                "status.addresses[{index}].address: \"{}\" is not a valid IP address",
                address.address
            ));
        }
    }
    let spec = node.spec.as_ref();
    if let Some(cidr) = spec.and_then(|s| s.pod_cidr.as_deref()) {
        parse_cidr(cidr).map_err(|reason| format!("spec.podCIDR: {reason}"))?;
    }
    let cidrs = spec
        .and_then(|s| s.pod_cidrs.as_deref())
        .unwrap_or_default();
    let mut families = Vec::new();
    for (index, cidr) in cidrs.iter().enumerate() {
        let net = parse_cidr(cidr).map_err(|reason| format!("spec.podCIDRs[{index}]: {reason}"))?;
        let v4 = matches!(net, IpNet::V4(_));
        if families.contains(&v4) {
            return Err(format!(
                "spec.podCIDRs[{index}]: \"{cidr}\" is a second CIDR of its IP family (at most one per family)"
            ));
        }
        families.push(v4);
    }
    Ok(())
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .map_err(|_| format!("\"{text}\" is not a valid CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: Value) -> Result<Node, String> {
        decode_node(json)
    }

    #[test]
    fn a_good_node_decodes() {
        let node = decode(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"],
                     "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "n1"}]}
        }))
        .unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("n1"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                serde_json::json!({"metadata": {"name": "n1", "labels": {"zone": 3}}}),
                "metadata.labels: ",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": "10.0.0.0/24"}}),
                "spec.podCIDRs: must be a list",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.0.0.0/24", "10.1.0.0/24"]}}),
                "spec.podCIDRs[1]: \"10.1.0.0/24\" is a second CIDR",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.0.0/24"]}}),
                "spec.podCIDRs[0]: \"10.0.0/24\" is not a valid CIDR",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "x"}}),
                "spec.podCIDR: \"x\" is not a valid CIDR",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "status": {"addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"}, {"type": 5, "address": "10.0.0.2"}]}}),
                "status.addresses[1]: ",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "status": {"addresses": [
                    {"type": "InternalIP", "address": "10.0.0.300"}]}}),
                "status.addresses[0].address: \"10.0.0.300\" is not a valid IP address",
            ),
            (
                serde_json::json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": "yes"}}),
                "spec: ",
            ),
        ];
        for (json, expected) in cases {
            let error = decode(json.clone()).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{json}: expected {expected:?}, got {error:?}"
            );
        }
    }
}
