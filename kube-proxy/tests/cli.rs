//! The binary end to end: usage errors, `--write-config-to`, `--dry-run`,
//! logging formats and `--vmodule`, exiting when `--config` changes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::Netns;

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
    assert_usage_error(&run(&["--logging-format=xml"]), "--logging-format");
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
    // ipvs: both families, IPv6 with upstream's KUBE-6- sets
    let ipvs = dry_run("ipvs", &dir);
    assert!(ipvs.status.success(), "ipvs: {}", stderr(&ipvs));
    let text = stdout(&ipvs);
    for needle in [
        "# ipvs IPv4",
        "# IPVS virtual servers",
        "172.30.0.10",
        "-> 10.0.1.5:8080 masq 1",
        "add KUBE-CLUSTER-IP 172.30.0.10,",
        "# ipvs IPv6",
        "-> [fd01::5]:8080 masq 1",
        "add KUBE-6-CLUSTER-IP fd00::10,tcp:80",
        "-A KUBE-SERVICES -s ::1/128 -j RETURN",
    ] {
        assert!(
            text.contains(needle),
            "ipvs: {needle:?} missing from:\n{text}"
        );
    }
}

/// The JSON objects of `text`'s lines; panics on a line that is not one.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

#[test]
fn logging_format_json_logs_one_json_object_per_line() {
    let dir = TempDir::new("json");
    let out = run(&[
        "--logging-format=json",
        "--write-config-to",
        &dir.str("out.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stderr(&out));
    let wrote = lines
        .iter()
        .find(|line| line["message"] == "wrote the configuration")
        .unwrap_or_else(|| panic!("no 'wrote the configuration' in {lines:?}"));
    assert_eq!(wrote["level"], "INFO");
    assert_eq!(wrote["path"], dir.str("out.yaml"));
    let written = std::fs::read_to_string(dir.path("out.yaml")).unwrap();
    assert!(written.contains("format: json"), "{written}");

    // The same from the configuration file.
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nlogging: {format: json}\n",
    )
    .unwrap();
    let out = run(&[
        "--config",
        &dir.str("config.yaml"),
        "--write-config-to",
        &dir.str("out2.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        json_lines(&stderr(&out))
            .iter()
            .any(|line| line["message"] == "wrote the configuration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn vmodule_sets_the_level_of_matching_files_both_ways() {
    let dir = TempDir::new("vmodule");
    let out = dir.str("out.yaml");
    // app.rs logs "executing" at debug (-v=2).
    let executing = |args: &[&str]| {
        let output = run(&[args, &["--write-config-to", &out]].concat());
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stderr(&output).contains("executing")
    };
    assert!(!executing(&[]), "hidden at -v=0");
    assert!(executing(&["-v=2"]), "shown at -v=2");
    assert!(executing(&["--vmodule=app=2"]), "raised for app.rs");
    assert!(executing(&["--vmodule=a?p=3,options=0"]), "a glob");
    assert!(!executing(&["--vmodule=options=4"]), "other files only");
    assert!(
        !executing(&["-v=4", "--vmodule=app=1"]),
        "lowered for app.rs"
    );
    assert_usage_error(&run(&["--vmodule=app"]), "--vmodule");
    assert_usage_error(
        &run(&["--vmodule=app=2", "--logging-format=json"]),
        "logging.vmodule",
    );
}

/// Whether this process has `CAP_NET_ADMIN`, with which the binary would
/// program rules in its network namespace.
fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// A loopback port that was free a moment ago (port 0 is not a valid
/// `healthzBindAddress`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kube-proxy`, in a network namespace of its own whenever it
/// could program rules; killed if still running when dropped.
struct Running {
    child: Child,
    log: PathBuf,
    _netns: Option<Netns>,
}

impl Running {
    /// Starts `kube-proxy args…` with its output in `log`. With
    /// `CAP_NET_ADMIN` it runs in a fresh network namespace (its loopback
    /// up), so that nothing it does reaches the host's; without, it can
    /// program nothing and runs here.
    fn start(args: &[&str], log: &Path) -> Running {
        let output = std::fs::File::create(log).unwrap();
        let errors = output.try_clone().unwrap();
        let (child, netns) = if has_net_admin() {
            let netns = Netns::new().unwrap_or_else(|e| {
                panic!(
                    "cannot create a network namespace for kube-proxy (needs CAP_SYS_ADMIN): {e}"
                )
            });
            let lo = netns
                .command("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(lo.success(), "ip link set lo up: {lo}");
            let mut command = netns.command(BIN);
            command
                .args(args)
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors);
            command.configure().env_remove("RUST_LOG");
            (command.spawn().unwrap(), Some(netns))
        } else {
            let child = Command::new(BIN)
                .args(args)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                .spawn()
                .unwrap();
            (child, None)
        };
        Running {
            child,
            log: log.to_path_buf(),
            _netns: netns,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` in the log, while the process runs.
    fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return self.log().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_changed_config_file_makes_kube_proxy_exit_1_after_a_graceful_stop() {
    let dir = TempDir::new("configchange");
    std::fs::create_dir(dir.path("manifests")).unwrap();
    let config = dir.path("config.yaml");
    let text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: userspace
hostnameOverride: node-a
healthzBindAddress: 127.0.0.1:{}
metricsBindAddress: 127.0.0.1:{}
",
        free_port(),
        free_port()
    );
    std::fs::write(&config, &text).unwrap();
    let mut proxy = Running::start(
        &[
            "--config",
            &dir.str("config.yaml"),
            "--manifests",
            &dir.str("manifests"),
        ],
        &dir.path("kube-proxy.log"),
    );
    assert!(
        proxy.wait_for_log("waiting for the initial lists", Duration::from_secs(10)),
        "kube-proxy did not start:\n{}",
        proxy.log()
    );

    // The same content again (a touch, an unrelated ConfigMap key) is no change.
    std::fs::write(&config, &text).unwrap();
    assert_eq!(
        proxy.wait_exit(Duration::from_secs(1)),
        None,
        "exited on an unchanged file:\n{}",
        proxy.log()
    );

    std::fs::write(&config, format!("{text}configSyncPeriod: 16m\n")).unwrap();
    let status = proxy.wait_exit(Duration::from_secs(5));
    let log = proxy.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "exit within 5s, code 1:\n{log}"
    );
    let changed = log
        .lines()
        .find(|line| line.contains("the configuration file changed"))
        .unwrap_or_else(|| panic!("no change logged:\n{log}"));
    assert!(changed.contains(&dir.str("config.yaml")), "{changed}");
    assert_eq!(
        log.matches("the configuration file changed").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("shutting down; the dataplane is left in place"),
        "a graceful stop:\n{log}"
    );
}
