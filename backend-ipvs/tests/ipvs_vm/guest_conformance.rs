//! The conformance suite's real-kernel tier through the `ipvs` mode's
//! factory (`IpvsFactory::build`, what `--proxy-mode=ipvs` runs) in the
//! guest: every scenario (IPv4, IPv6, SCTP), with real connections
//! through IPVS; none is skipped.

use backend_ipvs::IpvsFactory;
use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::conformance::netns::{Netns, kernel_harness_factory};
use proxy_core::conformance::{Report, Tier, load_scenarios, run_scenarios};
use proxy_core::{IpFamily, NodeInfo};

use crate::guest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
async fn conformance_kernel_tier_passes_through_ipvs() {
    guest::require("conformance_kernel_tier_passes_through_ipvs");
    // the factory's check passes on a kernel with IPVS, for both families
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
    v6.expect("IPVS mode's IPv6 check passes in the VM");

    let factory = kernel_harness_factory(|ctx| IpvsFactory::new().build(ctx));
    let started = std::time::Instant::now();
    // one scenario at a time (the kernel tier chains nothing between
    // them), to show where the time goes
    let mut report = Report {
        tier: Tier::Kernel,
        scenarios: Vec::new(),
    };
    let mut times = Vec::new();
    for scenario in load_scenarios() {
        let t = std::time::Instant::now();
        let one = run_scenarios(&factory, Tier::Kernel, std::slice::from_ref(&scenario)).await;
        times.push((t.elapsed(), scenario.name().to_string(), scenario.packets().len()));
        report.scenarios.extend(one.scenarios);
    }
    times.sort();
    times.reverse();
    println!("{report}");
    println!("slowest scenarios (time, name, packets): {:?}", &times[..times.len().min(12)]);
    println!(
        "conformance through IPVS: {} passed, {} skipped, {} failed in {:?}",
        report.passed().count(),
        report.skipped().count(),
        report.failed().count(),
        started.elapsed()
    );
    report.assert_passed();
    assert!(report.passed().count() > 0, "{report}");
    assert_eq!(report.skipped().count(), 0, "nothing is skipped: {report}");
    // SCTP with real associations: the guest kernel has it
    let sctp: Vec<String> = crate::guest_sctp::sctp_scenarios()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    crate::guest_sctp::assert_all_passed(&report, &sctp);
}
