//! The backend-driving example runs and balances over both endpoints after its
//! partial sync.

// Test code: a failure to run the example fails the test.
#![allow(clippy::expect_used)]

use std::process::Command;

#[test]
fn embed_backend_example_syncs_and_serves() {
    let output = Command::new(env!("CARGO_BIN_EXE_embed_backend"))
        .output()
        .expect("run embed_backend");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "embed_backend failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("partial sync of 1 port(s)"), "{stdout}");
    assert!(
        stdout.contains("api at 127.0.0.14:8081") && stdout.contains("api at 127.0.0.15:8081"),
        "{stdout}"
    );
}
