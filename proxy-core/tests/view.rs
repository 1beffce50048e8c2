//! `NodeView`: order, lookups, per-service ranges, cheap clones, and the
//! property the change tracker relies on: updating the services that changed
//! gives the same view as building it afresh.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::{Value, json};

use proxy_core::{
    IpFamily, NodeInfo, NodeView, Protocol, ServiceKey, ServicePortName, ServiceTopology,
};

const NODE: &str = "node-a";

/// Service `ns/name` with `ports` TCP ports named `p0`, `p1`, ... (listed in
/// reverse, to check the view sorts them).
fn svc(name: &str, n: usize, ports: usize) -> K8sService {
    let ports: Vec<Value> = (0..ports)
        .rev()
        .map(|p| json!({"name": format!("p{p}"), "port": 80 + p, "protocol": "TCP"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": format!("172.30.{}.{}", n / 200, n % 200 + 1), "ports": ports},
    }))
    .unwrap()
}

/// Slice of `ns/name` with `endpoints` endpoints; endpoint `i` is local when
/// `i % 3 == local_phase`.
fn slice(name: &str, n: usize, endpoints: usize, local_phase: usize) -> EndpointSlice {
    let eps: Vec<Value> = (0..endpoints)
        .map(|i| {
            json!({
                "addresses": [format!("10.{}.{}.{}", n / 200, n % 200, i + 1)],
                "nodeName": if i % 3 == local_phase { NODE } else { "node-b" },
            })
        })
        .collect();
    let ports: Vec<Value> = (0..3)
        .map(|p| json!({"name": format!("p{p}"), "port": 8080 + p, "protocol": "TCP"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": eps,
    }))
    .unwrap()
}

fn name(n: usize) -> String {
    format!("svc-{n:03}")
}

fn build(topo: &ServiceTopology) -> NodeView {
    NodeView::build(topo, NodeInfo::named(NODE).shared(), IpFamily::V4)
}

fn world(services: usize) -> ServiceTopology {
    let mut topo = ServiceTopology::new();
    for n in 0..services {
        let _ = topo.apply_service(&svc(&name(n), n, 1 + n % 3));
        let _ = topo.apply_endpoint_slice(&slice(&name(n), n, n % 5, n % 3));
    }
    topo
}

#[test]
fn ports_are_sorted_and_found() {
    let topo = world(300);
    let view = build(&topo);
    let names: Vec<ServicePortName> = view.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(view.len(), (0..300).map(|n| 1 + n % 3).sum::<usize>());
    assert_eq!(view.iter().len(), view.len());
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    for n in &names {
        assert_eq!(&view.get(n).unwrap().port.name, n);
    }
    assert!(
        view.get(&ServicePortName::new("ns", "svc-999", "p0", Protocol::Tcp))
            .is_none()
    );
    assert!(
        view.get(&ServicePortName::new("ns", "svc-001", "p0", Protocol::Udp))
            .is_none()
    );
}

#[test]
fn service_ports_is_exactly_one_service() {
    let mut topo = ServiceTopology::new();
    for (n, s) in ["a", "a-b", "ab", "b"].iter().enumerate() {
        let _ = topo.apply_service(&svc(s, n, 2));
    }
    let view = build(&topo);
    let key = ServiceKey::new("ns", "a");
    let ports: Vec<String> = view
        .service_ports(&key)
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(ports, ["ns/a:p0", "ns/a:p1"]);
    assert_eq!(view.service_ports(&ServiceKey::new("ns", "zzz")).count(), 0);
    assert_eq!(view.service_ports(&ServiceKey::new("aa", "a")).count(), 0);
}

#[test]
fn clones_are_independent() {
    let mut topo = world(300);
    let original = build(&topo);
    let mut clone = original.clone();
    assert_eq!(clone, original);
    let _ = topo.apply_endpoint_slice(&slice(&name(150), 150, 4, 0));
    clone.update_service(&topo, &ServiceKey::new("ns", name(150)));
    assert_ne!(clone, original);
    assert_eq!(clone, build(&topo));
    assert_eq!(original, build(&world(300)));
}

#[test]
fn local_ready_endpoints_counts_unique_ips_over_the_services_ports() {
    let mut topo = ServiceTopology::new();
    let _ = topo.apply_service(&svc("a", 1, 3));
    // Endpoints 1 and 4 are local; the service has three ports.
    let _ = topo.apply_endpoint_slice(&slice("a", 1, 6, 1));
    let view = build(&topo);
    let key = ServiceKey::new("ns", "a");
    assert_eq!(view.local_ready_endpoints(&key), 2);
    for (_, port) in view.service_ports(&key) {
        assert_eq!(port.local_ready, 2);
    }
    assert_eq!(view.endpoint_count(), 18);
}

#[derive(Debug, Clone)]
enum Op {
    Service {
        n: usize,
        ports: usize,
    },
    Slice {
        n: usize,
        endpoints: usize,
        phase: usize,
    },
    DeleteService(usize),
    DeleteSlice(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..400usize;
    prop_oneof![
        (n.clone(), 1..4usize).prop_map(|(n, ports)| Op::Service { n, ports }),
        (n.clone(), 0..6usize, 0..3usize).prop_map(|(n, endpoints, phase)| Op::Slice {
            n,
            endpoints,
            phase
        }),
        n.clone().prop_map(Op::DeleteService),
        n.prop_map(Op::DeleteSlice),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Applying changes one service at a time to a clone of the old view
    /// gives exactly the view built from scratch, with chunk splits and
    /// merges along the way.
    #[test]
    fn partial_updates_equal_a_fresh_build(ops in prop::collection::vec(op(), 1..120)) {
        let mut topo = world(300);
        let mut view = build(&topo);
        for op in ops {
            let changed: Vec<ServiceKey> = match op {
                Op::Service { n, ports } => topo.apply_service(&svc(&name(n), n, ports)).changed,
                Op::Slice { n, endpoints, phase } => {
                    topo.apply_endpoint_slice(&slice(&name(n), n, endpoints, phase)).changed
                }
                Op::DeleteService(n) => topo.delete_service("ns", &name(n)).into_iter().collect(),
                Op::DeleteSlice(n) => topo.delete_endpoint_slice("ns", &format!("{}-1", name(n))).into_iter().collect(),
            };
            let before = view.clone();
            for key in &changed {
                view.update_service(&topo, key);
            }
            let diff = proxy_core::ChangeSet::between(&before, &view, &changed);
            prop_assert_eq!(diff.is_empty(), before == view);
        }
        let fresh = build(&topo);
        prop_assert_eq!(view.len(), fresh.len());
        prop_assert!(view.iter().map(|(n, _)| n).eq(fresh.iter().map(|(n, _)| n)));
        prop_assert_eq!(view, fresh);
    }
}

#[test]
fn growing_and_shrinking_one_service_at_a_time() {
    // Starts with 10 services, grows to 500 (chunks split), shrinks to 0
    // (chunks emptied), each step checked against a fresh build.
    let mut topo = world(10);
    let mut view = build(&topo);
    for n in (10..500).rev() {
        let key = ServiceKey::new("ns", name(n));
        let _ = topo.apply_service(&svc(&name(n), n, 3));
        let _ = topo.apply_endpoint_slice(&slice(&name(n), n, 2, 0));
        view.update_service(&topo, &key);
        if n % 97 == 0 {
            assert_eq!(view, build(&topo));
        }
    }
    assert_eq!(view, build(&topo));
    assert_eq!(
        view.len(),
        490 * 3 + (0..10).map(|n| 1 + n % 3).sum::<usize>()
    );
    for n in 0..500 {
        let key = topo.delete_service("ns", &name(n)).unwrap();
        view.update_service(&topo, &key);
    }
    assert!(view.is_empty());
    assert_eq!(view.iter().len(), 0);
    assert_eq!(view, build(&topo));
}

#[test]
fn with_ports_from_takes_exactly_the_named_ports_from_the_other_view() {
    let old_topo = world(200);
    let old = build(&old_topo);
    let mut topo = world(200);
    // Changed (endpoints), deleted, and added services.
    let _ = topo.apply_endpoint_slice(&slice(&name(10), 10, 4, 1));
    let _ = topo.apply_endpoint_slice(&slice(&name(20), 20, 4, 1));
    let _ = topo.delete_service("ns", &name(30));
    let _ = topo.apply_service(&svc(&name(250), 250, 2));
    let new = NodeView::build(&topo, NodeInfo::named(NODE).shared(), IpFamily::V4);
    let differing = proxy_core::ChangeSet::all_between(&old, &new);
    let differing: Vec<ServicePortName> = differing.ports().cloned().collect();
    let p = |n: usize, port: &str| ServicePortName::new("ns", &name(n), port, Protocol::Tcp);
    assert!(differing.contains(&p(10, "p0")) && differing.contains(&p(30, "p0")));
    assert!(differing.contains(&p(250, "p1")) && !differing.contains(&p(11, "p0")));

    // Hold back the changed service 10, the deleted 30 and the new 250.
    let held = [
        p(10, "p0"),
        p(10, "p1"),
        p(30, "p0"),
        p(250, "p0"),
        p(250, "p1"),
    ];
    let composed = new.with_ports_from(&old, &held);
    for (name, _) in old.iter().chain(new.iter()) {
        let expected = if held.contains(name) {
            old.get(name)
        } else {
            new.get(name)
        };
        assert_eq!(composed.get(name), expected, "{name}");
    }
    assert!(
        composed.get(&p(30, "p0")).is_some(),
        "held at the old version"
    );
    assert!(
        composed.get(&p(250, "p0")).is_none(),
        "absent where old has none"
    );
    assert!(Arc::ptr_eq(composed.node(), new.node()));
    assert_eq!(composed.family(), new.family());
    assert!(composed.iter().map(|(n, _)| n).is_sorted());

    // Nothing named: the view itself; everything that differs: the other.
    assert_eq!(new.with_ports_from(&old, []), new);
    assert_eq!(new.with_ports_from(&old, &differing), old);
    assert_eq!(old.with_ports_from(&new, &differing), new);
    assert!(proxy_core::ChangeSet::all_between(&new, &new).is_empty());
}
