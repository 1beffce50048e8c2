//! Table tests of `categorize` and `ServicePortView::decide`: every case of
//! upstream's `TestCategorizeEndpoints` (`pkg/proxy/topology_test.go`), plus
//! the same-node hint cases of `topologyModeFromHints` and the decision
//! (Cluster / Local / Drop / Reject, local ready count) the proxiers take.

#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use proxy_core::model::{EndpointHints, SessionAffinity, TrafficPolicy};
use proxy_core::view::{TopologyMode, categorize, categorize::topology_mode};
use proxy_core::{
    Endpoint, IpFamily, Protocol, ServicePort, ServicePortName, ServicePortView, Target,
};

const NODE: &str = "test-node";

/// An endpoint as upstream's `BaseEndpointInfo{}`: every condition false.
fn ep(addr: &str) -> Endpoint {
    let sa: SocketAddr = addr.parse().unwrap();
    Endpoint {
        ip: sa.ip(),
        port: sa.port(),
        ready: false,
        serving: false,
        terminating: false,
        is_local: false,
        node_name: None,
        zone: None,
        hints: None,
    }
}

trait EndpointExt {
    fn ready(self) -> Self;
    fn serving(self) -> Self;
    fn terminating(self) -> Self;
    fn local(self) -> Self;
    fn zones(self, zones: &[&str]) -> Self;
    fn nodes(self, nodes: &[&str]) -> Self;
}

impl EndpointExt for Endpoint {
    fn ready(mut self) -> Self {
        self.ready = true;
        self
    }
    fn serving(mut self) -> Self {
        self.serving = true;
        self
    }
    fn terminating(mut self) -> Self {
        self.terminating = true;
        self
    }
    fn local(mut self) -> Self {
        self.is_local = true;
        self
    }
    fn zones(mut self, zones: &[&str]) -> Self {
        let mut hints = self.hints.as_deref().cloned().unwrap_or_default();
        hints.for_zones = zones.iter().map(|z| Arc::from(*z)).collect();
        self.hints = Some(Arc::new(hints));
        self
    }
    fn nodes(mut self, nodes: &[&str]) -> Self {
        let mut hints: EndpointHints = self.hints.as_deref().cloned().unwrap_or_default();
        hints.for_nodes = nodes.iter().map(|n| Arc::from(*n)).collect();
        self.hints = Some(Arc::new(hints));
        self
    }
}

/// Upstream's `BaseServicePortInfo{internalPolicyLocal, externalPolicyLocal, nodePort}`.
#[derive(Clone, Copy, Default)]
struct Svc {
    itp_local: bool,
    etp_local: bool,
    node_port: Option<u16>,
}

const CLUSTER: Svc = Svc {
    itp_local: false,
    etp_local: false,
    node_port: None,
};

fn service_port(svc: Svc) -> ServicePort {
    let policy = |local| {
        if local {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        }
    };
    ServicePort {
        name: ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp),
        family: IpFamily::V4,
        cluster_ip: "172.30.0.41".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        node_port: svc.node_port,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        session_affinity: None::<SessionAffinity>,
        internal_traffic_policy: policy(svc.itp_local),
        external_traffic_policy: policy(svc.etp_local),
        health_check_node_port: None,
    }
}

struct Case {
    name: &'static str,
    /// `None`: no zone label; `Some("")`: an empty one.
    zone: Option<&'static str>,
    svc: Svc,
    endpoints: Vec<Endpoint>,
    /// `None`: the service does not use this kind of endpoints (upstream `nil`).
    cluster: Option<&'static [&'static str]>,
    local: Option<&'static [&'static str]>,
    /// Needed only when both `cluster` and `local` are `Some`.
    all: Option<&'static [&'static str]>,
    only_remote: bool,
}

fn set(endpoints: &[Endpoint]) -> BTreeSet<String> {
    let set: BTreeSet<String> = endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(
        set.len(),
        endpoints.len(),
        "duplicate endpoints in {endpoints:?}"
    );
    set
}

fn strings(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn check(case: &Case) {
    let port = service_port(case.svc);
    let zone = case.zone.unwrap_or("");
    let got = categorize(&case.endpoints, &port, NODE, zone);
    let name = case.name;

    match case.cluster {
        None => {
            assert!(
                !port.uses_cluster_endpoints(),
                "{name}: expected no cluster endpoints"
            );
            assert!(got.cluster.is_empty(), "{name}: cluster {:?}", got.cluster);
        }
        Some(want) => {
            assert!(
                port.uses_cluster_endpoints(),
                "{name}: expected cluster endpoints to be used"
            );
            assert_eq!(
                set(&got.cluster),
                strings(want),
                "{name}: cluster endpoints"
            );
        }
    }
    match case.local {
        None => {
            assert!(
                !port.uses_local_endpoints(),
                "{name}: expected no local endpoints"
            );
            assert!(got.local.is_empty(), "{name}: local {:?}", got.local);
        }
        Some(want) => {
            assert!(
                port.uses_local_endpoints(),
                "{name}: expected local endpoints to be used"
            );
            assert_eq!(set(&got.local), strings(want), "{name}: local endpoints");
        }
    }
    let want_all = match (case.cluster, case.local) {
        (Some(c), None) => strings(c),
        (None, Some(l)) => strings(l),
        _ => strings(case.all.unwrap_or(&[])),
    };
    assert_eq!(
        set(&got.all_reachable),
        want_all,
        "{name}: all reachable endpoints"
    );
    let want_any = !want_all.is_empty() || case.only_remote;
    assert_eq!(got.has_any, want_any, "{name}: has any endpoints");

    // The view keeps the same lists.
    let view = ServicePortView::decide(Arc::new(port), &case.endpoints, NODE, zone);
    assert_eq!(view.cluster, got.cluster, "{name}: view cluster");
    assert_eq!(view.local, got.local, "{name}: view local");
}

fn upstream_cases() -> Vec<Case> {
    let zone_a = Some("zone-a");
    vec![
        Case {
            name: "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").zones(&["zone-a"]).ready(),
                ep("10.1.2.4:80").zones(&["zone-b"]).ready(),
                ep("10.1.2.5:80").zones(&["zone-c"]).ready(),
                ep("10.1.2.6:80").zones(&["zone-a"]).ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "externalTrafficPolicy: Local, topology ignored for Local endpoints",
            zone: zone_a,
            svc: Svc {
                etp_local: true,
                node_port: Some(8080),
                ..CLUSTER
            },
            endpoints: vec![
                ep("10.1.2.3:80").zones(&["zone-a"]).ready().local(),
                ep("10.1.2.4:80").zones(&["zone-b"]).ready().local(),
                ep("10.1.2.5:80").zones(&["zone-c"]).ready(),
                ep("10.1.2.6:80").zones(&["zone-a"]).ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            only_remote: false,
        },
        Case {
            name: "internalTrafficPolicy: Local, topology ignored for Local endpoints",
            zone: zone_a,
            svc: Svc {
                itp_local: true,
                etp_local: false,
                node_port: Some(8080),
            },
            endpoints: vec![
                ep("10.1.2.3:80").zones(&["zone-a"]).ready().local(),
                ep("10.1.2.4:80").zones(&["zone-b"]).ready().local(),
                ep("10.1.2.5:80").zones(&["zone-c"]).ready(),
                ep("10.1.2.6:80").zones(&["zone-a"]).ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            only_remote: false,
        },
        Case {
            name: "empty node labels",
            zone: None,
            svc: CLUSTER,
            endpoints: vec![ep("10.1.2.3:80").zones(&["zone-a"]).ready()],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "empty zone label",
            zone: Some(""),
            svc: CLUSTER,
            endpoints: vec![ep("10.1.2.3:80").zones(&["zone-a"]).ready()],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "node in different zone, no endpoint filtering",
            zone: Some("zone-b"),
            svc: CLUSTER,
            endpoints: vec![ep("10.1.2.3:80").zones(&["zone-a"]).ready()],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "unready endpoint",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").zones(&["zone-a"]).ready(),
                ep("10.1.2.4:80").zones(&["zone-b"]).ready(),
                ep("10.1.2.5:80").zones(&["zone-c"]).ready(),
                ep("10.1.2.6:80").zones(&["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "only unready endpoints in same zone (should not filter)",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").zones(&["zone-a"]),
                ep("10.1.2.4:80").zones(&["zone-b"]).ready(),
                ep("10.1.2.5:80").zones(&["zone-c"]).ready(),
                ep("10.1.2.6:80").zones(&["zone-a"]),
            ],
            cluster: Some(&["10.1.2.4:80", "10.1.2.5:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "missing hints, no filtering applied",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").zones(&["zone-a"]).ready(),
                ep("10.1.2.4:80").zones(&["zone-b"]).ready(),
                ep("10.1.2.5:80").ready(),
                ep("10.1.2.6:80").zones(&["zone-a"]).ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "multiple hints per endpoint, filtering includes any endpoint with zone included",
            zone: Some("zone-c"),
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80")
                    .zones(&["zone-a", "zone-b", "zone-c"])
                    .ready(),
                ep("10.1.2.4:80").zones(&["zone-b", "zone-c"]).ready(),
                ep("10.1.2.5:80").zones(&["zone-b", "zone-d"]).ready(),
                ep("10.1.2.6:80").zones(&["zone-c"]).ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "conflicting topology and localness require merging allEndpoints",
            zone: zone_a,
            svc: Svc {
                itp_local: false,
                etp_local: true,
                node_port: Some(8080),
            },
            endpoints: vec![
                ep("10.0.0.0:80").zones(&["zone-a"]).ready().local(),
                ep("10.0.0.1:80").zones(&["zone-b"]).ready().local(),
                ep("10.0.0.2:80").zones(&["zone-a"]).ready(),
                ep("10.0.0.3:80").zones(&["zone-b"]).ready(),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]),
            only_remote: false,
        },
        Case {
            name: "internalTrafficPolicy: Local, with empty endpoints",
            zone: None,
            svc: Svc {
                itp_local: true,
                ..CLUSTER
            },
            endpoints: vec![],
            cluster: None,
            local: Some(&[]),
            all: None,
            only_remote: false,
        },
        Case {
            name: "internalTrafficPolicy: Local, but all endpoints are remote",
            zone: None,
            svc: Svc {
                itp_local: true,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.0:80").ready(), ep("10.0.0.1:80").ready()],
            cluster: None,
            local: Some(&[]),
            all: None,
            only_remote: true,
        },
        Case {
            name: "internalTrafficPolicy: Local, all endpoints are local",
            zone: None,
            svc: Svc {
                itp_local: true,
                ..CLUSTER
            },
            endpoints: vec![
                ep("10.0.0.0:80").ready().local(),
                ep("10.0.0.1:80").ready().local(),
            ],
            cluster: None,
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: None,
            only_remote: false,
        },
        Case {
            name: "internalTrafficPolicy: Local, some endpoints are local",
            zone: None,
            svc: Svc {
                itp_local: true,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.0:80").ready().local(), ep("10.0.0.1:80").ready()],
            cluster: None,
            local: Some(&["10.0.0.0:80"]),
            all: None,
            only_remote: false,
        },
        Case {
            name: "Cluster traffic policy, endpoints not Ready",
            zone: None,
            svc: CLUSTER,
            endpoints: vec![ep("10.0.0.0:80"), ep("10.0.0.1:80")],
            cluster: Some(&[]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "Cluster traffic policy, some endpoints are Ready",
            zone: None,
            svc: CLUSTER,
            endpoints: vec![ep("10.0.0.0:80"), ep("10.0.0.1:80").ready()],
            cluster: Some(&["10.0.0.1:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "Cluster traffic policy, all endpoints are terminating",
            zone: None,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.0.0.0:80").serving().terminating().local(),
                ep("10.0.0.1:80").serving().terminating(),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "iTP: Local, eTP: Cluster, some endpoints local",
            zone: None,
            svc: Svc {
                itp_local: true,
                etp_local: false,
                node_port: Some(8080),
            },
            endpoints: vec![ep("10.0.0.0:80").ready().local(), ep("10.0.0.1:80").ready()],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Case {
            name: "iTP: Cluster, eTP: Local, some endpoints local",
            zone: None,
            svc: Svc {
                itp_local: false,
                etp_local: true,
                node_port: Some(8080),
            },
            endpoints: vec![ep("10.0.0.0:80").ready().local(), ep("10.0.0.1:80").ready()],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Case {
            name: "iTP: Local, eTP: Local, some endpoints local",
            zone: None,
            svc: Svc {
                itp_local: true,
                etp_local: true,
                node_port: Some(8080),
            },
            endpoints: vec![ep("10.0.0.0:80").ready().local(), ep("10.0.0.1:80").ready()],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Case {
            name: "iTP: Local, eTP: Local, all endpoints remote",
            zone: None,
            svc: Svc {
                itp_local: true,
                etp_local: true,
                node_port: Some(8080),
            },
            endpoints: vec![ep("10.0.0.0:80").ready(), ep("10.0.0.1:80").ready()],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Case {
            name: "iTP: Local, eTP: Local, all endpoints remote and terminating",
            zone: None,
            svc: Svc {
                itp_local: true,
                etp_local: true,
                node_port: Some(8080),
            },
            endpoints: vec![
                ep("10.0.0.0:80").serving().terminating(),
                ep("10.0.0.1:80").serving().terminating(),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: true,
        },
        Case {
            name: "iTP: Cluster, eTP: Local, with terminating endpoints",
            zone: None,
            svc: Svc {
                itp_local: false,
                etp_local: true,
                node_port: Some(8080),
            },
            endpoints: vec![
                ep("10.0.0.0:80").ready(),
                ep("10.0.0.1:80").local(),
                ep("10.0.0.2:80").serving().terminating().local(),
                ep("10.0.0.3:80").serving().terminating(),
            ],
            cluster: Some(&["10.0.0.0:80"]),
            local: Some(&["10.0.0.2:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            only_remote: false,
        },
        Case {
            name: "externalTrafficPolicy ignored if not externally accessible",
            zone: None,
            svc: Svc {
                etp_local: true,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.0:80").ready(), ep("10.0.0.1:80").ready().local()],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: None,
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Case {
            name: "no cluster endpoints for iTP:Local internal-only service",
            zone: None,
            svc: Svc {
                itp_local: true,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.0:80").ready(), ep("10.0.0.1:80").ready().local()],
            cluster: None,
            local: Some(&["10.0.0.1:80"]),
            all: Some(&["10.0.0.1:80"]),
            only_remote: false,
        },
    ]
}

#[test]
fn categorize_endpoints_upstream_cases() {
    let cases = upstream_cases();
    assert_eq!(
        cases.len(),
        26,
        "every case of upstream's TestCategorizeEndpoints"
    );
    for case in &cases {
        check(case);
    }
}

/// Same-node hints (`trafficDistribution: PreferSameNode`), from upstream's
/// `topologyModeFromHints` with the PreferSameTrafficDistribution gate on.
fn node_hint_cases() -> Vec<Case> {
    let zone_a = Some("zone-a");
    vec![
        Case {
            name: "every ready endpoint has a node hint and one is for this node: same node",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").nodes(&[NODE]).zones(&["zone-a"]).ready(),
                ep("10.1.2.4:80")
                    .nodes(&["other-node"])
                    .zones(&["zone-a"])
                    .ready(),
                ep("10.1.2.5:80")
                    .nodes(&["third-node"])
                    .zones(&["zone-b"])
                    .ready(),
            ],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "node hints but none for this node: fall back to zone hints",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80")
                    .nodes(&["node-x"])
                    .zones(&["zone-a"])
                    .ready(),
                ep("10.1.2.4:80")
                    .nodes(&["node-y"])
                    .zones(&["zone-a"])
                    .ready(),
                ep("10.1.2.5:80")
                    .nodes(&["node-z"])
                    .zones(&["zone-b"])
                    .ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "a ready endpoint without node hint: fall back to zone hints",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").nodes(&[NODE]).zones(&["zone-b"]).ready(),
                ep("10.1.2.4:80").zones(&["zone-a"]).ready(),
                ep("10.1.2.5:80")
                    .nodes(&["node-z"])
                    .zones(&["zone-b"])
                    .ready(),
            ],
            cluster: Some(&["10.1.2.4:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "node hints, no zone hints, none for this node: no filtering",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").nodes(&["node-x"]).ready(),
                ep("10.1.2.4:80").nodes(&["node-y"]).ready(),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "an unready endpoint without hints does not prevent same-node filtering",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80").nodes(&[NODE]).ready(),
                ep("10.1.2.4:80").nodes(&["node-y"]).ready(),
                ep("10.1.2.5:80").serving().terminating(),
            ],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Case {
            name: "eTP Local: same-node hints filter the cluster set only",
            zone: zone_a,
            svc: Svc {
                etp_local: true,
                node_port: Some(30080),
                ..CLUSTER
            },
            endpoints: vec![
                ep("10.1.2.3:80").nodes(&["node-y"]).ready().local(),
                ep("10.1.2.4:80").nodes(&[NODE]).ready(),
                ep("10.1.2.5:80").nodes(&["node-y"]).ready(),
            ],
            cluster: Some(&["10.1.2.4:80"]),
            local: Some(&["10.1.2.3:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            only_remote: false,
        },
        Case {
            name: "hints are ignored when no endpoint is ready: serving-terminating fallback",
            zone: zone_a,
            svc: CLUSTER,
            endpoints: vec![
                ep("10.1.2.3:80")
                    .nodes(&[NODE])
                    .zones(&["zone-a"])
                    .serving()
                    .terminating(),
                ep("10.1.2.4:80")
                    .nodes(&["node-y"])
                    .zones(&["zone-b"])
                    .serving()
                    .terminating(),
                ep("10.1.2.5:80").nodes(&["node-y"]).zones(&["zone-b"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
    ]
}

#[test]
fn categorize_endpoints_node_hint_cases() {
    for case in &node_hint_cases() {
        check(case);
    }
}

#[test]
fn topology_mode_from_hints() {
    let both = vec![
        ep("10.0.0.1:80").nodes(&[NODE]).zones(&["zone-a"]).ready(),
        ep("10.0.0.2:80").nodes(&["n2"]).zones(&["zone-b"]).ready(),
    ];
    assert_eq!(
        topology_mode(&both, NODE, "zone-a"),
        TopologyMode::PreferSameNode
    );
    assert_eq!(
        topology_mode(&both, "n3", "zone-b"),
        TopologyMode::PreferSameZone
    );
    assert_eq!(topology_mode(&both, "n3", "zone-c"), TopologyMode::None);
    assert_eq!(topology_mode(&both, "n3", ""), TopologyMode::None);
    assert_eq!(topology_mode(&[], NODE, "zone-a"), TopologyMode::None);
    let unready = vec![ep("10.0.0.1:80").nodes(&[NODE]).zones(&["zone-a"])];
    assert_eq!(topology_mode(&unready, NODE, "zone-a"), TopologyMode::None);
}

#[test]
fn all_reachable_keeps_endpoint_order_when_merging() {
    let case = &upstream_cases()[10];
    assert_eq!(
        case.name,
        "conflicting topology and localness require merging allEndpoints"
    );
    let port = service_port(case.svc);
    let got = categorize(&case.endpoints, &port, NODE, "zone-a");
    let order: Vec<String> = got.all_reachable.iter().map(ToString::to_string).collect();
    assert_eq!(order, ["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]);
}

struct DecideCase {
    name: &'static str,
    svc: Svc,
    endpoints: Vec<Endpoint>,
    internal: Target,
    external: Target,
    local_ready: u32,
}

#[test]
fn decide_targets() {
    let np = Some(30080);
    let cases = vec![
        DecideCase {
            name: "no endpoints: reject both",
            svc: Svc {
                node_port: np,
                ..CLUSTER
            },
            endpoints: vec![],
            internal: Target::Reject,
            external: Target::Reject,
            local_ready: 0,
        },
        DecideCase {
            name: "only unready, non-serving endpoints: reject both",
            svc: Svc {
                itp_local: true,
                etp_local: true,
                node_port: np,
            },
            endpoints: vec![ep("10.0.0.1:80").local(), ep("10.0.0.2:80").serving()],
            internal: Target::Reject,
            external: Target::Reject,
            local_ready: 0,
        },
        DecideCase {
            name: "cluster policies with ready endpoints",
            svc: Svc {
                node_port: np,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.1:80").ready(), ep("10.0.0.2:80").ready().local()],
            internal: Target::Cluster,
            external: Target::Cluster,
            local_ready: 1,
        },
        DecideCase {
            name: "iTP Local without local endpoints: drop internal traffic",
            svc: Svc {
                itp_local: true,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.1:80").ready()],
            internal: Target::Drop,
            external: Target::Cluster,
            local_ready: 0,
        },
        DecideCase {
            name: "eTP Local without local endpoints: drop external traffic only",
            svc: Svc {
                etp_local: true,
                node_port: np,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.1:80").ready()],
            internal: Target::Cluster,
            external: Target::Drop,
            local_ready: 0,
        },
        DecideCase {
            name: "eTP Local with a local endpoint",
            svc: Svc {
                etp_local: true,
                node_port: np,
                ..CLUSTER
            },
            endpoints: vec![ep("10.0.0.1:80").ready(), ep("10.0.0.2:80").ready().local()],
            internal: Target::Cluster,
            external: Target::Local,
            local_ready: 1,
        },
        DecideCase {
            name: "both Local, only remote terminating endpoints: drop, not reject",
            svc: Svc {
                itp_local: true,
                etp_local: true,
                node_port: np,
            },
            endpoints: vec![ep("10.0.0.1:80").serving().terminating()],
            internal: Target::Drop,
            external: Target::Drop,
            local_ready: 0,
        },
        DecideCase {
            name: "local serving-terminating endpoint is used but not counted as ready",
            svc: Svc {
                etp_local: true,
                node_port: np,
                ..CLUSTER
            },
            endpoints: vec![
                ep("10.0.0.1:80").ready(),
                ep("10.0.0.2:80").serving().terminating().local(),
            ],
            internal: Target::Cluster,
            external: Target::Local,
            local_ready: 0,
        },
        DecideCase {
            name: "local ready counts unique IPs",
            svc: Svc {
                etp_local: true,
                node_port: np,
                ..CLUSTER
            },
            endpoints: vec![
                ep("10.0.0.2:80").ready().local(),
                ep("10.0.0.2:81").ready().local(),
                ep("10.0.0.3:80").ready().local(),
                ep("10.0.0.4:80").local(),
            ],
            internal: Target::Cluster,
            external: Target::Local,
            local_ready: 2,
        },
    ];
    for case in cases {
        let port = service_port(case.svc);
        let view = ServicePortView::decide(Arc::new(port), &case.endpoints, NODE, "");
        let name = case.name;
        assert_eq!(view.internal, case.internal, "{name}: internal");
        assert_eq!(view.external, case.external, "{name}: external");
        assert_eq!(view.local_ready, case.local_ready, "{name}: local ready");
        // `external` is meaningful only for externally accessible ports.
        let targets = if view.port.externally_accessible() {
            vec![view.internal, view.external]
        } else {
            vec![view.internal]
        };
        for target in targets {
            let used = view.endpoints_for(target);
            match target {
                Target::Cluster | Target::Local => {
                    assert!(!used.is_empty(), "{name}: {target:?} has endpoints")
                }
                Target::Drop | Target::Reject => assert!(used.is_empty()),
            }
        }
    }
}

#[test]
fn endpoint_display_matches_upstream_string() {
    let v6 = Endpoint {
        ip: IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1]),
        ..ep("10.0.0.1:8080")
    };
    assert_eq!(v6.to_string(), "[fd00::1]:8080");
    assert_eq!(ep("10.0.0.1:8080").to_string(), "10.0.0.1:8080");
}
