//! Change tracking: `PendingChanges::prepare` and `ChangeSet::between`.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use proxy_core::changes::PendingChanges;
use proxy_core::{
    ChangeSet, IpFamily, NodeInfo, NodeView, Protocol, ServiceKey, ServicePortName, ServiceTopology,
};

fn svc(name: &str, ip: &str) -> K8sService {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "clusterIP": ip,
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "https", "port": 443, "protocol": "TCP"},
            ],
        },
    }))
    .unwrap()
}

fn slice_value(svc: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "n2"}))
        .collect();
    json!({
        "metadata": {"namespace": "ns", "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "https", "port": 8443, "protocol": "TCP"},
        ],
        "endpoints": endpoints,
    })
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

fn port(svc: &str, port: &str) -> ServicePortName {
    ServicePortName::new("ns", svc, port, Protocol::Tcp)
}

/// Two services `a` and `b`, each with two ports and one slice, synced.
struct World {
    topo: ServiceTopology,
    node: Arc<NodeInfo>,
    synced: NodeView,
    pending: PendingChanges,
}

impl World {
    fn new() -> Self {
        let mut topo = ServiceTopology::new();
        for (name, ip) in [("a", "172.30.0.1"), ("b", "172.30.0.2")] {
            let _ = topo.apply_service(&svc(name, ip));
            let _ = topo.apply_endpoint_slice(&slice(slice_value(name, &["10.0.0.1", "10.0.0.2"])));
        }
        let node = NodeInfo::named("n1").shared();
        let synced = NodeView::build(&topo, node.clone(), IpFamily::V4);
        World {
            topo,
            node,
            synced,
            pending: PendingChanges::new(),
        }
    }

    fn prepare(&self) -> (NodeView, ChangeSet) {
        self.pending.prepare(&self.topo, &self.synced, &self.node)
    }

    fn ports(changes: &ChangeSet) -> Vec<ServicePortName> {
        changes.ports().cloned().collect()
    }
}

#[test]
fn no_op_update_collapses_to_an_empty_set() {
    let mut w = World::new();
    let applied = w.topo.apply_service(&svc("a", "172.30.0.1"));
    assert!(applied.changed.is_empty());
    // Even if a source touches the service anyway, nothing differs.
    w.pending.touch(key("a"));
    w.pending.touch_all([key("b"), key("never-existed")]);
    let (view, changes) = w.prepare();
    assert!(changes.is_empty(), "{changes:?}");
    assert!(!changes.is_full());
    assert_eq!(view, w.synced);
}

#[test]
fn an_endpoint_change_names_exactly_that_services_ports() {
    let mut w = World::new();
    let applied = w
        .topo
        .apply_endpoint_slice(&slice(slice_value("a", &["10.0.0.1", "10.0.0.3"])));
    w.pending.touch_all(applied.changed);
    let (view, changes) = w.prepare();
    assert_eq!(
        World::ports(&changes),
        [port("a", "http"), port("a", "https")]
    );
    assert!(changes.contains(&port("a", "http")));
    assert!(!changes.contains(&port("b", "http")));
    assert_eq!(
        view,
        NodeView::build(&w.topo, w.node.clone(), IpFamily::V4),
        "partial equals fresh build"
    );
}

#[test]
fn a_change_to_one_port_names_only_that_port() {
    let mut w = World::new();
    let mut v = slice_value("a", &["10.0.0.1", "10.0.0.2"]);
    v["ports"][1]["port"] = json!(9443);
    let applied = w.topo.apply_endpoint_slice(&slice(v));
    w.pending.touch_all(applied.changed);
    let (_, changes) = w.prepare();
    assert_eq!(World::ports(&changes), [port("a", "https")]);
    assert_eq!(changes.len(), 1);
}

#[test]
fn a_deleted_services_ports_are_named() {
    let mut w = World::new();
    let deleted = w.topo.delete_service("ns", "b").unwrap();
    w.pending.touch(deleted);
    let (view, changes) = w.prepare();
    assert_eq!(
        World::ports(&changes),
        [port("b", "http"), port("b", "https")]
    );
    assert!(view.get(&port("b", "http")).is_none());
    assert_eq!(view.len(), 2);
}

#[test]
fn an_added_service_port_is_named() {
    let mut w = World::new();
    let applied = w.topo.apply_service(&svc("c", "172.30.0.3"));
    w.pending.touch_all(applied.changed);
    let (view, changes) = w.prepare();
    assert_eq!(
        World::ports(&changes),
        [port("c", "http"), port("c", "https")]
    );
    assert_eq!(view.len(), 6);
}

#[test]
fn pending_changes_survive_a_failed_sync() {
    let mut w = World::new();
    let applied = w
        .topo
        .apply_endpoint_slice(&slice(slice_value("b", &["10.0.0.9"])));
    w.pending.touch_all(applied.changed);
    let first = w.prepare();
    // The backend failed: nothing is cleared, `synced` stays. The next attempt
    // sees the same partial change set.
    let second = w.prepare();
    assert_eq!(first, second);
    assert_eq!(
        World::ports(&second.1),
        [port("b", "http"), port("b", "https")]
    );

    // After a success the runtime clears and adopts the view.
    w.pending.clear();
    w.synced = second.0;
    assert!(w.pending.is_empty());
    assert!(w.prepare().1.is_empty());
}

#[test]
fn a_node_change_makes_a_full_set() {
    let w = World::new();
    let mut relabelled = (*w.node).clone();
    relabelled
        .labels
        .insert("topology.kubernetes.io/zone".into(), "zone-b".into());
    let (view, changes) = w
        .pending
        .prepare(&w.topo, &w.synced, &Arc::new(relabelled.clone()));
    assert!(changes.is_full());
    assert!(
        changes.contains(&port("a", "http")),
        "a full set contains everything"
    );
    assert_eq!(view.node().as_ref(), &relabelled);

    // An equal node in another allocation is not a change.
    let same = Arc::new((*w.node).clone());
    assert!(!w.pending.prepare(&w.topo, &w.synced, &same).1.is_full());
}

#[test]
fn require_full_makes_a_full_set() {
    let mut w = World::new();
    w.pending.require_full();
    assert!(!w.pending.is_empty());
    let (view, changes) = w.prepare();
    assert!(changes.is_full());
    assert_eq!(view, w.synced);
    w.pending.clear();
    assert!(!w.pending.is_full());
}

#[test]
fn between_compares_only_the_named_services() {
    let w = World::new();
    let empty = NodeView::empty(IpFamily::V4, w.node.clone());
    let changes = ChangeSet::between(&empty, &w.synced, [&key("a")]);
    assert_eq!(
        World::ports(&changes),
        [port("a", "http"), port("a", "https")]
    );
    let changes = ChangeSet::between(&w.synced, &empty, [&key("b")]);
    assert_eq!(
        World::ports(&changes),
        [port("b", "http"), port("b", "https")]
    );
}
