//! The conformance suite's real-kernel tier through the `ipvs` mode's
//! factory (`IpvsFactory::build`, what `--proxy-mode=ipvs` runs) in the
//! guest: every scenario (IPv4, IPv6, SCTP), with real connections
//! through IPVS; none is skipped.

use backend_ipvs::IpvsFactory;
use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::conformance::netns::{Netns, SendOptions, kernel_harness_factory_with};
use std::time::{Duration, Instant};

use proxy_core::conformance::{
    HarnessFactory, Report, Scenario, ScenarioReport, Tier, load_scenarios, run_scenarios,
};
use proxy_core::{IpFamily, NodeInfo};

use crate::guest;

/// Scenarios run at once: each has its own namespaces (and so its own
/// IPVS table, ipsets, iptables and sysctls), and the guest has 2 vCPUs;
/// much of a scenario is waiting (process spawns, timeouts), so the tier
/// takes about half as long.
const PARALLEL: usize = 3;

/// Connections per forwarded packet (the harness's default is 64): the
/// scenarios expect at most 3 endpoints, and one of 3 equally likely
/// endpoints is missed by 32 connections with probability
/// `3·(2/3)^32` ≈ 7e-6 (2 endpoints: 5e-10); it halves the tier's time
/// under TCG.
const FORWARDED_ATTEMPTS: usize = 32;

/// How long one attempt may take before it counts as dropped (the
/// harness's default is 1.5 s): under TCG with scenarios in parallel on a
/// loaded host, an SCTP association (two round trips, then the shutdown)
/// once took longer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `scenarios` on `threads` threads (scenario `i` on thread
/// `i % threads`), each with its own runtime; the report keeps their
/// order, with each scenario's time.
fn run_in_parallel(
    factory: &dyn HarnessFactory,
    scenarios: &[Scenario],
    threads: usize,
) -> (Report, Vec<(Duration, String)>) {
    let results: Vec<Vec<(usize, ScenarioReport, Duration)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let mut done = Vec::new();
                    for (i, scenario) in scenarios.iter().enumerate().skip(t).step_by(threads) {
                        let started = Instant::now();
                        let one = rt.block_on(run_scenarios(
                            factory,
                            Tier::Kernel,
                            std::slice::from_ref(scenario),
                        ));
                        for s in one.scenarios {
                            done.push((i, s, started.elapsed()));
                        }
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<(usize, ScenarioReport, Duration)> = results.into_iter().flatten().collect();
    all.sort_by_key(|(i, _, _)| *i);
    let times = all.iter().map(|(_, s, d)| (*d, s.name.clone())).collect();
    let report = Report {
        tier: Tier::Kernel,
        scenarios: all.into_iter().map(|(_, s, _)| s).collect(),
    };
    (report, times)
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn conformance_kernel_tier_passes_through_ipvs() {
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

    let factory = kernel_harness_factory_with(
        |ctx| IpvsFactory::new().build(ctx),
        SendOptions {
            forwarded_attempts: FORWARDED_ATTEMPTS,
            timeout: ATTEMPT_TIMEOUT,
            ..SendOptions::default()
        },
    );
    let started = std::time::Instant::now();
    let (report, mut times) = run_in_parallel(&factory, &load_scenarios(), PARALLEL);
    times.sort();
    times.reverse();
    println!("{report}");
    println!(
        "slowest scenarios (time, name): {:?}",
        &times[..times.len().min(8)]
    );
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
