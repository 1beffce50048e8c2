//! SCTP for every mode: the host kernel of CI may have no SCTP, so the
//! conformance scenarios that send SCTP run here, in the guest (whose
//! kernel loads `sctp`), for the iptables and nftables modes too. The ipvs
//! mode's run them in its full tier (`guest_conformance.rs`).

use backend_iptables::IptablesBackend;
use backend_nftables::NftablesBackend;
use proxy_core::Backend;
use proxy_core::backend::Capability;
use proxy_core::conformance::netns::{kernel_harness_factory, kernel_has_sctp};
use proxy_core::conformance::{Report, Scenario, Tier, load_scenarios, run_scenarios};

use crate::guest;

/// The scenarios that need SCTP (every one with an SCTP packet declares it).
pub fn sctp_scenarios() -> Vec<Scenario> {
    load_scenarios()
        .into_iter()
        .filter(|s| s.requirements().contains(&Capability::Sctp))
        .collect()
}

/// Every scenario of `report` in `names` passed: none skipped, none failed.
pub fn assert_all_passed(report: &Report, names: &[String]) {
    report.assert_passed();
    for name in names {
        assert!(
            report.passed().any(|s| &s.name == name),
            "{name} did not pass: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
async fn sctp_scenarios_pass_through_iptables_and_nftables() {
    guest::require("sctp_scenarios_pass_through_iptables_and_nftables");
    assert!(kernel_has_sctp(), "the guest kernel makes SCTP sockets");
    let scenarios = sctp_scenarios();
    let names: Vec<String> = scenarios.iter().map(|s| s.name().to_string()).collect();
    assert!(!names.is_empty(), "the catalog has SCTP scenarios");

    let started = std::time::Instant::now();
    let iptables =
        kernel_harness_factory(|ctx| Ok(Box::new(IptablesBackend::new(ctx)?) as Box<dyn Backend>));
    let report = run_scenarios(&iptables, Tier::Kernel, &scenarios).await;
    println!("iptables:\n{report}");
    assert_all_passed(&report, &names);

    let nftables =
        kernel_harness_factory(|ctx| Ok(Box::new(NftablesBackend::new(ctx)?) as Box<dyn Backend>));
    let report = run_scenarios(&nftables, Tier::Kernel, &scenarios).await;
    println!("nftables:\n{report}");
    assert_all_passed(&report, &names);
    println!(
        "SCTP scenarios {names:?} passed through iptables and nftables in {:?}",
        started.elapsed()
    );
}
