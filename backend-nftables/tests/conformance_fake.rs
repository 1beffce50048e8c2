//! The shared conformance suite against the in-memory nftables (tier 2).
//!
//! Upstream's nftables mode differs from iptables mode on purpose in two
//! places (a known ClusterIP on a port it does not serve is rejected by
//! `cluster-ips-check`; there are no localhost node ports); the scenario files
//! record those outcomes with `expect_in_mode: {nftables: ...}`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use backend_nftables::fake::fake_harness_factory;
use proxy_core::conformance::{self, Tier};

#[tokio::test]
async fn every_scenario_passes_on_the_fake_dataplane() {
    let report = conformance::run(&fake_harness_factory, Tier::Fake).await;
    report.assert_passed();
    assert!(
        report.scenarios.len() >= 30,
        "the suite ran only {} scenarios",
        report.scenarios.len()
    );
}
