//! The conformance suite's real-kernel tier through the `ipvs` mode's
//! factory (`IpvsFactory::build`, what `--proxy-mode=ipvs` runs) in the
//! guest: every scenario its capabilities allow, with real connections
//! through IPVS; the others are skipped with the capability named.

use backend_ipvs::{IPV6_NOT_IMPLEMENTED, IpvsFactory};
use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::conformance::netns::{Netns, kernel_harness_factory};
use proxy_core::conformance::{Tier, run};
use proxy_core::{BackendErrorKind, IpFamily, NodeInfo};

use crate::guest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
async fn conformance_kernel_tier_passes_through_ipvs() {
    guest::require("conformance_kernel_tier_passes_through_ipvs");
    // the factory's check passes on a kernel with IPVS, and refuses IPv6
    let ns = Netns::new().unwrap();
    let (v4, v6) = ns
        .run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let check = |family| {
                let ctx = BackendContext::for_tests(family, NodeInfo::named("n").shared());
                rt.block_on(IpvsFactory::new().check(&ctx))
            };
            (check(IpFamily::V4), check(IpFamily::V6))
        })
        .unwrap();
    v4.expect("IPVS mode's check passes in the VM");
    let v6 = v6.unwrap_err();
    assert_eq!(v6.kind(), BackendErrorKind::Unsupported);
    assert_eq!(v6.message(), IPV6_NOT_IMPLEMENTED);

    let factory = kernel_harness_factory(|ctx| IpvsFactory::new().build(ctx));
    let started = std::time::Instant::now();
    let report = run(&factory, Tier::Kernel).await;
    println!("{report}");
    println!(
        "conformance through IPVS: {} passed, {} skipped, {} failed in {:?}",
        report.passed().count(),
        report.skipped().count(),
        report.failed().count(),
        started.elapsed()
    );
    report.assert_passed();
    assert!(report.passed().count() > 0, "{report}");
}
