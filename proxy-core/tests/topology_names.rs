//! `ServiceTopology` checks every name as the API server does: an object
//! with an invalid name is rejected with one error naming the object and
//! the field (a previous good version stays), an invalid port or endpoint
//! name drops only that port or endpoint, and the other objects go on.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use proxy_core::topology::Applied;
use proxy_core::{
    Dropped, IpFamily, NodeInfo, NodeView, ObjectKind, Protocol, ServiceKey, ServicePortName,
    ServiceTopology,
};

fn service(v: Value) -> K8sService {
    serde_json::from_value(v).unwrap()
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn svc_json(namespace: &str, name: &str, ip: &str, port_name: &str) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "clusterIP": ip,
            "ports": [{"name": port_name, "port": 80, "protocol": "TCP"}],
        },
    })
}

fn slice_json(namespace: &str, name: &str, svc: &str, port_name: &str) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node-a"}],
    })
}

/// The only error of `applied`: kind, object, field and what was dropped.
fn only_error(applied: &Applied) -> (ObjectKind, String, String, Dropped, String) {
    assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
    let e = &applied.errors[0];
    (
        e.kind,
        e.object.clone(),
        e.field.clone(),
        e.dropped,
        e.to_string(),
    )
}

fn view(topo: &ServiceTopology) -> Vec<String> {
    NodeView::build(topo, NodeInfo::named("node-a").shared(), IpFamily::V4)
        .iter()
        .map(|(name, port)| format!("{name} {}", port.cluster.len()))
        .collect()
}

#[test]
fn a_quoted_service_name_is_rejected_and_the_others_are_kept() {
    let mut topo = ServiceTopology::new();
    let good = topo.apply_service(&service(svc_json("ns", "web", "172.30.0.1", "http")));
    assert!(good.errors.is_empty(), "{:?}", good.errors);
    let bad = topo.apply_service(&service(svc_json("ns", "we\"b", "172.30.0.2", "http")));
    let (kind, object, field, dropped, text) = only_error(&bad);
    assert_eq!(kind, ObjectKind::Service);
    assert_eq!(object, "ns/we\\\"b", "the name is escaped in the error");
    assert_eq!(field, "metadata.name");
    assert_eq!(dropped, Dropped::Object);
    assert!(
        text.starts_with("Service ns/we\\\"b: invalid metadata.name: ")
            && text.contains("RFC 1123"),
        "{text}"
    );
    assert!(bad.changed.is_empty());
    let other = topo.apply_service(&service(svc_json("ns", "api", "172.30.0.3", "http")));
    assert!(other.errors.is_empty());
    assert_eq!(view(&topo), ["ns/api:http 0", "ns/web:http 0"]);
}

#[test]
fn every_invalid_service_name_is_rejected_with_its_field() {
    let long = "a".repeat(64);
    let cases = [
        ("n\ns", "web", "metadata.namespace"),
        ("NS", "web", "metadata.namespace"),
        (long.as_str(), "web", "metadata.namespace"),
        ("ns", "web\n-A KUBE-SERVICES -j ACCEPT", "metadata.name"),
        ("ns", "Web", "metadata.name"),
        ("ns", "web.x", "metadata.name"),
        ("ns", long.as_str(), "metadata.name"),
    ];
    for (ns, name, want) in cases {
        let mut topo = ServiceTopology::new();
        let applied = topo.apply_service(&service(svc_json(ns, name, "172.30.0.1", "http")));
        let (kind, _, field, dropped, _) = only_error(&applied);
        assert_eq!(
            (kind, field.as_str(), dropped),
            (ObjectKind::Service, want, Dropped::Object),
            "{ns:?}/{name:?}"
        );
        assert_eq!(topo.service_count(), 0);
    }
}

#[test]
fn an_invalid_port_name_drops_only_that_port() {
    let mut topo = ServiceTopology::new();
    let key = ServiceKey::new("ns", "web");
    let _ = topo.apply_service(&service(svc_json("ns", "web", "172.30.0.1", "http")));
    let before = topo.service(&key).cloned();
    // Same object, now with an invalid port name: only the port is dropped.
    let applied = topo.apply_service(&service(svc_json("ns", "web", "172.30.0.1", "ht\"tp")));
    let (_, object, field, dropped, _) = only_error(&applied);
    assert_eq!(
        (object.as_str(), field.as_str(), dropped),
        ("ns/web", "spec.ports[0].name", Dropped::Port)
    );
    assert_ne!(topo.service(&key).cloned(), before);
    assert!(topo.service(&key).unwrap().ports(IpFamily::V4).is_empty());
}

#[test]
fn maximum_length_names_are_accepted() {
    let ns = "n".repeat(63);
    let name = "s".repeat(63);
    let port = "p".repeat(63);
    let slice_name = format!("{}.{}", "e".repeat(126), "f".repeat(126));
    assert_eq!(slice_name.len(), 253);
    let mut topo = ServiceTopology::new();
    let applied = topo.apply_service(&service(svc_json(&ns, &name, "172.30.0.1", &port)));
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    let mut s = slice_json(&ns, &slice_name, &name, &port);
    s["endpoints"][0]["nodeName"] = json!("x".repeat(253));
    s["endpoints"][0]["hints"] = json!({"forZones": [{"name": "Z".repeat(63)}]});
    let applied = topo.apply_endpoint_slice(&slice(s));
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    let key = ServicePortName::new(&ns, &name, &port, Protocol::Tcp);
    assert_eq!(view(&topo), [format!("{key} 1")]);
    // A Service name may start with a digit (RelaxedServiceNameValidation).
    let applied = topo.apply_service(&service(svc_json("ns", "1web", "172.30.0.2", "")));
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
}

#[test]
fn invalid_slice_names_reject_the_slice() {
    let cases = [
        (
            slice_json("N", "web-1", "web", "http"),
            "metadata.namespace",
        ),
        (slice_json("ns", "web_1", "web", "http"), "metadata.name"),
        (slice_json("ns", "web\"1", "web", "http"), "metadata.name"),
        (
            slice_json("ns", "web-1", "we\"b", "http"),
            "metadata.labels[kubernetes.io/service-name]",
        ),
        (
            slice_json("ns", "web-1", &"w".repeat(64), "http"),
            "metadata.labels[kubernetes.io/service-name]",
        ),
    ];
    for (object, want) in cases {
        let mut topo = ServiceTopology::new();
        let applied = topo.apply_endpoint_slice(&slice(object.clone()));
        let (kind, _, field, dropped, _) = only_error(&applied);
        assert_eq!(
            (kind, field.as_str(), dropped),
            (ObjectKind::EndpointSlice, want, Dropped::Object),
            "{object}"
        );
        assert_eq!(topo.slice_names().count(), 0);
    }
    let mut unnamed = slice_json("ns", "x", "web", "http");
    unnamed["metadata"].as_object_mut().unwrap().remove("name");
    let applied = ServiceTopology::new().apply_endpoint_slice(&slice(unnamed));
    assert_eq!(only_error(&applied).2, "metadata.name");
}

#[test]
fn invalid_slice_port_and_endpoint_names_drop_only_them() {
    let mut topo = ServiceTopology::new();
    let mut s = slice_json("ns", "web-1", "web", "http");
    s["ports"] = json!([
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "bad name", "port": 8081, "protocol": "TCP"},
    ]);
    s["endpoints"] = json!([
        {"addresses": ["10.0.0.1"], "nodeName": "node-a"},
        {"addresses": ["10.0.0.2"], "nodeName": "node\"b"},
        {"addresses": ["10.0.0.3"], "hints": {"forZones": [{"name": "zone a"}]}},
        {"addresses": ["10.0.0.4"], "hints": {"forNodes": [{"name": "Node_4"}]}},
    ]);
    let applied = topo.apply_endpoint_slice(&slice(s));
    let got: Vec<(&str, Dropped)> = applied
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.dropped))
        .collect();
    assert_eq!(
        got,
        [
            ("ports[1].name", Dropped::Port),
            ("endpoints[1].nodeName", Dropped::Endpoint),
            ("endpoints[2].hints.forZones[0].name", Dropped::Endpoint),
            ("endpoints[3].hints.forNodes[0].name", Dropped::Endpoint),
        ]
    );
    let stored = topo.slices(&ServiceKey::new("ns", "web")).next().unwrap();
    assert_eq!(stored.ports.len(), 1);
    assert_eq!(stored.endpoints.len(), 1);
}
