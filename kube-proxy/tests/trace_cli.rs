//! `kube-proxy trace` and `kube-proxy diff` as commands: tracing a dump on
//! a laptop (no root), JSON output, and the plain errors (a missing or
//! unknown dump, mixed families, no rules in the namespace, no permission).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::{Command, Output};

use proxy_core::conformance::netns::{Netns, privileged_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn quickstart() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart").to_string()
}

/// `kube-proxy --dry-run` of the quickstart in iptables mode, IPv4 only,
/// written to a file: the shape of an `iptables-save` dump.
fn iptables_dump(name: &str) -> PathBuf {
    let out = run(&[
        "--dry-run",
        "--manifests",
        &quickstart(),
        "--proxy-mode",
        "iptables",
        "--hostname-override",
        "quickstart-node",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout);
    // The dry run prints the backend's restore input; `iptables-save`
    // also lists the jumps from the built-in chains, which the backend
    // ensures separately.
    let v4: String = all.split("# iptables IPv6").next().unwrap().replace(
        "*nat\n",
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    let path = std::env::temp_dir().join(format!(
        "kube-proxy-trace-{name}-{}.rules",
        std::process::id()
    ));
    std::fs::write(&path, v4).unwrap();
    path
}

#[test]
fn a_dump_is_traced_without_root() {
    let dump = iptables_dump("text");
    let out = run(&[
        "trace",
        "--rules",
        dump.to_str().unwrap(),
        "--from",
        "192.0.2.7",
        "--in-interface",
        "eth0",
        "--to",
        "10.96.0.80:80",
    ]);
    let _ = std::fs::remove_file(&dump);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    assert!(stdout.contains("chain nat/KUBE-SVC-"), "{stdout}");
    assert!(stdout.contains("probability 0.333"), "{stdout}");
    assert!(
        stdout.contains("verdict: FORWARDED to 127.0.0.11:8080, 127.0.0.12:8080, 127.0.0.13:8080"),
        "{stdout}"
    );
}

#[test]
fn json_output_carries_the_path_choices_and_verdict() {
    let dump = iptables_dump("json");
    let out = run(&[
        "trace",
        "--rules",
        dump.to_str().unwrap(),
        "--from",
        "192.0.2.7",
        "--to",
        "10.96.0.80:80",
        "--output",
        "json",
    ]);
    let udp = run(&[
        "trace",
        "--rules",
        dump.to_str().unwrap(),
        "--proto",
        "udp",
        "--from",
        "192.0.2.7",
        "--to",
        "10.96.0.80:80",
        "--output",
        "json",
    ]);
    let _ = std::fs::remove_file(&dump);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "iptables");
    assert_eq!(v["packet"]["protocol"], "tcp");
    assert_eq!(
        v["outcome"]["forwarded"]["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{v}"
    );
    assert_eq!(v["choices"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["hops"].as_array().unwrap().len() > 5, "{v}");
    // The service is TCP only: UDP to its port is not service traffic.
    let v: serde_json::Value = serde_json::from_slice(&udp.stdout).unwrap();
    assert_eq!(v["outcome"], "not_matched", "{v}");
}

#[test]
fn bad_inputs_are_plain_errors_with_exit_code_2() {
    let missing = run(&[
        "trace",
        "--rules",
        "/nonexistent/rules",
        "--from",
        "10.0.0.1",
        "--to",
        "10.96.0.1:80",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("cannot read /nonexistent/rules"),
        "{}",
        text(&missing.stderr)
    );

    let junk = std::env::temp_dir().join(format!("kube-proxy-trace-junk-{}", std::process::id()));
    std::fs::write(&junk, "hello\n").unwrap();
    let unknown = run(&[
        "trace",
        "--rules",
        junk.to_str().unwrap(),
        "--from",
        "10.0.0.1",
        "--to",
        "10.96.0.1:80",
    ]);
    let _ = std::fs::remove_file(&junk);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("neither"),
        "{}",
        text(&unknown.stderr)
    );

    let dump = iptables_dump("mixed");
    let mixed = run(&[
        "trace",
        "--rules",
        dump.to_str().unwrap(),
        "--from",
        "fd00::1",
        "--to",
        "10.96.0.80:80",
    ]);
    let _ = std::fs::remove_file(&dump);
    assert_eq!(mixed.status.code(), Some(2));
    assert!(
        text(&mixed.stderr).contains("different IP families"),
        "{}",
        text(&mixed.stderr)
    );
}

#[test]
fn a_namespace_without_rules_is_an_error_not_an_empty_answer() {
    if !privileged_or_skip("a_namespace_without_rules_is_an_error_not_an_empty_answer") {
        return;
    }
    let ns = Netns::new().unwrap();
    let trace = ns
        .command(BIN)
        .args(["trace", "--from", "10.0.0.1", "--to", "10.96.0.1:80"])
        .output()
        .unwrap();
    assert_eq!(trace.status.code(), Some(2));
    assert!(
        text(&trace.stderr).contains("no kube-proxy rules"),
        "{}",
        text(&trace.stderr)
    );
    let diff = ns
        .command(BIN)
        .args([
            "diff",
            "--manifests",
            &quickstart(),
            "--hostname-override",
            "quickstart-node",
        ])
        .output()
        .unwrap();
    assert_eq!(diff.status.code(), Some(2));
    assert!(
        text(&diff.stderr).contains("no kube-proxy rules"),
        "{}",
        text(&diff.stderr)
    );
}

#[test]
fn reading_rules_without_privileges_says_so() {
    if !privileged_or_skip("reading_rules_without_privileges_says_so") {
        return;
    }
    let ns = Netns::new().unwrap();
    let out = ns
        .command("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
        ])
        .args(["trace", "--from", "10.0.0.1", "--to", "10.96.0.1:80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
}
