//! The conformance suite's real-kernel tier through the `ipvs` mode's
//! factory (`IpvsFactory::build`, what `--proxy-mode=ipvs` runs) in the
//! guest: every scenario (IPv4, IPv6, SCTP), with real connections
//! through IPVS; none is skipped.
//!
//! Every probe is also traced, as `kube-proxy trace` does, through the
//! live state of the node namespace (virtual servers over netlink,
//! `ipset save`, `iptables-save`, `kube-ipvs0`), read once per scenario
//! after its sync; the prediction must give the real packet's verdict: the
//! same endpoint set (a subset under persistence), drop / reject / not
//! matched, and the same masquerade decision.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_ipvs::IpvsFactory;
use backend_ipvs::trace::IpvsRules;
use backend_ipvs::trace::live::read_live;
use proxy_core::backend::{BackendContext, BackendError, BackendFactory};
use proxy_core::conformance::netns::{
    KernelHarness, MakeBackend, Netns, PredictingHarness, Prediction, PredictionTally, Predictor,
    SendOptions,
};
use proxy_core::conformance::{
    Harness, HarnessFactory, Origin, Packet, Report, Scenario, ScenarioReport, Tier,
    load_scenarios, run_scenarios,
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

/// Traces each probe through the live state, read at the first probe: the
/// kernel tier syncs once per scenario (one harness each), before its
/// probes. `spent` adds up the time its reads and traces take.
struct Tracing {
    rules: Option<IpvsRules>,
    spent: Arc<Mutex<Duration>>,
}

impl Predictor for Tracing {
    fn predict(
        &mut self,
        harness: &KernelHarness,
        packet: &Packet,
    ) -> Result<Result<Prediction, String>, BackendError> {
        let started = Instant::now();
        let predicted = self.trace(harness, packet);
        *self.spent.lock().unwrap() += started.elapsed();
        predicted
    }
}

impl Tracing {
    /// The prediction of the live state's trace of `packet`.
    fn trace(
        &mut self,
        harness: &KernelHarness,
        packet: &Packet,
    ) -> Result<Result<Prediction, String>, BackendError> {
        let node_ips = harness.topology().node_addresses().to_vec();
        let in_interface = match packet.origin {
            Origin::Host => None,
            o => o.in_interface(),
        };
        let rules = match &mut self.rules {
            Some(rules) => rules,
            empty => {
                let family = IpFamily::of(&packet.destination);
                let read = PredictingHarness::<Tracing>::in_node(harness, read_live(family))?
                    .map_err(|e| {
                        BackendError::dataplane(format!("cannot read the IPVS state: {e}"))
                    })?;
                empty.insert(read)
            }
        };
        Ok(rules
            .trace_path(&node_ips, packet, in_interface)
            .map(|path| {
                let hops: Vec<String> = path
                    .hops
                    .iter()
                    .filter_map(|h| {
                        h.rule
                            .as_ref()
                            .map(|r| format!("  {}/{}: {r} {:?}", h.table, h.chain, h.notes))
                    })
                    .collect();
                Prediction {
                    affinity: path.choices.iter().any(|c| c.affinity),
                    explanation: hops.join("\n"),
                    outcome: path.outcome,
                }
            })
            .map_err(|e| e.to_string()))
    }
}

/// The kernel harness through `IpvsFactory::build` with the tier's send
/// options, every probe also traced into `tally` (its time added to
/// `spent`).
fn tracing_harness_factory(
    tally: Arc<Mutex<PredictionTally>>,
    spent: Arc<Mutex<Duration>>,
) -> impl HarnessFactory {
    let make: Arc<MakeBackend> = Arc::new(|ctx: &BackendContext| IpvsFactory::new().build(ctx));
    let options = SendOptions {
        forwarded_attempts: FORWARDED_ATTEMPTS,
        timeout: ATTEMPT_TIMEOUT,
        ..SendOptions::default()
    };
    move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        let inner = KernelHarness::new(ctx, make.clone())?.with_send_options(options);
        Ok(Box::new(PredictingHarness::new(
            inner,
            Tracing {
                rules: None,
                spent: spent.clone(),
            },
            "",
            tally.clone(),
        )))
    }
}

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

    let tally = Arc::new(Mutex::new(PredictionTally::default()));
    let spent = Arc::new(Mutex::new(Duration::ZERO));
    let factory = tracing_harness_factory(tally.clone(), spent.clone());
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
    // every probe of every scenario traced, and the trace agreed
    let tally = tally.lock().unwrap();
    let sent: usize = report.scenarios.iter().map(|s| s.packets.len()).sum();
    println!(
        "ipvs trace: {} of {sent} probes traced, {} mispredicted; reading and tracing took {:?} (summed over the threads)",
        tally.checked,
        tally.mismatches.len(),
        spent.lock().unwrap()
    );
    tally.assert_all_agree("ipvs trace", 100);
    assert_eq!(tally.checked, sent, "every probe sent is traced");
}
