//! The release binary as the benches run it: a configuration file and a log
//! in a scratch directory, optionally in a network namespace or under a
//! wrapper (a profiler), ended (SIGKILL) when dropped.
#![allow(dead_code)] // each bench uses a subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::Netns;

use super::get_metrics;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");
/// Where the proxy serves `/metrics` (in its namespace).
pub const METRICS: &str = "127.0.0.1:10249";
/// The proxy's IPv4 sync counter.
pub const SYNCS: &str = "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}";
/// The end of the proxy's last IPv4 sync, Unix seconds (set once the
/// rules are in the kernel).
pub const LAST_SYNC: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}";

/// The value of metric `name` (with its labels) in a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// A fresh network namespace with its loopback up.
pub fn netns_with_lo() -> Netns {
    let ns = Netns::new().expect("a network namespace");
    assert!(
        ns.command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success(),
        "ip link set lo up"
    );
    ns
}

/// A scratch directory `kube-proxy-<tag>-<pid>` under the temp dir, emptied.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kube-proxy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How to start the binary.
pub struct Launch<'a> {
    /// Its scratch directory: `config.yaml` and `kube-proxy.log` go there.
    pub dir: &'a Path,
    /// The body of `config.yaml` (a `KubeProxyConfiguration`).
    pub config: &'a str,
    /// Arguments after `--config <dir>/config.yaml`.
    pub args: &'a [&'a str],
    /// `KEY=VALUE`s added to its environment (`RUST_LOG` is removed).
    pub env: &'a [(String, String)],
    /// A program that runs the binary (e.g. `heaptrack`).
    pub wrapper: Option<&'a str>,
    /// The namespace to run it in; `None`: the calling thread's.
    pub ns: Option<&'a Netns>,
}

/// A running binary.
pub struct Proxy {
    pub child: Child,
    pub dir: PathBuf,
    /// The process running the binary: the child, or under a wrapper its
    /// descendant.
    pub pid: u32,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.pid != self.child.id() {
            // Under a wrapper: end the proxy, the wrapper then finishes.
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The children of process `pid` (of every thread).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// The descendant of `root` (or `root`) whose executable is the binary.
fn find_binary(root: u32) -> Option<u32> {
    let bin = std::fs::canonicalize(BIN).ok()?;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() == Some(&bin) {
            return Some(pid);
        }
        todo.extend(children(pid));
    }
    None
}

impl Proxy {
    /// Writes the configuration and starts the binary.
    pub fn start(launch: &Launch<'_>) -> Proxy {
        let config = launch.dir.join("config.yaml");
        std::fs::write(&config, launch.config).unwrap();
        let log = std::fs::File::create(launch.dir.join("kube-proxy.log")).unwrap();
        let (program, mut args) = match launch.wrapper {
            Some(w) => (w, vec![BIN.to_string()]),
            None => (BIN, Vec::new()),
        };
        args.push("--config".into());
        args.push(config.to_string_lossy().into_owned());
        args.extend(launch.args.iter().map(ToString::to_string));
        let mut child = match launch.ns {
            Some(ns) => {
                let mut command = ns.command(program);
                command.args(&args);
                command
                    .configure()
                    .env_remove("RUST_LOG")
                    .envs(launch.env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log);
                command.spawn()
            }
            None => Command::new(program)
                .args(&args)
                .env_remove("RUST_LOG")
                .envs(launch.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn(),
        }
        .unwrap();
        let started = Instant::now();
        let pid = loop {
            if let Some(pid) = find_binary(child.id()) {
                break pid;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the proxy (or its wrapper) exited at once ({status})");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no proxy process under the wrapper"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        Proxy {
            child,
            dir: launch.dir.to_path_buf(),
            pid,
        }
    }

    /// Panics with the proxy's log when it has exited.
    pub fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("kube-proxy exited ({status}):\n{}", self.log());
        }
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kube-proxy.log")).unwrap_or_default()
    }
}

/// Reads the proxy's metrics: from the calling thread's namespace, or from
/// `ns`.
pub fn scrape(ns: Option<&Netns>) -> Option<String> {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let get = move || get_metrics(addr);
    match ns {
        Some(ns) => ns.run(get).ok()?.ok(),
        None => get().ok(),
    }
}
