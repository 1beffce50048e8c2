//! The IPVS tier: tests that need a kernel with IPVS, run inside a QEMU VM
//! (`backend-ipvs/vm/ipvs-vm.sh`), since the host kernel may have none.
//!
//! One host test, [`ipvs_vm_tier`], boots the VM once and runs this same
//! binary inside it with `--ignored`: every guest test is `#[ignore]`d on
//! the host and runs in the guest, where `guest::require` finds the VM's
//! marker. A guest test run on the host by hand fails and says so.
//!
//! The host test skips with a reason when not root (QEMU, `apt-get` and the
//! kernel package need it), or fails instead when
//! `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod guest;
mod guest_binary;
mod guest_conformance;
mod guest_diff;
mod guest_dual_stack;
mod guest_ipvsadm;
mod guest_netlink;
mod guest_sctp;
mod guest_sync;
mod vm;

// The e2e tests' blocking HTTP GET (for the binary's /healthz), shared.
#[path = "../../../kube-proxy/tests/e2e/http.rs"]
mod http;

use std::io::Write as _;

/// The tier's boot time limit (seconds).
const TIER_TIME_LIMIT_SECS: u32 = 480;

/// Boots the VM, runs every guest test inside it, and fails when one fails.
#[test]
fn ipvs_vm_tier() {
    let Some(vm) = vm::Vm::prepare_or_skip("ipvs_vm_tier") else {
        return;
    };
    // The guest tests take ~210-230 s of guest time on 2 cores at load 4, more
    // when other builds share them; the limit only catches a hung guest.
    let vm = vm.sized(256, TIER_TIME_LIMIT_SECS);
    let exe = std::env::current_exe().expect("the test binary's path");
    let kube_proxy = vm::kube_proxy_binary(&exe).unwrap_or_else(|e| panic!("{e}"));
    let run = vm
        .run(
            "ipvs_vm_tier",
            &[&exe, &kube_proxy],
            &guest::command_line(&exe),
        )
        .unwrap_or_else(|e| panic!("the IPVS VM did not run: {e}"));
    // Straight to stderr: the harness captures the output of passing tests,
    // and the guest's results and timings should show in CI logs.
    let _ = writeln!(std::io::stderr(), "{}\n{}", run.output, run.timings());
    assert_eq!(
        run.exit_code,
        Some(0),
        "the guest tests failed (console: {})",
        run.console.display()
    );
    let summary = run
        .output
        .lines()
        .find(|l| l.starts_with("test result: "))
        .expect("the guest printed a test summary");
    assert!(
        summary.starts_with("test result: ok.") && !summary.contains(" 0 passed"),
        "guest tests: {summary}"
    );
}

/// The benchmark of issue 10 (10,000 services x 10 endpoints against
/// `ipvsadm -R`, one endpoint change, an idle sync) in a VM of its own;
/// not in CI. Run it as root with
/// `cargo test -p backend-ipvs --all-features --test ipvs_vm -- --ignored ipvs_vm_bench --nocapture`.
#[test]
#[ignore = "benchmark: boots a VM with 512 MiB for 10,000 services (about 2 min)"]
fn ipvs_vm_bench() {
    let Some(vm) = vm::Vm::prepare_or_skip("ipvs_vm_bench") else {
        return;
    };
    let vm = vm.sized(512, 900);
    let exe = std::env::current_exe().expect("the test binary's path");
    let run = vm
        .run(
            "ipvs_vm_bench",
            &[&exe],
            &guest::bench_command_line(&exe, "guest_sync::bench_ten_thousand_services"),
        )
        .unwrap_or_else(|e| panic!("the IPVS VM did not run: {e}"));
    let _ = writeln!(std::io::stderr(), "{}\n{}", run.output, run.timings());
    assert_eq!(run.exit_code, Some(0), "the benchmark failed");
}
