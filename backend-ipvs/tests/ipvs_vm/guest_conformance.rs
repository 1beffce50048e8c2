//! The conformance suite's real-kernel tier against [`IpvsBackend`] in the
//! guest: every scenario its capabilities allow, with real connections
//! through IPVS; the others are skipped with the capability named.

use std::sync::Arc;

use backend_ipvs::{IpvsBackend, SystemHost};
use proxy_core::Backend;
use proxy_core::conformance::netns::kernel_harness_factory;
use proxy_core::conformance::{Tier, run};
use proxy_core::exec::SystemExecutor;

use crate::guest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
async fn conformance_kernel_tier_passes_through_ipvs() {
    guest::require("conformance_kernel_tier_passes_through_ipvs");
    let factory = kernel_harness_factory(|ctx| {
        Ok(Box::new(IpvsBackend::new(
            ctx,
            Arc::new(SystemExecutor),
            Arc::new(SystemHost),
        )?) as Box<dyn Backend>)
    });
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
