//! The embedding example runs the whole proxy from its own runtime, with
//! its own backend and metrics registry, and balances over both endpoints
//! after the change it pushes while running.

// Test code: a failure to run the example fails the test.
#![allow(clippy::expect_used)]

use std::process::Command;

#[test]
fn embed_example_runs_the_proxy_with_its_own_backend_and_metrics() {
    let output = Command::new(env!("CARGO_BIN_EXE_embed"))
        .output()
        .expect("run embed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "embed failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("first sync: 1 service port(s), healthy: true"),
        "{stdout}"
    );
    // After the second endpoint was pushed, both answer.
    let after_change = stdout
        .split_once("GET 127.0.0.1:30082")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('\n'))
        .map(|(_, rest)| rest)
        .expect("the answers after the change");
    assert!(
        after_change.contains("cart at 127.0.0.16:8082")
            && after_change.contains("cart at 127.0.0.17:8082"),
        "{stdout}"
    );
    // Its own backend ran both syncs, and upstream's metrics are in its
    // own registry next to its own metric.
    assert!(stdout.contains("embed_backend_syncs_total 2"), "{stdout}");
    assert!(
        stdout.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 2"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped"), "{stdout}");
}
