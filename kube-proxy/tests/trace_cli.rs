//! `kube-proxy trace` and `kube-proxy diff` as commands: tracing a dump on
//! a laptop (no root), JSON output, and the plain errors (a missing or
//! unknown dump, mixed families, no rules in the namespace, no permission).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "support/cli.rs"]
mod cli;

use std::path::PathBuf;

use cli::{BIN, assert_error_saying, run, text, trace_rules};
use proxy_core::conformance::netns::{Netns, privileged_or_skip};

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
    let out = trace_rules(
        &dump,
        &[
            "--from",
            "192.0.2.7",
            "--in-interface",
            "eth0",
            "--to",
            "10.96.0.80:80",
        ],
    );
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
    let out = trace_rules(
        &dump,
        &[
            "--from",
            "192.0.2.7",
            "--to",
            "10.96.0.80:80",
            "--output",
            "json",
        ],
    );
    let udp = trace_rules(
        &dump,
        &[
            "--proto",
            "udp",
            "--from",
            "192.0.2.7",
            "--to",
            "10.96.0.80:80",
            "--output",
            "json",
        ],
    );
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
    let missing = trace_rules(
        std::path::Path::new("/nonexistent/rules"),
        &["--from", "10.0.0.1", "--to", "10.96.0.1:80"],
    );
    assert_error_saying(&missing, "cannot read /nonexistent/rules");

    let junk = std::env::temp_dir().join(format!("kube-proxy-trace-junk-{}", std::process::id()));
    std::fs::write(&junk, "hello\n").unwrap();
    let unknown = trace_rules(&junk, &["--from", "10.0.0.1", "--to", "10.96.0.1:80"]);
    let _ = std::fs::remove_file(&junk);
    assert_error_saying(&unknown, "neither");

    let dump = iptables_dump("mixed");
    let mixed = trace_rules(&dump, &["--from", "fd00::1", "--to", "10.96.0.80:80"]);
    let _ = std::fs::remove_file(&dump);
    assert_error_saying(&mixed, "different IP families");
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
    assert_error_saying(&trace, "no kube-proxy rules");
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
    assert_error_saying(&diff, "no kube-proxy rules");
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
    assert_error_saying(&out, "permission denied");
}
