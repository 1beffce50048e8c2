//! The binary with a hung `nft` (a script that sleeps forever, first in
//! its `PATH`). In iptables mode, removing nftables and userspace leftovers
//! runs `nft`, which hangs, yet `/healthz` and `/metrics` answer at once and
//! the iptables rules are synced (`/healthz` 200) while `nft` still hangs.
//! In nftables mode, `/healthz` answers (503: nothing synced) while the
//! start-up check's `nft` hangs. Before, start-up waited for `nft` before it
//! even served `/healthz`.
//!
//! Needs root, iproute2 and iptables; skips with the reason otherwise, and
//! fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`. Runs in an
//! anonymous network namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "e2e/http.rs"]
#[allow(dead_code)]
mod http;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};

const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the binary (and so lets the namespace go) however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The hung `nft`s, listed by PID in a file: `exec sleep` outlives
/// kube-proxy when the test kills it, so they are killed on drop, however
/// the test ends.
struct HungTools(PathBuf);

impl HungTools {
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for HungTools {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// Whether process `pid` runs (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// kube-proxy in `mode`, in a network namespace of its own, with a hung
/// `nft` first in its `PATH` and an empty manifest directory.
struct Run {
    // Dropped in this order: kube-proxy, its hung nft, the namespace, the files.
    child: Killed,
    hung: HungTools,
    ns: Netns,
    log: PathBuf,
    _dir: TempDir,
}

impl Run {
    fn start(test: &str, mode: &str) -> Run {
        let dir =
            TempDir(std::env::temp_dir().join(format!("kube-proxy-{test}-{}", std::process::id())));
        let bin = dir.0.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.0.join("manifests")).unwrap();
        let pids = dir.0.join("nft-pids");
        let hung = HungTools(pids.clone());
        write_executable(
            &bin.join("nft"),
            &format!(
                "#!/bin/sh\necho $$ >> '{}'\nexec sleep 3600\n",
                pids.display()
            ),
        );
        std::fs::write(
            dir.0.join("config.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: {mode}
hostnameOverride: node-a
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
"
            ),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let ns = Netns::new().unwrap();
        assert!(
            ns.command("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
        let log = dir.0.join("kube-proxy.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = ns.command(BIN);
        command
            .args(["--config", &dir.0.join("config.yaml").to_string_lossy()])
            .args(["--manifests", &dir.0.join("manifests").to_string_lossy()])
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        command.configure().env_remove("RUST_LOG");
        let child = Killed(command.spawn().unwrap());
        Run {
            child,
            hung,
            ns,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if kube-proxy exited.
    fn assert_running(&mut self) {
        assert!(
            self.child.0.try_wait().unwrap().is_none(),
            "kube-proxy exited:\n{}",
            self.log()
        );
    }

    fn get(&self, addr: &'static str, path: &'static str) -> std::io::Result<http::Response> {
        self.ns
            .run(move || http::get(addr.parse().unwrap(), path, Duration::from_secs(2)))
            .unwrap()
    }

    /// The first hung nft, which must still run.
    fn hung_nft(&self) -> u32 {
        let nft = self.hung.pids();
        assert!(!nft.is_empty(), "nft was never run:\n{}", self.log());
        assert!(running(nft[0]), "nft {} no longer hangs", nft[0]);
        nft[0]
    }
}

#[test]
fn a_hung_nft_neither_blocks_healthz_nor_the_iptables_sync() {
    let test = "a_hung_nft_neither_blocks_healthz_nor_the_iptables_sync";
    if !privileged_or_skip_with(test, || {
        check_tool("iptables-restore", &["--version"], "iptables")
    }) {
        return;
    }
    let started = Instant::now();
    let mut run = Run::start("hung-nft-iptables", "iptables");
    // Synced (the first sync's timestamp in /metrics) and healthy.
    let synced = "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}";
    let mut healthy_at = None;
    while started.elapsed() < Duration::from_secs(20) {
        run.assert_running();
        if let Ok(answer) = run.get("127.0.0.1:10249", "/metrics")
            && answer.body.contains(synced)
            && run
                .get("127.0.0.1:10256", "/healthz")
                .is_ok_and(|a| a.status == 200)
        {
            healthy_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let healthy_at =
        healthy_at.unwrap_or_else(|| panic!("never synced and healthy:\n{}", run.log()));
    // The default command timeout is 30 s: nft still hangs.
    run.hung_nft();
    assert!(healthy_at < Duration::from_secs(15), "{healthy_at:?}");
}

#[test]
fn a_hung_nft_at_start_up_does_not_keep_healthz_from_answering() {
    let test = "a_hung_nft_at_start_up_does_not_keep_healthz_from_answering";
    if !privileged_or_skip_with(test, || Ok(())) {
        return;
    }
    let started = Instant::now();
    let mut run = Run::start("hung-nft-nftables", "nftables");
    // /healthz is served before anything runs nft: ask it once nft hangs.
    while run.hung.pids().is_empty() && started.elapsed() < Duration::from_secs(10) {
        run.assert_running();
        std::thread::sleep(Duration::from_millis(50));
    }
    run.hung_nft();
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(10) {
        run.assert_running();
        if let Ok(answer) = run.get("127.0.0.1:10256", "/healthz") {
            answered = Some(answer);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = answered.unwrap_or_else(|| panic!("/healthz never answered:\n{}", run.log()));
    // Nothing could be synced: IPv4 has never been updated (not yet
    // registered while the start-up check's `nft` hangs, or registered with
    // the zero time once the first sync's does). The status follows
    // upstream: healthy until a stuck sync has run for the health timeout
    // (runtime_hung_tool.rs), and the node is not eligible before it is known.
    assert!(
        !answer.body.contains(r#""IPv4":{"lastUpdated":"2"#),
        "{}",
        answer.body
    );
    assert_eq!(run.get("127.0.0.1:10249", "/metrics").unwrap().status, 200);
    // Answered while nft hangs (killed only after the 30 s command timeout).
    run.hung_nft();
    run.assert_running();
}
