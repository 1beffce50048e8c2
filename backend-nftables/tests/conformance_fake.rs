//! The shared conformance suite against the in-memory nftables (tier 2).
//!
//! The scenarios record what upstream's *iptables* mode does. Upstream's
//! nftables mode differs on purpose in two places, and this backend follows
//! nftables mode; those packets must show the nftables outcome exactly, and
//! every other packet and state check must pass:
//!
//! - a known ClusterIP on a port or protocol it does not serve is rejected
//!   (`cluster-ips-check`: `ip daddr @cluster-ips reject`); iptables mode
//!   lets it through unmatched;
//! - nftables mode has no localhost node ports (`ip daddr != 127.0.0.0/8`
//!   in the node-port rule; upstream logs an error for loopback
//!   `nodePortAddresses`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use backend_nftables::fake::fake_harness_factory;
use proxy_core::conformance::{self, Outcome, Tier};

/// `(scenario, destination port, upstream nftables outcome)`.
const NFTABLES_DIVERGENCES: &[(&str, u16, Outcome)] = &[
    ("clusterip-multiport", 8080, Outcome::Rejected),
    ("clusterip-tcp-udp", 9090, Outcome::Rejected),
    ("clusterip-sctp", 80, Outcome::Rejected),
    ("clusterip-no-endpoints", 81, Outcome::Rejected),
    ("ipv6-clusterip", 81, Outcome::Rejected),
    ("nodeport-localhost", 30080, Outcome::NotMatched),
];

#[tokio::test]
async fn every_scenario_passes_on_the_fake_dataplane() {
    let report = conformance::run(&fake_harness_factory, Tier::Fake).await;
    println!("{report}");
    let mut problems = Vec::new();
    let mut divergences_seen = 0;
    for s in &report.scenarios {
        for c in &s.checks {
            if let Some(f) = &c.failure {
                problems.push(format!("{}: check {:?} failed: {f}", s.name, c.name));
            }
        }
        for p in s.packets.iter().filter(|p| !p.passed) {
            let allowed = NFTABLES_DIVERGENCES
                .iter()
                .find(|(name, port, _)| *name == s.name && *port == p.packet.port);
            match allowed {
                Some((_, _, want)) if p.actual.as_ref() == Ok(want) => divergences_seen += 1,
                _ => problems.push(format!(
                    "{}: {} expected {:?}, got {:?}",
                    s.name, p.packet, p.expected, p.actual
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "conformance failures:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        divergences_seen,
        NFTABLES_DIVERGENCES.len(),
        "a listed nftables divergence no longer shows: update NFTABLES_DIVERGENCES"
    );
    assert!(
        report.scenarios.len() >= 30,
        "the suite ran only {} scenarios",
        report.scenarios.len()
    );
}
