//! 1,000 valid services plus one malformed object of every kind of error:
//! every valid service reaches the NodeView, every bad object yields exactly
//! one error naming it and the field, and a bad update never removes the
//! version accepted before.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use proxy_core::{
    Dropped, IpFamily, NodeInfo, NodeView, ObjectKind, Protocol, ServicePortName, ServiceTopology,
};

const SERVICES: usize = 1000;

fn svc_value(name: &str, n: usize) -> Value {
    let ip = format!("172.30.{}.{}", n / 250, n % 250 + 1);
    json!({
        "metadata": {"namespace": "scale", "name": name},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30000 + (n % 2000) as i32}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": format!("198.51.{}.{}", n / 250, n % 250 + 1)}]}},
    })
}

fn slice_value(name: &str, svc: &str, n: usize) -> Value {
    let endpoints: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "addresses": [format!("10.{}.{}.{}", n / 250, n % 250, i + 1)],
                "conditions": {"ready": true},
                "nodeName": if i == 0 { "node-a" } else { "node-b" },
            })
        })
        .collect();
    json!({
        "metadata": {"namespace": "scale", "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn service(v: Value) -> K8sService {
    serde_json::from_value(v).unwrap()
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

type Mutation = fn(&mut Value);

/// Every kind of Service error: (field, what is dropped, how to break it).
fn service_breakages() -> Vec<(&'static str, Dropped, Mutation)> {
    vec![
        ("spec.clusterIPs[0]", Dropped::Object, |v| {
            v["spec"]["clusterIPs"] = json!(["172.30.999.1"]);
        }),
        ("spec.clusterIPs[1]", Dropped::Object, |v| {
            v["spec"]["clusterIPs"] = json!([v["spec"]["clusterIP"].clone(), "172.31.0.1"]);
        }),
        ("spec.internalTrafficPolicy", Dropped::Object, |v| {
            v["spec"]["internalTrafficPolicy"] = json!("Everywhere");
        }),
        ("spec.externalTrafficPolicy", Dropped::Object, |v| {
            v["spec"]["externalTrafficPolicy"] = json!("local");
        }),
        ("spec.sessionAffinity", Dropped::Object, |v| {
            v["spec"]["sessionAffinity"] = json!("Sticky");
        }),
        (
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            Dropped::Object,
            |v| {
                v["spec"]["sessionAffinity"] = json!("ClientIP");
                v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 86401}});
            },
        ),
        ("spec.loadBalancerSourceRanges[0]", Dropped::Object, |v| {
            v["spec"]["loadBalancerSourceRanges"] = json!(["10.0.0.0/40"]);
        }),
        ("spec.ports[1].port", Dropped::Port, |v| {
            v["spec"]["ports"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "bad", "port": 0}));
        }),
        ("spec.ports[1].protocol", Dropped::Port, |v| {
            v["spec"]["ports"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "bad", "port": 81, "protocol": "tcp4"}));
        }),
        ("spec.ports[1].nodePort", Dropped::Port, |v| {
            v["spec"]["ports"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "bad", "port": 81, "nodePort": 99999}));
        }),
        ("spec.ports[1].name", Dropped::Port, |v| {
            v["spec"]["ports"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "http", "port": 81, "protocol": "TCP"}));
        }),
        ("spec.externalIPs[0]", Dropped::Value, |v| {
            v["spec"]["externalIPs"] = json!(["192.168.99.x"]);
        }),
        ("status.loadBalancer.ingress[0].ip", Dropped::Value, |v| {
            v["status"]["loadBalancer"]["ingress"][0]["ip"] = json!("198.51.100");
        }),
        ("spec.healthCheckNodePort", Dropped::Value, |v| {
            v["spec"]["healthCheckNodePort"] = json!(70000);
        }),
    ]
}

/// Every kind of EndpointSlice error.
fn slice_breakages() -> Vec<(&'static str, Dropped, Mutation)> {
    vec![
        ("addressType", Dropped::Object, |v| {
            v["addressType"] = json!("IPv7");
        }),
        (
            "metadata.labels[kubernetes.io/service-name]",
            Dropped::Object,
            |v| {
                v["metadata"]["labels"] = json!({"app": "x"});
            },
        ),
        ("ports[1].port", Dropped::Port, |v| {
            v["ports"][1] = json!({"name": "bad", "port": -1});
        }),
        ("ports[1].protocol", Dropped::Port, |v| {
            v["ports"][1] = json!({"name": "bad", "port": 81, "protocol": "HTTP"});
        }),
        ("endpoints[1].addresses[0]", Dropped::Endpoint, |v| {
            v["endpoints"][1]["addresses"] = json!(["10.0.0"]);
        }),
        ("endpoints[2].addresses[0]", Dropped::Endpoint, |v| {
            v["endpoints"][2]["addresses"] = json!(["fd00::2"]);
        }),
        ("endpoints[0].addresses", Dropped::Endpoint, |v| {
            v["endpoints"][0]["addresses"] = json!([]);
        }),
    ]
}

fn http(name: &str) -> ServicePortName {
    ServicePortName::new("scale", name, "http", Protocol::Tcp)
}

#[test]
fn thousand_services_and_every_kind_of_malformed_object() {
    let mut topo = ServiceTopology::new();
    for n in 0..SERVICES {
        let name = format!("svc-{n}");
        let a = topo.apply_service(&service(svc_value(&name, n)));
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        let a = topo.apply_endpoint_slice(&slice(slice_value(&format!("{name}-abcde"), &name, n)));
        assert!(a.errors.is_empty(), "{:?}", a.errors);
    }
    let node = NodeInfo::named("node-a").shared();
    let good = NodeView::build(&topo, node.clone(), IpFamily::V4);
    assert_eq!(good.len(), SERVICES);
    for n in 0..SERVICES {
        let port = good.get(&http(&format!("svc-{n}"))).unwrap();
        assert_eq!(port.cluster.len(), 3);
        assert_eq!(port.local_ready, 1);
        assert_eq!(port.port.health_check_node_port, Some(31000));
    }

    // New malformed objects: one error each, naming object and field.
    let mut expected_ports = SERVICES;
    for (i, (field, dropped, breakage)) in service_breakages().into_iter().enumerate() {
        let name = format!("bad-svc-{i}");
        let mut v = svc_value(&name, SERVICES + i);
        breakage(&mut v);
        let applied = topo.apply_service(&service(v));
        assert_eq!(applied.errors.len(), 1, "{name}: {:?}", applied.errors);
        let e = &applied.errors[0];
        let object = format!("scale/{name}");
        assert_eq!(
            (e.kind, e.object.as_str(), e.field.as_str(), e.dropped),
            (ObjectKind::Service, object.as_str(), field, dropped),
            "{e}"
        );
        assert!(e.to_string().contains(&object) && e.to_string().contains(field));
        let stored = topo.service(&proxy_core::ServiceKey::new("scale", name.as_str()));
        if dropped == Dropped::Object {
            assert!(stored.is_none(), "{name} rejected");
        } else {
            let ports = stored.unwrap().ports(IpFamily::V4);
            assert_eq!(ports.len(), 1, "{name}: only the bad port is left out");
            expected_ports += 1;
        }
    }
    for (i, (field, dropped, breakage)) in slice_breakages().into_iter().enumerate() {
        let name = format!("bad-slice-{i}");
        let mut v = slice_value(&name, "svc-0", 0);
        v["ports"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "metrics", "port": 9090, "protocol": "TCP"}));
        breakage(&mut v);
        let applied = topo.apply_endpoint_slice(&slice(v));
        assert_eq!(applied.errors.len(), 1, "{name}: {:?}", applied.errors);
        let e = &applied.errors[0];
        let object = format!("scale/{name}");
        assert_eq!(
            (e.kind, e.object.as_str(), e.field.as_str(), e.dropped),
            (ObjectKind::EndpointSlice, object.as_str(), field, dropped),
            "{e}"
        );
        // Only svc-0's endpoints can be affected by slices of svc-0; they
        // duplicate the good slice's endpoints, so they are collapsed.
        let _ = topo.delete_endpoint_slice("scale", &name);
    }

    // Bad updates of good services: rejected, the good version stays.
    for (i, (field, dropped, breakage)) in service_breakages().into_iter().enumerate() {
        if dropped != Dropped::Object {
            continue;
        }
        let name = format!("svc-{i}");
        let mut v = svc_value(&name, i);
        breakage(&mut v);
        let applied = topo.apply_service(&service(v));
        assert_eq!(applied.errors.len(), 1);
        assert_eq!(applied.errors[0].field, field);
        assert!(
            applied.changed.is_empty(),
            "{name}: a rejected update changes nothing"
        );
    }
    for (i, (field, dropped, breakage)) in slice_breakages().into_iter().enumerate() {
        if dropped != Dropped::Object {
            continue;
        }
        let name = format!("svc-{i}");
        let mut v = slice_value(&format!("{name}-abcde"), &name, i);
        breakage(&mut v);
        let applied = topo.apply_endpoint_slice(&slice(v));
        assert_eq!(applied.errors.len(), 1);
        assert_eq!(applied.errors[0].field, field);
        assert!(applied.changed.is_empty());
    }

    let after = NodeView::build(&topo, node, IpFamily::V4);
    assert_eq!(after.len(), expected_ports);
    for (name, port) in good.iter() {
        assert_eq!(after.get(name), Some(port), "{name} unchanged");
    }
}
