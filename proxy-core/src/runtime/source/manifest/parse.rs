//! Parsing manifest files: multi-document YAML (or JSON) holding Services,
//! EndpointSlices, Nodes and `kind: List`s of them.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use crate::error::ObjectKind;

use super::node::decode_node;

/// One object of a manifest file.
// Variants differ in size; boxing would not pay for the few objects a
// manifest directory holds.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestObject {
    /// A `v1` Service.
    Service(Service),
    /// A `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A `v1` Node: the one named like this node describes it (its IPs,
    /// pod CIDRs, zone), as the Node object does in a cluster.
    Node(Node),
}

impl ManifestObject {
    /// `(kind, namespace, name)`; the namespace defaults to `default`, and
    /// is empty for a Node (cluster-scoped).
    pub fn id(&self) -> ObjectId {
        let (kind, meta) = match self {
            ManifestObject::Service(s) => (ObjectKind::Service, &s.metadata),
            ManifestObject::EndpointSlice(s) => (ObjectKind::EndpointSlice, &s.metadata),
            ManifestObject::Node(n) => (ObjectKind::Node, &n.metadata),
        };
        ObjectId {
            kind,
            namespace: namespace_of(kind, meta.namespace.as_deref()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// The namespace an object of `kind` is identified by: none for a Node
/// (cluster-scoped, a `metadata.namespace` is ignored), else the given one
/// or `default`.
fn namespace_of(kind: ObjectKind, namespace: Option<&str>) -> String {
    match kind {
        ObjectKind::Node => String::new(),
        ObjectKind::Service | ObjectKind::EndpointSlice => {
            namespace.unwrap_or("default").to_string()
        }
    }
}

/// A manifest object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    /// Its kind.
    pub kind: ObjectKind,
    /// Its namespace (`default` when unset; empty for a Node).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl ObjectId {
    fn sort_key(&self) -> (u8, &str, &str) {
        let kind = match self.kind {
            ObjectKind::Service => 0,
            ObjectKind::EndpointSlice => 1,
            ObjectKind::Node => 2,
        };
        (kind, &self.namespace, &self.name)
    }
}

impl PartialOrd for ObjectId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// What is wrong with one object of a file (the rest of the file is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    /// The object, as far as it could be identified (`Service ns/name`,
    /// or `document 3` / `document 3 item 2`).
    pub object: String,
    /// The object's identity when kind and name could be read: its last
    /// good version is kept.
    pub id: Option<ObjectId>,
    /// What is wrong.
    pub reason: String,
}

/// A parsed file: its good objects and the objects it could not use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedManifests {
    /// Good objects, in file order.
    pub objects: Vec<ManifestObject>,
    /// One entry per unusable object.
    pub errors: Vec<ObjectError>,
}

/// Parses the text of one manifest file. A YAML syntax error fails the
/// whole file (`Err`, with the parser's line and column); an unusable object
/// is reported in [`ParsedManifests::errors`] and the others are kept.
/// Kinds other than Service, EndpointSlice, Node and List are skipped with an
/// error entry.
pub fn parse_manifests(text: &str) -> Result<ParsedManifests, String> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut parsed = ParsedManifests::default();
    for (index, document) in documents.into_iter().enumerate() {
        let label = format!("document {}", index + 1);
        if document.is_null() {
            continue;
        }
        if document
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
        {
            match document.get("items") {
                Some(Value::Array(items)) => {
                    for (item_index, item) in items.iter().enumerate() {
                        object(
                            item.clone(),
                            format!("{label} item {}", item_index + 1),
                            &mut parsed,
                        );
                    }
                }
                Some(Value::Null) | None => {}
                Some(_) => parsed.errors.push(ObjectError {
                    object: label,
                    id: None,
                    reason: "items must be a list".to_string(),
                }),
            }
        } else {
            object(document, label, &mut parsed);
        }
    }
    Ok(parsed)
}

fn object(value: Value, label: String, parsed: &mut ParsedManifests) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let (object_kind, expected_api) = match kind.as_str() {
        "Service" => (ObjectKind::Service, "v1"),
        "EndpointSlice" => (ObjectKind::EndpointSlice, "discovery.k8s.io/v1"),
        "Node" => (ObjectKind::Node, "v1"),
        "" => {
            parsed.errors.push(ObjectError {
                object: label,
                id: None,
                reason: "kind is missing".to_string(),
            });
            return;
        }
        other => {
            let namespace = namespace.unwrap_or("default");
            parsed.errors.push(ObjectError {
                object: format!("{other} {namespace}/{name}"),
                id: None,
                reason: format!(
                    "kind {other} is not supported (only Service, EndpointSlice and Node)"
                ),
            });
            return;
        }
    };
    let id = ObjectId {
        kind: object_kind,
        namespace: namespace_of(object_kind, namespace),
        name,
    };
    let fail = |reason: String, parsed: &mut ParsedManifests| {
        parsed.errors.push(ObjectError {
            object: if id.name.is_empty() {
                format!("{label} ({kind})")
            } else {
                id.to_string()
            },
            id: (!id.name.is_empty()).then(|| id.clone()),
            reason,
        });
    };
    if id.name.is_empty() {
        fail("metadata.name is missing".to_string(), parsed);
        return;
    }
    if api_version != expected_api {
        fail(
            format!("apiVersion must be {expected_api}, not \"{api_version}\""),
            parsed,
        );
        return;
    }
    let result = match object_kind {
        ObjectKind::Service => serde_json::from_value(value)
            .map(ManifestObject::Service)
            .map_err(|e| e.to_string()),
        ObjectKind::EndpointSlice => serde_json::from_value(value)
            .map(ManifestObject::EndpointSlice)
            .map_err(|e| e.to_string()),
        ObjectKind::Node => decode_node(value).map(ManifestObject::Node),
    };
    match result {
        Ok(object) => parsed.objects.push(object),
        Err(reason) => fail(reason, parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_and_lists() {
        let text = r#"
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec: {clusterIP: 172.30.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
  endpoints: [{addresses: [10.0.0.1]}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: junk}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: bad}
  addressType: 7
  endpoints: "no"
"#;
        let parsed = parse_manifests(text).unwrap();
        let ids: Vec<String> = parsed.objects.iter().map(|o| o.id().to_string()).collect();
        assert_eq!(ids, ["Service ns/a", "EndpointSlice default/a-1"]);
        assert_eq!(parsed.errors.len(), 2, "{:?}", parsed.errors);
        assert!(parsed.errors[0].reason.contains("ConfigMap"));
        assert_eq!(parsed.errors[1].object, "EndpointSlice default/bad");
        assert!(parsed.errors[1].id.is_some());
    }

    #[test]
    fn nodes_are_cluster_scoped_and_errors_name_the_field() {
        let text = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a, namespace: ignored}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDRs: [10.244.2.0/33]}
---
apiVersion: v2
kind: Node
metadata: {name: node-c}
"#;
        let parsed = parse_manifests(text).unwrap();
        let ids: Vec<String> = parsed.objects.iter().map(|o| o.id().to_string()).collect();
        assert_eq!(ids, ["Node node-a"]);
        assert_eq!(parsed.errors.len(), 2, "{:?}", parsed.errors);
        assert_eq!(parsed.errors[0].object, "Node node-b");
        assert_eq!(
            parsed.errors[0].reason,
            "spec.podCIDRs[0]: \"10.244.2.0/33\" is not a valid CIDR"
        );
        assert!(
            parsed.errors[0].id.is_some(),
            "its last good version is kept"
        );
        assert_eq!(parsed.errors[1].reason, "apiVersion must be v1, not \"v2\"");
    }

    #[test]
    fn syntax_error_fails_the_file() {
        assert!(parse_manifests("kind: Service\nmetadata: {name: [\n").is_err());
    }
}
