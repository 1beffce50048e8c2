//! The binary end to end: usage errors, `--write-config-to`, `--dry-run`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("kube-proxy-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_usage_error(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(64), "stderr: {}", stderr(output));
    let text = stderr(output);
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    assert!(text.contains(needle), "{needle:?} not in {text:?}");
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    assert_usage_error(&run(&["--proxy-mode=ipvz"]), "--proxy-mode");
    assert_usage_error(&run(&["--no-such-flag"]), "--no-such-flag");
    assert_usage_error(
        &run(&["--iptables-sync-period=soon"]),
        "--iptables-sync-period",
    );
    assert_usage_error(&run(&["--iptables-masquerade-bit=32"]), "masqueradeBit");
    assert_usage_error(&run(&["--oom-score-adj=-2000"]), "oomScoreAdj");
    assert_usage_error(&run(&["--logging-format=json"]), "--logging-format");
}

#[test]
fn bad_config_exits_64_naming_the_field() {
    let dir = TempDir::new("badconfig");
    std::fs::write(
        dir.path("config.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvz\n",
    )
    .unwrap();
    assert_usage_error(&run(&["--config", &dir.str("config.yaml")]), "mode");
    std::fs::write(
        dir.path("config.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBit: 99}\n",
    )
    .unwrap();
    assert_usage_error(
        &run(&["--config", &dir.str("config.yaml")]),
        "iptables.masqueradeBit",
    );
    assert_usage_error(
        &run(&["--config", &dir.str("missing.yaml")]),
        "missing.yaml",
    );
}

#[test]
fn written_config_loads_back_identically() {
    let dir = TempDir::new("writeconfig");
    let first = run(&[
        "--proxy-mode=nftables",
        "--masquerade-all",
        "--cluster-cidr=10.0.0.0/8,fd00::/48",
        "--nodeport-addresses=192.168.0.0/16,primary",
        "--conntrack-tcp-timeout-established=2h",
        "--write-config-to",
        &dir.str("a.yaml"),
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let written = std::fs::read_to_string(dir.path("a.yaml")).unwrap();
    assert!(written.contains("mode: nftables"), "{written}");
    assert!(
        written.contains("clusterCIDR: 10.0.0.0/8,fd00::/48"),
        "{written}"
    );

    let second = run(&[
        "--config",
        &dir.str("a.yaml"),
        "--write-config-to",
        &dir.str("b.yaml"),
    ]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        written,
        std::fs::read_to_string(dir.path("b.yaml")).unwrap()
    );

    let loaded = proxy_core::config::KubeProxyConfiguration::load(dir.path("a.yaml")).unwrap();
    assert!(loaded.nftables.masquerade_all);
    assert_eq!(
        loaded.node_port_addresses,
        Some(vec!["192.168.0.0/16".to_string(), "primary".to_string()])
    );
}

#[test]
fn config_file_wins_over_flags_except_hostname_override() {
    let dir = TempDir::new("precedence");
    std::fs::write(
        dir.path("config.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: userspace\nhostnameOverride: from-file\n",
    )
    .unwrap();
    let out = run(&[
        "--config",
        &dir.str("config.yaml"),
        "--proxy-mode=nftables",
        "--hostname-override=from-flag",
        "--write-config-to",
        &dir.str("out.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written = std::fs::read_to_string(dir.path("out.yaml")).unwrap();
    assert!(written.contains("mode: userspace"), "{written}");
    assert!(written.contains("hostnameOverride: from-flag"), "{written}");
    assert!(
        stderr(&out).contains("--proxy-mode"),
        "the ignored flag is named: {}",
        stderr(&out)
    );
}

fn write_manifests(dir: &Path) {
    std::fs::write(
        dir.join("web.yaml"),
        r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  clusterIP: 172.30.0.10
  clusterIPs: [172.30.0.10, "fd00::10"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-4, namespace: demo, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints: [{addresses: [10.0.1.5], nodeName: node-a}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-6, namespace: demo, labels: {kubernetes.io/service-name: web}}
  addressType: IPv6
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints: [{addresses: ["fd01::5"], nodeName: node-a}]
"#,
    )
    .unwrap();
}

fn dry_run(mode: &str, dir: &TempDir) -> Output {
    run(&[
        "--proxy-mode",
        mode,
        "--manifests",
        &dir.str(""),
        "--hostname-override",
        "node-a",
        "--dry-run",
    ])
}

#[test]
fn dry_run_prints_each_built_modes_rules_for_both_families() {
    let dir = TempDir::new("dryrun");
    write_manifests(&dir.0);
    let expectations: &[(&str, &[&str])] = &[
        (
            "userspace",
            &[
                "# userspace IPv4: 1 service ports",
                "10.0.1.5:8080",
                "# userspace IPv6",
                "fd01::5",
            ],
        ),
        (
            "iptables",
            &[
                "# iptables IPv4",
                "*nat",
                "-d 172.30.0.10",
                "--to-destination 10.0.1.5:8080",
                "# iptables IPv6",
            ],
        ),
        (
            "nftables",
            &[
                "# nftables IPv4",
                "table ip kube-proxy",
                "172.30.0.10",
                "# nftables IPv6",
                "ip6 kube-proxy",
            ],
        ),
    ];
    for (mode, needles) in expectations {
        let out = dry_run(mode, &dir);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let text = stdout(&out);
        for needle in *needles {
            assert!(
                text.contains(needle),
                "{mode}: {needle:?} missing from:\n{text}"
            );
        }
    }
    let ipvs = dry_run("ipvs", &dir);
    assert_eq!(ipvs.status.code(), Some(1));
    assert!(
        stderr(&ipvs).contains("IPVS mode is not implemented yet"),
        "{}",
        stderr(&ipvs)
    );
}
