//! `ServiceTopology`: validation of Services and EndpointSlices, per-object
//! rejection, no-op detection, slice merging, and what reaches the NodeView.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use proxy_core::model::{SessionAffinity, TrafficPolicy};
use proxy_core::topology::Applied;
use proxy_core::{
    Dropped, InvalidObject, IpFamily, NodeInfo, NodeView, ObjectKind, Protocol, ServiceKey,
    ServicePortName, ServiceTopology,
};

const NODE: &str = "node-a";

fn service(v: Value) -> K8sService {
    serde_json::from_value(v).unwrap()
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

/// A ClusterIP service `ns/name` with one TCP port `http` 80.
fn svc_json(name: &str, ip: &str) -> Value {
    json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    })
}

/// An IPv4 slice `ns/slice` of service `ns/svc` with port `http` 8080.
fn slice_json(slice_name: &str, svc: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-b"}))
        .collect();
    json!({
        "metadata": {"namespace": "ns", "name": slice_name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

fn http(name: &str) -> ServicePortName {
    ServicePortName::new("ns", name, "http", Protocol::Tcp)
}

fn view(topo: &ServiceTopology, family: IpFamily) -> NodeView {
    NodeView::build(topo, NodeInfo::named(NODE).shared(), family)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Applies a service expected to be accepted whole; returns the changed keys.
fn accept(topo: &mut ServiceTopology, v: Value) -> Vec<ServiceKey> {
    let applied = topo.apply_service(&service(v));
    assert!(
        applied.errors.is_empty(),
        "unexpected errors {:?}",
        applied.errors
    );
    applied.changed
}

/// The single error of `applied`, checked against kind, object, field and dropped.
fn one_error(
    applied: &Applied,
    kind: ObjectKind,
    object: &str,
    field: &str,
    dropped: Dropped,
) -> InvalidObject {
    assert_eq!(
        applied.errors.len(),
        1,
        "one error expected: {:?}",
        applied.errors
    );
    let e = applied.errors[0].clone();
    assert_eq!(
        (e.kind, e.object.as_str(), e.field.as_str(), e.dropped),
        (kind, object, field, dropped),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(object) && text.contains(field),
        "message names object and field: {text}"
    );
    e
}

// ---------------------------------------------------------------- skipping

#[test]
fn services_not_proxied_are_skipped() {
    let mut external_name = svc_json("a", "172.30.0.1");
    external_name["spec"]["type"] = json!("ExternalName");
    external_name["spec"]["externalName"] = json!("example.com");
    let mut headless = svc_json("b", "None");
    headless["spec"]["clusterIPs"] = json!(["None"]);
    let mut no_ip = svc_json("c", "");
    no_ip["spec"]["clusterIPs"] = json!([]);
    let mut other_proxy = svc_json("d", "172.30.0.4");
    other_proxy["metadata"]["labels"] =
        json!({"service.kubernetes.io/service-proxy-name": "other"});
    let mut headless_label = svc_json("e", "172.30.0.5");
    headless_label["metadata"]["labels"] = json!({"service.kubernetes.io/headless": ""});

    let mut topo = ServiceTopology::new();
    for v in [external_name, headless, no_ip, other_proxy, headless_label] {
        let applied = topo.apply_service(&service(v));
        assert_eq!(applied, Applied::default());
    }
    assert_eq!(topo.service_count(), 0);
}

#[test]
fn a_service_that_becomes_unproxied_is_removed() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let mut labelled = svc_json("a", "172.30.0.1");
    labelled["metadata"]["labels"] = json!({"service.kubernetes.io/service-proxy-name": "other"});
    let applied = topo.apply_service(&service(labelled));
    assert_eq!(applied.changed, vec![key("a")]);
    assert!(topo.service(&key("a")).is_none());
}

#[test]
fn slices_not_proxied_are_skipped() {
    let mut topo = ServiceTopology::new();
    let mut fqdn = slice_json("s1", "svc", &["10.0.0.1"]);
    fqdn["addressType"] = json!("FQDN");
    fqdn["endpoints"][0]["addresses"] = json!(["pod.example.com"]);
    let mut other = slice_json("s2", "svc", &["10.0.0.1"]);
    other["metadata"]["labels"]["service.kubernetes.io/service-proxy-name"] = json!("x");
    let mut headless = slice_json("s3", "svc", &["10.0.0.1"]);
    headless["metadata"]["labels"]["service.kubernetes.io/headless"] = json!("");
    for v in [fqdn, other, headless] {
        assert_eq!(topo.apply_endpoint_slice(&slice(v)), Applied::default());
    }
    assert_eq!(topo.slice_names().count(), 0);
}

// ------------------------------------------------------- families and IPs

#[test]
fn cluster_ips_per_family() {
    let mut topo = ServiceTopology::new();
    let mut dual = svc_json("dual", "172.30.0.1");
    dual["spec"]["clusterIPs"] = json!(["172.30.0.1", "fd00:30::1"]);
    dual["spec"]["externalIPs"] = json!(["192.168.99.1", "2001:db8::99"]);
    accept(&mut topo, dual);
    accept(&mut topo, svc_json("v4only", "172.30.0.2"));

    let dual = topo.service(&key("dual")).unwrap();
    let v4 = &dual.ports(IpFamily::V4)[0];
    let v6 = &dual.ports(IpFamily::V6)[0];
    assert_eq!((v4.cluster_ip, v4.family), (ip("172.30.0.1"), IpFamily::V4));
    assert_eq!((v6.cluster_ip, v6.family), (ip("fd00:30::1"), IpFamily::V6));
    assert_eq!(v4.external_ips, [ip("192.168.99.1")]);
    assert_eq!(v6.external_ips, [ip("2001:db8::99")]);

    let v4only = topo.service(&key("v4only")).unwrap();
    assert_eq!(v4only.ports(IpFamily::V4).len(), 1);
    assert!(v4only.ports(IpFamily::V6).is_empty());
    assert_eq!(
        view(&topo, IpFamily::V6).len(),
        1,
        "only the dual-stack service has an IPv6 port"
    );
    assert_eq!(view(&topo, IpFamily::V4).len(), 2);
}

#[test]
fn cluster_ip_without_cluster_ips_list_is_used() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"].as_object_mut().unwrap().remove("clusterIPs");
    accept(&mut topo, v);
    assert_eq!(
        topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0].cluster_ip,
        ip("172.30.0.1")
    );
}

#[test]
fn bad_cluster_ip_rejects_the_service() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.300");
    let applied = topo.apply_service(&service(v.clone()));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.clusterIPs[0]",
        Dropped::Object,
    );
    assert!(applied.changed.is_empty());
    assert!(topo.service(&key("a")).is_none());

    v["spec"]["clusterIP"] = json!("172.30.0.1");
    v["spec"]["clusterIPs"] = json!(["172.30.0.1", "172.30.0.2"]);
    let applied = topo.apply_service(&service(v));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.clusterIPs[1]",
        Dropped::Object,
    );
}

// ------------------------------------------------------------------ ports

#[test]
fn bad_ports_drop_only_that_port() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["type"] = json!("NodePort");
    v["spec"]["ports"] = json!([
        {"name": "ok", "port": 80, "protocol": "TCP", "nodePort": 30080},
        {"name": "zero", "port": 0, "protocol": "TCP"},
        {"name": "big", "port": 70000, "protocol": "TCP"},
        {"name": "proto", "port": 81, "protocol": "ICMP"},
        {"name": "np", "port": 82, "protocol": "TCP", "nodePort": 65536},
        {"name": "ok", "port": 83, "protocol": "TCP"},
        {"name": "udp", "port": 53, "protocol": "UDP"},
    ]);
    let applied = topo.apply_service(&service(v));
    assert_eq!(applied.changed, vec![key("a")]);
    let got: Vec<(&str, Dropped)> = applied
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.dropped))
        .collect();
    assert_eq!(
        got,
        [
            ("spec.ports[1].port", Dropped::Port),
            ("spec.ports[2].port", Dropped::Port),
            ("spec.ports[3].protocol", Dropped::Port),
            ("spec.ports[4].nodePort", Dropped::Port),
            ("spec.ports[5].name", Dropped::Port),
        ]
    );
    assert!(
        applied
            .errors
            .iter()
            .all(|e| e.object == "ns/a" && e.kind == ObjectKind::Service)
    );
    assert!(
        applied.errors[2].reason.contains("ICMP"),
        "{}",
        applied.errors[2]
    );
    let ports: Vec<(String, u16, Protocol, Option<u16>)> = topo
        .service(&key("a"))
        .unwrap()
        .ports(IpFamily::V4)
        .iter()
        .map(|p| (p.name.port.clone(), p.port, p.protocol, p.node_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("ok".to_string(), 80, Protocol::Tcp, Some(30080)),
            ("udp".to_string(), 53, Protocol::Udp, None),
        ]
    );
}

#[test]
fn protocol_defaults_to_tcp() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["ports"] = json!([{"port": 80}]);
    accept(&mut topo, v);
    let p = &topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0];
    assert_eq!((p.protocol, p.name.port.as_str()), (Protocol::Tcp, ""));
    assert_eq!(p.name.to_string(), "ns/a");
}

// ---------------------------------------------------------------- values

#[test]
fn bad_external_and_load_balancer_ips_drop_the_value() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["type"] = json!("LoadBalancer");
    v["spec"]["externalIPs"] = json!(["192.168.99.1", "not-an-ip"]);
    v["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "1.2.3.999"}]}});
    let applied = topo.apply_service(&service(v));
    let got: Vec<(&str, Dropped)> = applied
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.dropped))
        .collect();
    assert_eq!(
        got,
        [
            ("spec.externalIPs[1]", Dropped::Value),
            ("status.loadBalancer.ingress[1].ip", Dropped::Value),
        ]
    );
    let p = &topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0];
    assert_eq!(p.external_ips, [ip("192.168.99.1")]);
    assert_eq!(p.load_balancer_ips, [ip("1.2.3.4")]);
}

#[test]
fn load_balancer_ingress_ip_mode() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["type"] = json!("LoadBalancer");
    v["status"] = json!({"loadBalancer": {"ingress": [
        {"ip": "1.2.3.4"},
        {"ip": "1.2.3.5", "ipMode": "VIP"},
        {"ip": "1.2.3.6", "ipMode": "Proxy"},
        {"hostname": "lb.example.com"},
        {"ip": "2001:db8::1"},
    ]}});
    accept(&mut topo, v.clone());
    let p = &topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0];
    assert_eq!(p.load_balancer_ips, [ip("1.2.3.4"), ip("1.2.3.5")]);
    assert!(p.externally_accessible());

    // As upstream, ingress IPs are used whatever the type.
    v["spec"]["type"] = json!("ClusterIP");
    accept(&mut topo, v);
    let p = &topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0];
    assert_eq!(p.load_balancer_ips, [ip("1.2.3.4"), ip("1.2.3.5")]);
}

#[test]
fn source_ranges_trimmed_filtered_and_zero_mask_allows_all() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["type"] = json!("LoadBalancer");
    v["spec"]["clusterIPs"] = json!(["172.30.0.1", "fd00:30::1"]);
    v["spec"]["loadBalancerSourceRanges"] =
        json!([" 203.0.113.0/25 ", "10.1.2.3/8", "fd00:1::/64"]);
    accept(&mut topo, v.clone());
    let svc = topo.service(&key("a")).unwrap();
    assert_eq!(
        svc.ports(IpFamily::V4)[0].load_balancer_source_ranges,
        [net("203.0.113.0/25"), net("10.0.0.0/8")]
    );
    assert_eq!(
        svc.ports(IpFamily::V6)[0].load_balancer_source_ranges,
        [net("fd00:1::/64")]
    );

    v["spec"]["loadBalancerSourceRanges"] = json!(["203.0.113.0/25", "0.0.0.0/0", "fd00:1::/64"]);
    accept(&mut topo, v.clone());
    let svc = topo.service(&key("a")).unwrap();
    assert!(
        svc.ports(IpFamily::V4)[0]
            .load_balancer_source_ranges
            .is_empty(),
        "0.0.0.0/0 allows all"
    );
    assert_eq!(
        svc.ports(IpFamily::V6)[0].load_balancer_source_ranges,
        [net("fd00:1::/64")]
    );

    v["spec"]["loadBalancerSourceRanges"] = json!(["203.0.113.0/25", "203.0.113.0/33"]);
    let applied = topo.apply_service(&service(v));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.loadBalancerSourceRanges[1]",
        Dropped::Object,
    );
    // The previous version stays.
    assert_eq!(
        topo.service(&key("a")).unwrap().ports(IpFamily::V6)[0].load_balancer_source_ranges,
        [net("fd00:1::/64")]
    );
}

#[test]
fn session_affinity() {
    let mut topo = ServiceTopology::new();
    let affinity = |topo: &ServiceTopology| {
        topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0].session_affinity
    };
    let mut v = svc_json("a", "172.30.0.1");
    accept(&mut topo, v.clone());
    assert_eq!(affinity(&topo), None);

    v["spec"]["sessionAffinity"] = json!("ClientIP");
    accept(&mut topo, v.clone());
    assert_eq!(
        affinity(&topo),
        Some(SessionAffinity {
            timeout_seconds: 10800
        })
    );

    v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 300}});
    accept(&mut topo, v.clone());
    assert_eq!(
        affinity(&topo),
        Some(SessionAffinity {
            timeout_seconds: 300
        })
    );

    v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 0}});
    let applied = topo.apply_service(&service(v.clone()));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        Dropped::Object,
    );
    assert_eq!(
        affinity(&topo),
        Some(SessionAffinity {
            timeout_seconds: 300
        })
    );

    v["spec"]["sessionAffinity"] = json!("Cookie");
    let applied = topo.apply_service(&service(v));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.sessionAffinity",
        Dropped::Object,
    );
}

#[test]
fn traffic_policies() {
    let mut topo = ServiceTopology::new();
    let port =
        |topo: &ServiceTopology| topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0].clone();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["internalTrafficPolicy"] = json!("Local");
    v["spec"]["externalTrafficPolicy"] = json!("Local");
    accept(&mut topo, v.clone());
    let p = port(&topo);
    assert_eq!(p.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(
        p.external_traffic_policy,
        TrafficPolicy::Cluster,
        "externalTrafficPolicy applies to NodePort and LoadBalancer only"
    );

    // Upstream's ExternalPolicyLocal: a ClusterIP service with externalIPs
    // is externally accessible.
    v["spec"]["externalIPs"] = json!(["192.168.99.1"]);
    accept(&mut topo, v.clone());
    assert_eq!(port(&topo).external_traffic_policy, TrafficPolicy::Local);
    v["spec"].as_object_mut().unwrap().remove("externalIPs");

    v["spec"]["type"] = json!("NodePort");
    v["spec"]["ports"][0]["nodePort"] = json!(30080);
    accept(&mut topo, v.clone());
    assert_eq!(port(&topo).external_traffic_policy, TrafficPolicy::Local);

    v["spec"]["externalTrafficPolicy"] = json!("Nearby");
    let applied = topo.apply_service(&service(v));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.externalTrafficPolicy",
        Dropped::Object,
    );
    assert_eq!(
        port(&topo).external_traffic_policy,
        TrafficPolicy::Local,
        "previous version kept"
    );
}

#[test]
fn health_check_node_port_only_for_load_balancer_with_local_policy() {
    let mut topo = ServiceTopology::new();
    let hcnp = |topo: &ServiceTopology| {
        topo.service(&key("a")).unwrap().ports(IpFamily::V4)[0].health_check_node_port
    };
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["type"] = json!("LoadBalancer");
    v["spec"]["externalTrafficPolicy"] = json!("Local");
    v["spec"]["healthCheckNodePort"] = json!(30000);
    accept(&mut topo, v.clone());
    assert_eq!(hcnp(&topo), Some(30000));

    v["spec"]["externalTrafficPolicy"] = json!("Cluster");
    accept(&mut topo, v.clone());
    assert_eq!(hcnp(&topo), None);

    v["spec"]["type"] = json!("NodePort");
    v["spec"]["externalTrafficPolicy"] = json!("Local");
    accept(&mut topo, v.clone());
    assert_eq!(hcnp(&topo), None);

    v["spec"]["type"] = json!("LoadBalancer");
    v["spec"]["healthCheckNodePort"] = json!(-1);
    let applied = topo.apply_service(&service(v));
    one_error(
        &applied,
        ObjectKind::Service,
        "ns/a",
        "spec.healthCheckNodePort",
        Dropped::Value,
    );
    assert_eq!(hcnp(&topo), None);
}

// ---------------------------------------------------- updates and no-ops

#[test]
fn rejected_update_keeps_the_previous_version() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let _ = topo.apply_endpoint_slice(&slice(slice_json("a-1", "a", &["10.0.0.1"])));
    let before = view(&topo, IpFamily::V4);

    let applied = topo.apply_service(&service(svc_json("a", "bogus")));
    assert!(applied.changed.is_empty());
    assert_eq!(applied.errors.len(), 1);
    assert_eq!(view(&topo, IpFamily::V4), before);

    // Same for a slice whose update lost its service label.
    let mut bad = slice_json("a-1", "a", &["10.0.0.2"]);
    bad["metadata"]["labels"] = json!({});
    let applied = topo.apply_endpoint_slice(&slice(bad));
    one_error(
        &applied,
        ObjectKind::EndpointSlice,
        "ns/a-1",
        "metadata.labels[kubernetes.io/service-name]",
        Dropped::Object,
    );
    assert!(applied.changed.is_empty());
    assert_eq!(view(&topo, IpFamily::V4), before);
}

#[test]
fn no_op_updates_change_nothing() {
    let mut topo = ServiceTopology::new();
    assert_eq!(
        accept(&mut topo, svc_json("a", "172.30.0.1")),
        vec![key("a")]
    );
    assert!(accept(&mut topo, svc_json("a", "172.30.0.1")).is_empty());
    // Fields kube-proxy does not use are not changes either.
    let mut annotated = svc_json("a", "172.30.0.1");
    annotated["metadata"]["annotations"] = json!({"owner": "me"});
    annotated["metadata"]["resourceVersion"] = json!("42");
    assert!(accept(&mut topo, annotated).is_empty());

    let s = slice(slice_json("a-1", "a", &["10.0.0.1", "10.0.0.2"]));
    assert_eq!(topo.apply_endpoint_slice(&s).changed, vec![key("a")]);
    assert!(topo.apply_endpoint_slice(&s).changed.is_empty());
    // The same endpoints listed in another order are the same slice.
    let reordered = slice(slice_json("a-1", "a", &["10.0.0.2", "10.0.0.1"]));
    assert!(topo.apply_endpoint_slice(&reordered).changed.is_empty());
}

#[test]
fn deletes() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let _ = topo.apply_endpoint_slice(&slice(slice_json("a-1", "a", &["10.0.0.1"])));
    assert_eq!(topo.delete_endpoint_slice("ns", "a-1"), Some(key("a")));
    assert_eq!(topo.delete_endpoint_slice("ns", "a-1"), None);
    assert_eq!(topo.delete_service("ns", "a"), Some(key("a")));
    assert_eq!(topo.delete_service("ns", "a"), None);
    assert_eq!(topo.keys().count(), 0);
}

// --------------------------------------------------------------- slices

#[test]
fn bad_slice_fields() {
    let mut topo = ServiceTopology::new();
    let mut v = slice_json(
        "s",
        "svc",
        &["10.0.0.1", "fd00::1", "10.0.0.999", "10.0.0.2"],
    );
    v["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"addresses": []}));
    v["ports"] = json!([
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "big", "port": 65536, "protocol": "TCP"},
        {"name": "proto", "port": 81, "protocol": "QUIC"},
    ]);
    let applied = topo.apply_endpoint_slice(&slice(v));
    assert_eq!(applied.changed, vec![key("svc")]);
    let got: Vec<(&str, Dropped)> = applied
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.dropped))
        .collect();
    assert_eq!(
        got,
        [
            ("ports[1].port", Dropped::Port),
            ("ports[2].protocol", Dropped::Port),
            ("endpoints[1].addresses[0]", Dropped::Endpoint),
            ("endpoints[2].addresses[0]", Dropped::Endpoint),
            ("endpoints[4].addresses", Dropped::Endpoint),
        ]
    );
    assert!(
        applied
            .errors
            .iter()
            .all(|e| e.object == "ns/s" && e.kind == ObjectKind::EndpointSlice)
    );
    assert!(
        applied.errors[2].reason.contains("IPv4"),
        "wrong family named: {}",
        applied.errors[2]
    );
    let stored = topo.slices(&key("svc")).next().unwrap();
    let ips: Vec<IpAddr> = stored.endpoints.iter().map(|e| e.ip).collect();
    assert_eq!(ips, [ip("10.0.0.1"), ip("10.0.0.2")]);
    assert_eq!(stored.ports.len(), 1);
}

#[test]
fn unknown_address_type_rejects_the_slice() {
    let mut topo = ServiceTopology::new();
    let mut v = slice_json("s", "svc", &["10.0.0.1"]);
    v["addressType"] = json!("IPv5");
    let applied = topo.apply_endpoint_slice(&slice(v));
    one_error(
        &applied,
        ObjectKind::EndpointSlice,
        "ns/s",
        "addressType",
        Dropped::Object,
    );
    assert_eq!(topo.slice_names().count(), 0);
}

#[test]
fn endpoint_conditions_default_as_upstream() {
    let mut topo = ServiceTopology::new();
    let mut v = slice_json("s", "svc", &["10.0.0.1", "10.0.0.2"]);
    v["endpoints"][0]["conditions"] = json!({});
    v["endpoints"][1]["conditions"] = json!({"ready": false, "serving": true, "terminating": true});
    let _ = topo.apply_endpoint_slice(&slice(v));
    let stored = topo.slices(&key("svc")).next().unwrap();
    let conds: Vec<(bool, bool, bool)> = stored
        .endpoints
        .iter()
        .map(|e| (e.ready, e.serving, e.terminating))
        .collect();
    assert_eq!(conds, [(true, true, false), (false, true, true)]);
}

#[test]
fn multiple_slices_are_merged_sorted_and_deduplicated() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let _ = topo.apply_endpoint_slice(&slice(slice_json("a-1", "a", &["10.0.0.2", "10.0.0.10"])));
    let mut local = slice_json("a-2", "a", &["10.0.0.1", "10.0.0.2"]);
    local["endpoints"][1]["nodeName"] = json!(NODE);
    let _ = topo.apply_endpoint_slice(&slice(local));

    let v = view(&topo, IpFamily::V4);
    let port = v.get(&http("a")).unwrap();
    let got: Vec<(String, bool)> = port
        .cluster
        .iter()
        .map(|e| (e.to_string(), e.is_local))
        .collect();
    // Upstream sorts by the endpoint string: "10.0.0.10:8080" < "10.0.0.1:8080".
    assert_eq!(
        got,
        [
            ("10.0.0.10:8080".to_string(), false),
            ("10.0.0.1:8080".to_string(), false),
            ("10.0.0.2:8080".to_string(), true),
        ]
    );
    assert_eq!(port.local_ready, 1);
}

#[test]
fn endpoints_of_one_slice_follow_the_upstream_string_order() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let _ = topo.apply_endpoint_slice(&slice(slice_json(
        "a-1",
        "a",
        &["10.0.0.9", "10.0.0.10", "10.0.0.1", "10.0.1.1", "9.0.0.1"],
    )));
    let v = view(&topo, IpFamily::V4);
    let got: Vec<String> = v
        .get(&http("a"))
        .unwrap()
        .cluster
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut want = got.clone();
    want.sort();
    assert_eq!(got, want, "sorted as strings");
    assert_eq!(got[0], "10.0.0.10:8080");
}

#[test]
fn ipv6_endpoints_follow_the_bracketed_string_order() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "fd00:30::1");
    v["spec"]["clusterIPs"] = json!(["fd00:30::1"]);
    accept(&mut topo, v);
    let mut s = slice_json("a-1", "a", &["fd00::1a", "fd00::1", "fd00::10"]);
    s["addressType"] = json!("IPv6");
    let _ = topo.apply_endpoint_slice(&slice(s));
    let v = view(&topo, IpFamily::V6);
    let got: Vec<String> = v
        .get(&http("a"))
        .unwrap()
        .cluster
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut want = got.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        got,
        ["[fd00::10]:8080", "[fd00::1]:8080", "[fd00::1a]:8080"]
    );
}

#[test]
fn target_port_is_resolved_by_slice_port_name_and_protocol() {
    let mut topo = ServiceTopology::new();
    let mut v = svc_json("a", "172.30.0.1");
    v["spec"]["ports"] = json!([
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]);
    accept(&mut topo, v);
    let mut s = slice_json("a-1", "a", &["10.0.0.1"]);
    s["ports"] = json!([
        {"name": "dns", "port": 5353, "protocol": "UDP"},
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "dns-tcp", "port": 5354, "protocol": "UDP"},
    ]);
    let _ = topo.apply_endpoint_slice(&slice(s));
    let v = view(&topo, IpFamily::V4);
    let ports = |name: &str, proto| -> Vec<u16> {
        v.get(&ServicePortName::new("ns", "a", name, proto))
            .unwrap()
            .cluster
            .iter()
            .map(|e| e.port)
            .collect()
    };
    assert_eq!(ports("http", Protocol::Tcp), [8080]);
    assert_eq!(ports("dns", Protocol::Udp), [5353]);
    assert!(
        ports("dns-tcp", Protocol::Tcp).is_empty(),
        "protocol must match too"
    );
}

#[test]
fn endpoints_of_the_other_family_are_ignored() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let mut s = slice_json("a-6", "a", &["fd00::1"]);
    s["addressType"] = json!("IPv6");
    let _ = topo.apply_endpoint_slice(&slice(s));
    let v = view(&topo, IpFamily::V4);
    assert!(v.get(&http("a")).unwrap().cluster.is_empty());
}

#[test]
fn locality_requires_the_node_name() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    let mut s = slice_json("a-1", "a", &["10.0.0.1", "10.0.0.2"]);
    s["endpoints"][0]["nodeName"] = json!(NODE);
    s["endpoints"][1]
        .as_object_mut()
        .unwrap()
        .remove("nodeName");
    let _ = topo.apply_endpoint_slice(&slice(s));
    let v = view(&topo, IpFamily::V4);
    let local: Vec<bool> = v
        .get(&http("a"))
        .unwrap()
        .cluster
        .iter()
        .map(|e| e.is_local)
        .collect();
    assert_eq!(local, [true, false]);
    // A node without a name has no local endpoints (upstream `isLocal`).
    let unnamed = NodeView::build(&topo, NodeInfo::named("").shared(), IpFamily::V4);
    assert!(
        unnamed
            .get(&http("a"))
            .unwrap()
            .cluster
            .iter()
            .all(|e| !e.is_local)
    );
}

#[test]
fn a_slice_moving_to_another_service() {
    let mut topo = ServiceTopology::new();
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    accept(&mut topo, svc_json("b", "172.30.0.2"));
    let applied = topo.apply_endpoint_slice(&slice(slice_json("s", "a", &["10.0.0.1"])));
    assert_eq!(applied.changed, vec![key("a")]);
    let applied = topo.apply_endpoint_slice(&slice(slice_json("s", "b", &["10.0.0.1"])));
    assert_eq!(applied.changed, vec![key("a"), key("b")]);
    let v = view(&topo, IpFamily::V4);
    assert!(v.get(&http("a")).unwrap().cluster.is_empty());
    assert_eq!(v.get(&http("b")).unwrap().cluster.len(), 1);
    assert_eq!(topo.delete_endpoint_slice("ns", "s"), Some(key("b")));
}

#[test]
fn slices_before_their_service_are_kept() {
    let mut topo = ServiceTopology::new();
    let _ = topo.apply_endpoint_slice(&slice(slice_json("a-1", "a", &["10.0.0.1"])));
    assert!(view(&topo, IpFamily::V4).is_empty());
    accept(&mut topo, svc_json("a", "172.30.0.1"));
    assert_eq!(
        view(&topo, IpFamily::V4)
            .get(&http("a"))
            .unwrap()
            .cluster
            .len(),
        1
    );
}
