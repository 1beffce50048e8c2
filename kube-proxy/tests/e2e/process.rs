//! The `kube-proxy` binary as a child process inside a network namespace.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use proxy_core::IpFamily;
use proxy_core::conformance::netns::Netns;

use super::files::{HEALTHZ_ADDRESS, METRICS_ADDRESS};
use super::http;

/// The binary cargo built for this test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

/// The metric whose value is the time of the last successful sync, per
/// `ip_family`.
pub const LAST_SYNC_METRIC: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";

/// How often the servers are polled while waiting.
const POLL: Duration = Duration::from_millis(50);
/// How long one HTTP exchange with the binary may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `kube-proxy args…` to completion inside `ns` (`--cleanup`).
pub fn run_to_completion(ns: &Netns, args: &[&str]) -> Result<Output, String> {
    let mut command = ns.command(BIN);
    command.args(args).stdin(Stdio::null());
    command.configure().env_remove("RUST_LOG");
    command
        .output()
        .map_err(|e| format!("running {BIN} {}: {e}", args.join(" ")))
}

/// A running `kube-proxy`; killed (SIGKILL) and reaped if dropped while
/// running, so a failing test leaves no process holding its namespace.
#[derive(Debug)]
pub struct KubeProxyProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl KubeProxyProcess {
    /// Starts `kube-proxy args…` inside `ns`, with its standard output and
    /// error in the file `log`, and `RUST_LOG` unset (the configuration's
    /// verbosity applies).
    pub fn start(ns: &Netns, args: &[&str], log: &Path) -> Result<Self, String> {
        Self::start_with_env(ns, args, log, &[])
    }

    /// [`KubeProxyProcess::start`] with the variables `env` set (e.g. a
    /// `PATH` that puts wrappers of the tools first).
    pub fn start_with_env(
        ns: &Netns,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let output = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("duplicating {}: {e}", log.display()))?;
        let mut command = ns.command(BIN);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        command.configure().env_remove("RUST_LOG");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {BIN} in the node namespace: {e}"))?;
        Ok(KubeProxyProcess {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// What the binary logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Waits until the binary synced `family` (its
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family}` is
    /// positive) and then checks that `/healthz` answers 200. Fails early
    /// when the process exits, and at `timeout`, with the log.
    pub fn wait_synced(
        &mut self,
        ns: &Netns,
        family: IpFamily,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let synced_after = self.wait_synced_after(ns, family, 0.0, timeout)?;
        let healthz = ns
            .run(|| http::get(HEALTHZ_ADDRESS, "/healthz", HTTP_TIMEOUT))
            .map_err(|e| format!("entering the node namespace: {e}"))?
            .map_err(|e| format!("GET /healthz after the first sync: {e}"))?;
        if healthz.status != 200 {
            return Err(format!(
                "/healthz answered {} after the first sync: {}",
                healthz.status, healthz.body
            ));
        }
        Ok(synced_after)
    }

    /// Waits until the binary's last sync of `family` is later than
    /// `after` (a [`LAST_SYNC_METRIC`] value; `0.0`: any sync); returns how
    /// long that took. Fails early when the process exits, and at
    /// `timeout`, with the log.
    pub fn wait_synced_after(
        &mut self,
        ns: &Netns,
        family: IpFamily,
        after: f64,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(format!(
                    "kube-proxy exited ({status}) while waiting for a sync; its log:\n{}",
                    self.log()
                ));
            }
            let last_error = match last_sync_in(ns, family) {
                Ok(Some(seconds)) if seconds > after => return Ok(start.elapsed()),
                Ok(seen) => format!("{LAST_SYNC_METRIC} for {family}: {seen:?}"),
                Err(e) => e,
            };
            if start.elapsed() > timeout {
                return Err(format!(
                    "kube-proxy did not sync {family} within {timeout:?} (last: {last_error}); its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let Some(child) = self.child.as_mut() else {
            return Err("kube-proxy was already reaped".into());
        };
        // std's `Child::kill` sends SIGKILL; `kill -TERM <pid>` names only
        // our own child.
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("running kill -TERM {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid} failed ({status})"));
        }
        self.wait_exit(timeout)
            .map_err(|e| format!("after SIGTERM: {e}"))
    }

    /// Sends SIGKILL and reaps the process.
    #[allow(dead_code)] // used by chaos_netns.rs only
    pub fn kill(&mut self) -> Result<ExitStatus, String> {
        let mut child = self.child.take().ok_or("kube-proxy was already reaped")?;
        child
            .kill()
            .map_err(|e| format!("killing kube-proxy: {e}"))?;
        child.wait().map_err(|e| format!("reaping kube-proxy: {e}"))
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit
    /// status, or an error with the log if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "kube-proxy still runs after {timeout:?}; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && matches!(self.try_wait(), Ok(None))
    }

    /// The exit status, once the process exited (then it is reaped).
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        let Some(child) = self.child.as_mut() else {
            return Err("kube-proxy was already reaped".into());
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("waiting for kube-proxy: {e}")),
        }
    }
}

impl Drop for KubeProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary's [`LAST_SYNC_METRIC`] for `family`, read from `/metrics`
/// inside `ns`.
pub fn last_sync_in(ns: &Netns, family: IpFamily) -> Result<Option<f64>, String> {
    match ns.run(|| http::get(METRICS_ADDRESS, "/metrics", HTTP_TIMEOUT)) {
        Ok(Ok(response)) if response.status == 200 => Ok(last_sync(&response.body, family)),
        Ok(Ok(response)) => Err(format!("/metrics answered {}", response.status)),
        Ok(Err(e)) => Err(format!("GET /metrics: {e}")),
        Err(e) => Err(format!("entering the node namespace: {e}")),
    }
}

/// The value of [`LAST_SYNC_METRIC`] for `family` in a Prometheus text
/// exposition (`name{ip_family="IPv4"} 1.7e9`).
pub fn last_sync(metrics: &str, family: IpFamily) -> Option<f64> {
    let label = format!("ip_family=\"{}\"", family.as_str());
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(LAST_SYNC_METRIC)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once('}')?,
            None => ("", rest),
        };
        if !labels.split(',').any(|l| l.trim() == label) {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_sync_of_one_family() {
        let text = "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds x\n\
                    kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv6\"} 0.0\n\
                    kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1700000000.5\n";
        assert_eq!(last_sync(text, IpFamily::V4), Some(1_700_000_000.5));
        assert_eq!(last_sync(text, IpFamily::V6), Some(0.0));
        assert_eq!(last_sync("", IpFamily::V4), None);
    }
}
