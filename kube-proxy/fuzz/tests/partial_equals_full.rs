//! Property: random sequences of Service, EndpointSlice and Node changes,
//! synced in batches as the runtime does; after every sync each backend's
//! fake dataplane equals that of a full sync from scratch (see
//! `kube_proxy_fuzz::churn`). Bounded case counts keep this to seconds.

use backend_userspace::Options;
use backend_userspace::fake::RouteTableHarness;
use kube_proxy_fuzz::churn::{SequenceStats, batches, check_sequence, context};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use proxy_core::IpFamily;
use proxy_core::conformance::HarnessFactory;

/// Sequences per backend and family.
const CASES: u32 = 128;
/// Syncs per sequence, at most.
const SYNCS: usize = 10;

/// Runs [`CASES`] sequences through fresh harnesses of `factory` for both
/// families; returns the syncs done.
fn run(name: &str, factory: &dyn HarnessFactory) -> SequenceStats {
    let total = std::cell::Cell::new(SequenceStats::default());
    for family in [IpFamily::V4, IpFamily::V6] {
        let ctx = context(family);
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&batches(SYNCS), |batches| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let stats = rt
                .block_on(check_sequence(factory, &ctx, &batches))
                .map_err(TestCaseError::fail)?;
            let mut sum = total.get();
            sum.partial += stats.partial;
            sum.full += stats.full;
            total.set(sum);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{name} {family}: {e}");
        }
    }
    let total = total.get();
    println!(
        "{name}: {} partial and {} full syncs, each equal to a full sync from scratch",
        total.partial, total.full
    );
    assert!(
        total.partial > total.full,
        "{name}: too few partial syncs: {total:?}"
    );
    total
}

#[test]
fn iptables_partial_sync_equals_full_sync() {
    run("iptables", &backend_iptables::fake::FakeHarness::boxed);
}

#[test]
fn nftables_partial_sync_equals_full_sync() {
    run("nftables", &backend_nftables::fake::fake_harness_factory);
}

#[test]
fn userspace_partial_sync_equals_full_sync() {
    // The dry-run backend with its route-table tracer, as in its conformance
    // fake tier.
    run(
        "userspace",
        &RouteTableHarness::factory(Options::from_context),
    );
}
