//! The shared conformance suite against the fake dataplane (tier 2): every
//! scenario's packets traced through the rendered rules, plus the state
//! checks (partial sync equals full sync, no-op sync writes nothing,
//! cleanup leaves nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use backend_iptables::fake::FakeHarness;
use proxy_core::conformance::{Tier, run};

#[tokio::test]
async fn conformance_suite_passes_on_the_fake_dataplane() {
    let report = run(&FakeHarness::boxed, Tier::Fake).await;
    println!("{report}");
    report.assert_passed();
    // iptables mode can express everything: nothing may be skipped.
    assert_eq!(report.skipped().count(), 0, "{report}");
}
