//! Dropping what the proxy never reads from watched objects before they
//! are stored or forwarded.
//!
//! Every object the watchers deliver is decoded a page (500 objects) at a
//! time by the watcher and then applied one by one by the runtime's world
//! (a relist too: it keeps only the names it saw). The API server
//! sends much that the proxy never looks at: `metadata.managedFields`
//! (often larger than the object itself), `kubectl.kubernetes.io/last-
//! applied-configuration` and other annotations, owner references, and on
//! Nodes the image list, conditions and capacities. These go as each object
//! leaves the watcher's page, so only that page (at most 500 objects) ever
//! holds them.
//!
//! What stays is what the topology and the runtime read: names,
//! namespaces, labels, resourceVersions, deletion timestamps, `spec`,
//! Service `status` (load-balancer ingress), EndpointSlice endpoints and
//! ports, the EndpointSlice annotation
//! [`TRIGGER_TIME_ANNOTATION`](crate::runtime::TRIGGER_TIME_ANNOTATION), and
//! a Node's `status.addresses`.

use k8s_openapi::api::core::v1::{Node, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::runtime::TRIGGER_TIME_ANNOTATION;

/// Drops managed fields, owner references and every annotation not in
/// `keep`.
fn prune_meta(meta: &mut ObjectMeta, keep: &[&str]) {
    meta.managed_fields = None;
    meta.owner_references = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|key, _| keep.contains(&key.as_str()));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A Service keeps its metadata's names and labels, `spec` and `status`.
pub(crate) fn service(svc: &mut Service) {
    prune_meta(&mut svc.metadata, &[]);
}

/// An EndpointSlice keeps everything but managed fields, owner references
/// and annotations other than the trigger time.
pub(crate) fn endpoint_slice(slice: &mut EndpointSlice) {
    prune_meta(&mut slice.metadata, &[TRIGGER_TIME_ANNOTATION]);
}

/// A Node keeps labels, `spec` and `status.addresses`.
pub(crate) fn node(node: &mut Node) {
    prune_meta(&mut node.metadata, &[]);
    if let Some(status) = &mut node.status {
        *status = NodeStatus {
            addresses: status.addresses.take(),
            ..NodeStatus::default()
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use serde_json::json;

    fn managed() -> serde_json::Value {
        json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}}])
    }

    #[test]
    fn services_lose_managed_fields_and_annotations_only() {
        let mut svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7",
                         "labels": {"app": "web"}, "managedFields": managed(),
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}"}},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
        }))
        .unwrap();
        let before = svc.clone();
        service(&mut svc);
        assert_eq!(svc.metadata.managed_fields, None);
        assert_eq!(svc.metadata.annotations, None);
        assert_eq!(svc.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(svc.metadata.labels, before.metadata.labels);
        assert_eq!(svc.spec, before.spec);
        assert_eq!(svc.status, before.status);
    }

    #[test]
    fn slices_keep_the_trigger_time() {
        let mut slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "ns", "managedFields": managed(),
                         "labels": {"kubernetes.io/service-name": "web"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "u"}],
                         "annotations": {TRIGGER_TIME_ANNOTATION: "2026-01-02T03:04:05Z", "other": "x"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.1"]}]
        }))
        .unwrap();
        let before = slice.clone();
        endpoint_slice(&mut slice);
        assert_eq!(slice.metadata.managed_fields, None);
        assert_eq!(slice.metadata.owner_references, None);
        assert_eq!(
            slice
                .metadata
                .annotations
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [(
                TRIGGER_TIME_ANNOTATION.to_string(),
                "2026-01-02T03:04:05Z".to_string()
            )]
        );
        assert_eq!(slice.endpoints, before.endpoints);
        assert_eq!(slice.metadata.labels, before.metadata.labels);
    }

    #[test]
    fn nodes_keep_labels_spec_and_addresses() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"},
                         "managedFields": managed(), "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}],
                       "images": [{"names": ["registry/app:1"], "sizeBytes": 1}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let before = n.clone();
        node(&mut n);
        assert_eq!(n.metadata.managed_fields, None);
        assert_eq!(n.metadata.annotations, None);
        assert_eq!(n.metadata.labels, before.metadata.labels);
        assert_eq!(n.spec, before.spec);
        let status = n.status.unwrap();
        assert_eq!(
            status.addresses,
            before.status.unwrap().addresses,
            "addresses stay"
        );
        assert_eq!(status.images, None);
        assert_eq!(status.conditions, None);
    }
}
