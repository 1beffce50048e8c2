//! The quickstart works end to end: HTTP servers on loopback, kube-proxy in
//! userspace mode from the manifests, 30 requests spread over the three
//! endpoints.

// Test code: a failure to run the example fails the test.
#![allow(clippy::expect_used)]

use std::process::Command;

fn run(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .args(args)
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "quickstart failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn quickstart_spreads_requests_over_the_three_endpoints() {
    let stdout = run(&["--in-process", "--once"]);
    let answered: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("request"))
        .collect();
    assert_eq!(answered.len(), 30, "{stdout}");
    // Round robin: each endpoint answers a third of the requests.
    assert!(
        stdout.contains("answers: hello-1: 10, hello-2: 10, hello-3: 10"),
        "{stdout}"
    );
}
