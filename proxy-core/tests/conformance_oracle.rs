//! Tier 1 of the conformance suite: every scenario's expected outcome is
//! what the reference interpreter says over the core's `NodeView`.
#![cfg(feature = "conformance")]

use std::collections::BTreeSet;

use proxy_core::backend::{Capability, LocalTrafficDetector};
use proxy_core::conformance::oracle::{self, Destination};
use proxy_core::conformance::{Origin, Outcome, SCENARIO_FILES, Scenario, load_scenarios};
use proxy_core::{IpFamily, Protocol};

#[test]
fn every_scenario_file_is_embedded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/scenarios");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let embedded: BTreeSet<String> = SCENARIO_FILES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        on_disk, embedded,
        "add new files to SCENARIO_FILES in src/conformance/catalog.rs"
    );
    assert_eq!(
        embedded.len(),
        SCENARIO_FILES.len(),
        "a file is listed twice"
    );
}

#[test]
fn scenarios_are_named_after_their_files_and_stay_small() {
    let scenarios = load_scenarios();
    assert!(scenarios.len() >= 30, "only {} scenarios", scenarios.len());
    for (s, (file, _)) in scenarios.iter().zip(SCENARIO_FILES) {
        assert_eq!(format!("{}.yaml", s.name()), *file);
        assert!(!s.description().is_empty(), "{}: no description", s.name());
        let n = s.packets().len();
        assert!(
            (1..=6).contains(&n),
            "{}: {n} packets (keep 1-6: the kernel tier pays for each)",
            s.name()
        );
        let dropped = s
            .packets()
            .iter()
            .filter(|p| p.expect == Outcome::Dropped)
            .count();
        assert!(
            dropped <= 2,
            "{}: {dropped} dropped packets cost a timeout each in the kernel tier",
            s.name()
        );
    }
}

#[test]
fn packets_belong_to_the_scenario_family() {
    for s in load_scenarios() {
        for p in s.packets() {
            assert!(
                s.family().contains(&p.packet.source) && s.family().contains(&p.packet.destination),
                "{}: packet {} is not {}",
                s.name(),
                p.packet,
                s.family()
            );
            if p.packet.origin == Origin::Host {
                assert!(
                    s.node().addresses.contains(&p.packet.source)
                        || s.family().loopback_net().contains(&p.packet.source),
                    "{}: host packet {} must come from a node or loopback address",
                    s.name(),
                    p.packet
                );
            }
        }
    }
}

#[test]
fn oracle_agrees_with_every_scenario() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for s in load_scenarios() {
        for p in s.packets() {
            let trace = oracle::trace(s.view(), s.context(), &p.packet);
            checked += 1;
            if trace.outcome != p.expect {
                failures.push(format!(
                    "{}: packet {}\n    file says {}\n    oracle    {} ({})",
                    s.name(),
                    p.packet,
                    p.expect,
                    trace.outcome,
                    trace.reason
                ));
            }
            if trace.ambiguous {
                failures.push(format!(
                    "{}: packet {} hairpins to only some of its endpoints; give hairpin cases one endpoint",
                    s.name(),
                    p.packet
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} packets disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn scenarios_declare_the_capabilities_a_reader_would_miss() {
    // Inferred requirements are added by the suite anyway; these are the
    // ones a reader of the file should see declared.
    for s in load_scenarios() {
        for cap in [
            Capability::SessionAffinity,
            Capability::Sctp,
            Capability::Ipv6,
            Capability::SourceRanges,
        ] {
            if s.requirements().contains(&cap) {
                assert!(
                    s.declared_requirements().contains(&cap),
                    "{}: declare `requires: [{cap:?}]`",
                    s.name()
                );
            }
        }
    }
}

/// The scenarios together cover every row of the behaviour inventory that
/// the suite claims to cover.
#[test]
fn scenarios_cover_the_inventory() {
    let scenarios = load_scenarios();
    let mut outcomes = BTreeSet::new();
    let mut destinations = BTreeSet::new();
    let mut detectors = BTreeSet::new();
    let mut protocols = BTreeSet::new();
    let mut origins = BTreeSet::new();
    let mut families = BTreeSet::new();
    let mut caps = BTreeSet::new();
    for s in &scenarios {
        families.insert(s.family());
        detectors.insert(match &s.context().local_detector {
            LocalTrafficDetector::None => "none",
            LocalTrafficDetector::Cidr(_) => "cidr",
            LocalTrafficDetector::BridgeInterface(_) => "bridge",
            LocalTrafficDetector::InterfaceNamePrefix(_) => "prefix",
        });
        for c in s.requirements() {
            caps.insert(format!("{c:?}"));
        }
        for p in s.packets() {
            outcomes.insert(match &p.expect {
                Outcome::Forwarded {
                    masqueraded: true, ..
                } => "forwarded, masqueraded",
                Outcome::Forwarded {
                    masqueraded: false, ..
                } => "forwarded",
                Outcome::Dropped => "dropped",
                Outcome::Rejected => "rejected",
                Outcome::NotMatched => "not matched",
            });
            protocols.insert(p.packet.protocol);
            origins.insert(format!("{}", p.packet.origin));
            let trace = oracle::trace(s.view(), s.context(), &p.packet);
            if let Some(d) = trace.destination {
                destinations.insert(format!("{d:?}"));
            }
        }
    }
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    let all_destinations = [
        Destination::ClusterIp,
        Destination::ExternalIp,
        Destination::LoadBalancerIp,
        Destination::NodePort,
    ];
    for d in all_destinations {
        assert!(
            destinations.contains(&format!("{d:?}")),
            "no packet to a {d:?}"
        );
    }
    assert_eq!(detectors.len(), 4, "{detectors:?}");
    assert_eq!(
        protocols,
        BTreeSet::from([Protocol::Tcp, Protocol::Udp, Protocol::Sctp])
    );
    assert_eq!(origins.len(), 3, "{origins:?}");
    assert_eq!(families, BTreeSet::from([IpFamily::V4, IpFamily::V6]));
    for cap in [
        "SessionAffinity",
        "SourceRanges",
        "Reject",
        "DetectLocal",
        "Ipv6",
        "Sctp",
    ] {
        assert!(caps.contains(cap), "no scenario requires {cap}");
    }
}

fn one(yaml: &str) -> Scenario {
    match Scenario::from_yaml("inline.yaml", yaml) {
        Ok(s) => s,
        Err(e) => panic!("inline scenario: {e}"),
    }
}

const HAIRPIN_TWO_ENDPOINTS: &str = r#"
name: inline
description: hairpin to one of two endpoints
objects:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      clusterIP: 10.96.0.10
      ports: [{port: 80, targetPort: 8080}]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
    addressType: IPv4
    ports: [{port: 8080}]
    endpoints:
      - {addresses: [10.244.1.10], nodeName: node-a}
      - {addresses: [10.244.1.11], nodeName: node-a}
packets:
  - {origin: local_pod, source: 10.244.1.10, destination: 10.96.0.10, port: 80, expect: not_matched}
"#;

#[test]
fn hairpin_to_one_of_several_endpoints_is_ambiguous() {
    let s = one(HAIRPIN_TWO_ENDPOINTS);
    let trace = oracle::trace(s.view(), s.context(), &s.packets()[0].packet);
    assert!(trace.ambiguous);
    // The decision of the endpoints that are not the source.
    assert!(matches!(
        trace.outcome,
        Outcome::Forwarded {
            masqueraded: false,
            ..
        }
    ));
    // Another pod is not ambiguous.
    let mut other = s.packets()[0].packet.clone();
    other.source = "10.244.1.12".parse().unwrap();
    assert!(!oracle::trace(s.view(), s.context(), &other).ambiguous);
}

const NODE_PORT_NO_ENDPOINTS_RESTRICTED: &str = r#"
name: inline
description: node port without endpoints, nodePortAddresses restricted
config:
  nodePortAddresses: [10.0.0.0/24]
objects:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      type: NodePort
      clusterIP: 10.96.0.10
      ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
packets:
  - {origin: host, source: 127.0.0.1, destination: 127.0.0.1, port: 30080, expect: rejected}
"#;

#[test]
fn node_port_without_endpoints_is_rejected_on_every_local_address() {
    // The filter rule matches `--dst-type LOCAL`, not nodePortAddresses.
    let s = one(NODE_PORT_NO_ENDPOINTS_RESTRICTED);
    let p = &s.packets()[0];
    assert_eq!(
        oracle::expected(s.view(), s.context(), &p.packet),
        Outcome::Rejected
    );
    let mut remote = p.packet.clone();
    remote.destination = "10.0.0.2".parse().unwrap();
    assert_eq!(
        oracle::expected(s.view(), s.context(), &remote),
        Outcome::NotMatched
    );
}

#[test]
fn packets_of_the_other_family_are_not_matched() {
    let s = one(HAIRPIN_TWO_ENDPOINTS);
    let mut p = s.packets()[0].packet.clone();
    p.source = "fd00:244:1::10".parse().unwrap();
    p.destination = "fd00:96::10".parse().unwrap();
    assert_eq!(
        oracle::expected(s.view(), s.context(), &p),
        Outcome::NotMatched
    );
}

#[test]
fn a_broken_scenario_names_the_file_and_the_problem() {
    let err = Scenario::from_yaml("bad.yaml", "name: x\npackets: []\nbogus: 1\n").unwrap_err();
    assert!(err.to_string().contains("bad.yaml"), "{err}");
    let err = Scenario::from_yaml("bad.yaml", "name: x\nobjects: [{kind: Pod}]\npackets: []\n")
        .unwrap_err();
    assert!(err.to_string().contains("Pod"), "{err}");
    let err = Scenario::from_yaml(
        "bad.yaml",
        "name: x\nconfig: {clusterCIDR: nonsense}\npackets: []\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("clusterCIDR"), "{err}");
}
