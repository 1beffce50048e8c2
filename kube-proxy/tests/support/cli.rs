//! Running the `kube-proxy` binary from a test (shared by the `trace` and
//! `diff` command tests, included with `#[path]`).
#![allow(dead_code)] // each test uses its part

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

/// Runs the binary with `args` (in this namespace, logs at their default).
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// `kube-proxy trace --rules RULES ARGS`.
pub fn trace_rules(rules: &Path, args: &[&str]) -> Output {
    let mut all = vec!["trace", "--rules", rules.to_str().unwrap()];
    all.extend(args);
    run(&all)
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the command failed with exit code 2 and said `needle` on
/// stderr.
pub fn assert_error_saying(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}
