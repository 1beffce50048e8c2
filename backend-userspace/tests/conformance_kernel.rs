//! The shared conformance suite, kernel tier: the backend serves real
//! sockets inside a network namespace, and packets are real connections.
//! Needs root (network namespaces); skips with the reason otherwise, and
//! fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).

use backend_userspace::{Options, RedirectMode, UserspaceBackend};
use proxy_core::Backend;
use proxy_core::conformance::netns::{kernel_harness_factory, privileged_or_skip};
use proxy_core::conformance::{self, Tier};

/// As the binary builds it: as root (in the node namespace) with `nft`
/// present, redirect rules are on and capture every VIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kernel_tier() {
    if !privileged_or_skip("backend-userspace conformance_kernel_tier") {
        return;
    }
    let factory = kernel_harness_factory(|ctx| {
        let backend = UserspaceBackend::new(ctx);
        assert!(
            backend.redirecting(),
            "root with nft in PATH must enable redirect rules"
        );
        Ok(Box::new(backend) as Box<dyn Backend>)
    });
    let report = conformance::run(&factory, Tier::Kernel).await;
    eprintln!("{report}");
    report.assert_passed();
    assert!(report.passed().count() > 0, "no scenario ran:\n{report}");
}

/// Without redirect rules, as an unprivileged process runs it: node ports
/// and VIPs assigned to the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kernel_tier_without_redirect_rules() {
    if !privileged_or_skip("backend-userspace conformance_kernel_tier_without_redirect_rules") {
        return;
    }
    let factory = kernel_harness_factory(|ctx| {
        let options = Options::from_context(ctx).with_redirect(RedirectMode::Off);
        Ok(Box::new(UserspaceBackend::with_options(ctx, options)) as Box<dyn Backend>)
    });
    let report = conformance::run(&factory, Tier::Kernel).await;
    eprintln!("{report}");
    report.assert_passed();
    assert!(report.passed().count() > 0, "no scenario ran:\n{report}");
}
