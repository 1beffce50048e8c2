//! The route-table backend passes the shared conformance suite.

use examples::route_table_harness::RouteTableHarness;
use proxy_core::conformance::{self, Tier};

#[tokio::test]
async fn route_table_backend_passes_the_fake_tier() {
    let report = conformance::run(&RouteTableHarness::factory, Tier::Fake).await;
    report.assert_passed();
    // It models ClusterIPs, node ports and external addresses: most
    // scenarios must run, not be skipped.
    assert!(
        report.passed().count() > report.skipped().count(),
        "{report}"
    );
}
