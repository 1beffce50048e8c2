//! The binary end to end in userspace mode: `kube-proxy` serving the
//! quickstart in a throw-away network namespace publishes its listener
//! table at `/proxyListeners` on its metrics address (the runtime asks the
//! backend after every sync); `kube-proxy trace --proxy-mode userspace`
//! reads it (and the redirect rules) and names the endpoints; `kube-proxy
//! diff` finds the live table equal to the wanted one; a saved copy of the
//! table traces the same without root.
//!
//! Needs root (a network namespace) and nftables; skips with the reason
//! otherwise (fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "support/cli.rs"]
mod cli;

use std::io::{Read as _, Write as _};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use cli::{BIN, text, trace_rules};
use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};

const METRICS: &str = "127.0.0.1:10249";

fn quickstart() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart").to_string()
}

/// Kills the proxy when the test ends, also on failure.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &Netns, args: &[&str]) -> Output {
    ns.command(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

/// `kube-proxy trace --proxy-mode userspace` from the node to `to`,
/// inside `ns`.
fn trace_userspace(ns: &Netns, to: &str) -> Output {
    in_ns(
        ns,
        &[
            "trace",
            "--proxy-mode",
            "userspace",
            "--from",
            "127.0.0.1",
            "--to",
            to,
        ],
    )
}

/// `GET /proxyListeners` inside `ns`.
fn listeners(ns: &Netns) -> Option<String> {
    ns.run(|| {
        let mut s = std::net::TcpStream::connect(METRICS).ok()?;
        s.write_all(b"GET /proxyListeners HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    })
    .unwrap()
}

#[test]
fn the_binary_publishes_its_listener_table_and_trace_and_diff_read_it() {
    if !privileged_or_skip_with(
        "the_binary_publishes_its_listener_table_and_trace_and_diff_read_it",
        || check_tool("nft", &["--version"], "nftables"),
    ) {
        return;
    }
    let ns = Netns::new().unwrap();
    let up = ns
        .command("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let common = [
        "--proxy-mode",
        "userspace",
        "--manifests",
        &quickstart(),
        "--hostname-override",
        "quickstart-node",
    ];
    let _proxy = Proxy(
        ns.command(BIN)
            .args(common)
            .args(["--metrics-bind-address", METRICS])
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let table = loop {
        if let Some(body) = listeners(&ns).filter(|b| b.contains("30080")) {
            break body;
        }
        assert!(Instant::now() < deadline, "no listener table within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let doc: serde_json::Value = serde_json::from_str(&table).unwrap();
    assert_eq!(doc["mode"], "userspace", "{doc}");
    assert_eq!(doc["families"]["IPv4"]["redirecting"], true, "{doc}");

    let endpoints = "127.0.0.11:8080, 127.0.0.12:8080, 127.0.0.13:8080";
    // The ClusterIP, through the redirect rules the kernel holds.
    let out = trace_userspace(&ns, "10.96.0.80:80");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("chain kube-proxy-userspace/nat-output"),
        "{stdout}"
    );
    assert!(
        stdout.contains("redirected to the listener of quickstart/hello:http (internal)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("verdict: FORWARDED to {endpoints}")),
        "{stdout}"
    );
    // The node port, on its listener; the table names its mode itself.
    let out = in_ns(
        &ns,
        &[
            "trace",
            "--from",
            "127.0.0.1",
            "--to",
            "127.0.0.1:30080",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "userspace", "{v}");
    assert_eq!(
        v["outcome"]["forwarded"]["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{v}"
    );
    // Not a service port.
    let out = trace_userspace(&ns, "127.0.0.1:30081");
    assert!(
        text(&out.stdout).contains("NOT A SERVICE ADDRESS"),
        "{}",
        text(&out.stdout)
    );

    // Live equals wanted.
    let mut diff_args = vec!["diff"];
    diff_args.extend(common);
    diff_args.extend(["--metrics-bind-address", METRICS]);
    let out = in_ns(&ns, &diff_args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Damage from outside: the ClusterIP's redirect element deleted.
    let del = ns
        .command("nft")
        .arg("delete element ip kube-proxy-userspace redirects { 10.96.0.80 . tcp . 80 }")
        .status()
        .unwrap();
    assert!(del.success());
    let out = in_ns(&ns, &diff_args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("DIFFERENT quickstart/hello:http"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- redirect tcp 10.96.0.80:80 to the internal listener"),
        "{stdout}"
    );
    let out = trace_userspace(&ns, "10.96.0.80:80");
    assert!(
        text(&out.stdout).contains("NOT A SERVICE ADDRESS"),
        "{}",
        text(&out.stdout)
    );

    // A saved copy traces on a laptop, without root, by the table's record.
    let saved =
        std::env::temp_dir().join(format!("kube-proxy-listeners-{}.json", std::process::id()));
    std::fs::write(&saved, &table).unwrap();
    let out = trace_rules(&saved, &["--from", "127.0.0.1", "--to", "10.96.0.80:80"]);
    let _ = std::fs::remove_file(&saved);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("userspace mode"), "{stdout}");
    assert!(
        stdout.contains(&format!("verdict: FORWARDED to {endpoints}")),
        "{stdout}"
    );
}
