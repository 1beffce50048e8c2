//! The shared conformance suite, fake tier: the backend in dry-run mode
//! (listeners recorded, no sockets) with its route-table tracer.

use backend_userspace::fake::RouteTableHarness;
use backend_userspace::{Options, RedirectMode};
use proxy_core::BackendError;
use proxy_core::backend::BackendContext;
use proxy_core::conformance::{self, Harness, Tier};

/// A harness factory for backends with redirect rules `mode`.
fn harness(
    mode: RedirectMode,
) -> impl Fn(&BackendContext) -> Result<Box<dyn Harness>, BackendError> + Send + Sync {
    RouteTableHarness::factory(move |ctx| Options::from_context(ctx).with_redirect(mode))
}

/// Without privileges: node ports and local VIPs only.
#[tokio::test]
async fn conformance_fake_tier() {
    let report = conformance::run(&harness(RedirectMode::Off), Tier::Fake).await;
    report.assert_passed();
}

/// With redirect rules (modelled: the dry run records the table and the
/// tracer applies it before any listener): ClusterIPs, external and
/// load-balancer IPs too.
#[tokio::test]
async fn conformance_fake_tier_with_redirect_rules() {
    let report = conformance::run(&harness(RedirectMode::On), Tier::Fake).await;
    eprintln!("{report}");
    report.assert_passed();
    let without = conformance::run(&harness(RedirectMode::Off), Tier::Fake).await;
    assert!(
        report.passed().count() > without.passed().count(),
        "redirect rules should make more scenarios run:\n{report}"
    );
}
