//! The shared conformance suite, kernel tier: the backend serves real
//! sockets inside a network namespace, and packets are real connections.
//! Needs root (network namespaces); skips with the reason otherwise, and
//! fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).

use backend_userspace::UserspaceBackend;
use proxy_core::Backend;
use proxy_core::conformance::netns::{kernel_harness_factory, privileged_or_skip};
use proxy_core::conformance::{self, Tier};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kernel_tier() {
    if !privileged_or_skip("backend-userspace conformance_kernel_tier") {
        return;
    }
    let factory =
        kernel_harness_factory(|ctx| Ok(Box::new(UserspaceBackend::new(ctx)) as Box<dyn Backend>));
    let report = conformance::run(&factory, Tier::Kernel).await;
    report.assert_passed();
    assert!(report.passed().count() > 0, "no scenario ran:\n{report}");
}
