//! Hung external tools: every command runs under a time limit and is
//! killed on expiry, the kill is counted, the sync fails and is retried,
//! and `/healthz` reports a sync stuck for the health timeout. Real child
//! processes (a shell script standing in for `nft` / `iptables-restore`),
//! shortened limits.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::backend::{BackendContext, BackendFactory, CommandLimits};
use proxy_core::exec::{Command, Executor, SystemExecutor, run_blocking};
use proxy_core::runtime::health::{ProxyHealth, system_clock};
use proxy_core::runtime::metrics::ProxyMetrics;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions, SyncObserver, SyncTiming};
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, IpFamily, NodeView, ObjectKind, ProxyMode,
    SyncStats,
};

/// A directory with a tool that records its PID and then exits 0, or
/// hangs (`exec sleep`) while the file `hang` exists.
struct Tool {
    dir: PathBuf,
}

impl Tool {
    fn new(name: &str) -> Tool {
        let dir = std::env::temp_dir().join(format!("hung-tool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "#!/bin/sh\necho $$ >> '{d}/pids'\nif [ -e '{d}/hang' ]; then exec sleep 3600; fi\nexit 0\n",
            d = dir.display()
        );
        let path = dir.join("tool");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Tool { dir }
    }
    fn program(&self) -> String {
        self.dir.join("tool").to_string_lossy().into_owned()
    }
    fn hang(&self, hang: bool) {
        let flag = self.dir.join("hang");
        if hang {
            std::fs::write(flag, "").unwrap();
        } else {
            std::fs::remove_file(flag).unwrap();
        }
    }
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid` is gone or a zombie (killed, not yet reaped).
fn dead(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')
        .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
}

fn timeouts_counted(metrics: &ProxyMetrics, program: &str) -> u64 {
    let needle = format!("kubeproxy_command_timeouts_total{{program=\"{program}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_hung_command_is_killed_after_the_timeout_and_counted() {
    let tool = Tool::new("exec");
    tool.hang(true);
    let metrics = Arc::new(ProxyMetrics::new());
    let limits = CommandLimits::new(Duration::from_millis(300)).with_recorder(metrics.clone());
    let exec = SystemExecutor::new(limits.clone());
    let started = Instant::now();
    let error = exec
        .run(&Command::new(tool.program(), ["-f", "-"]).with_stdin("x".repeat(1 << 20)))
        .await
        .unwrap_err();
    assert!(CommandLimits::is_timeout(&error), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(timeouts_counted(&metrics, "tool"), 1);
    let pid = tool.pids()[0];
    wait_for("the killed tool is gone", Duration::from_secs(2), || {
        dead(pid)
    })
    .await;

    // The blocking runner (conntrack cleanup) does the same.
    let error = run_blocking(&Command::new(tool.program(), [] as [&str; 0]), &limits).unwrap_err();
    assert!(CommandLimits::is_timeout(&error), "{error}");
    assert_eq!(timeouts_counted(&metrics, "tool"), 2);
    let pid = tool.pids()[1];
    assert!(dead(pid), "process {pid} still runs");

    // A tool that answers in time is untouched, its input and output intact.
    tool.hang(false);
    let echo = Command::new("cat", [] as [&str; 0]).with_stdin("hello".to_string());
    assert_eq!(exec.run(&echo).await.unwrap().stdout, "hello");
    assert_eq!(run_blocking(&echo, &limits).unwrap().stdout, "hello");
    assert!(
        exec.run(&Command::new(tool.program(), ["x"]))
            .await
            .unwrap()
            .success()
    );
    assert_eq!(timeouts_counted(&metrics, "tool"), 2);
}

/// A backend whose every sync runs `program` under the context's limits,
/// as the real backends run `nft` and `iptables-restore`.
struct ToolBackend {
    exec: SystemExecutor,
    program: String,
}

#[async_trait::async_trait]
impl Backend for ToolBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    async fn sync(
        &mut self,
        _view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let output = self
            .exec
            .run(&Command::new(&self.program, ["-f", "-"]))
            .await
            .map_err(|e| {
                BackendError::transient(format!("cannot run {}", self.program)).with_source(e)
            })?;
        if !output.success() {
            return Err(BackendError::dataplane("rejected"));
        }
        Ok(SyncStats {
            full: changes.is_full(),
            ..SyncStats::default()
        })
    }
    async fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn render(&self, _view: &NodeView) -> Result<String, BackendError> {
        Ok(String::new())
    }
}

struct ToolFactory(String);

#[async_trait::async_trait]
impl BackendFactory for ToolFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }
    async fn check(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }
    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(ToolBackend {
            exec: SystemExecutor::new(ctx.commands.clone()),
            program: self.0.clone(),
        }))
    }
    async fn cleanup_leftovers(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {within:?}: {what}");
}

#[tokio::test]
async fn a_hung_tool_fails_the_sync_turns_healthz_503_and_the_retry_recovers() {
    let tool = Tool::new("runtime");
    tool.hang(true);
    let metrics = Arc::new(ProxyMetrics::new());
    let command_timeout = Duration::from_millis(1500);
    let health_timeout = Duration::from_millis(600);
    let health = Arc::new(ProxyHealth::new(health_timeout, system_clock()));
    let config = Arc::new(proxy_core::config::KubeProxyConfiguration::default());
    let options = RuntimeOptions {
        families: Some(vec![IpFamily::V4]),
        timing: SyncTiming {
            min_interval: Duration::from_millis(100),
            sync_period: Duration::from_secs(30),
            full_sync_period: Duration::from_secs(3600),
            retry_interval: Duration::from_millis(200),
        },
        commands: CommandLimits::new(command_timeout).with_recorder(metrics.clone()),
        ..RuntimeOptions::new(&config, "node-a")
    };
    let observers: Vec<Arc<dyn SyncObserver>> = vec![health.clone(), metrics.clone()];
    let runtime = Runtime::new(
        config,
        Arc::new(ToolFactory(tool.program())),
        observers,
        options,
    );
    let (source, events) = ChannelSource::new(vec![ObjectKind::Service, ObjectKind::EndpointSlice]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(Box::new(source), async move {
        let _ = stopped.await;
    }));
    for event in [
        SourceEvent::Service(Update::Init),
        SourceEvent::Service(Update::InitDone),
        SourceEvent::EndpointSlice(Update::Init),
        SourceEvent::EndpointSlice(Update::InitDone),
    ] {
        events.send(event).unwrap();
    }

    // The first sync runs the tool, which hangs.
    wait_for("the first sync starts", Duration::from_secs(5), || {
        !tool.pids().is_empty()
    })
    .await;
    let first = Instant::now();
    assert_eq!(health.healthz().code, 200, "not stuck yet");
    // Stuck longer than the health timeout, before the command timeout.
    wait_for(
        "healthz turns 503 while the sync is stuck",
        command_timeout,
        || health.healthz().code == 503,
    )
    .await;
    assert!(first.elapsed() >= health_timeout - Duration::from_millis(50));
    assert_eq!(timeouts_counted(&metrics, "tool"), 0, "not killed yet");

    // Killed at the timeout, counted; the sync failed and is retried.
    wait_for(
        "the hung tool is killed and counted",
        Duration::from_secs(3),
        || timeouts_counted(&metrics, "tool") >= 1,
    )
    .await;
    let pid = tool.pids()[0];
    wait_for("the killed tool is gone", Duration::from_secs(2), || {
        dead(pid)
    })
    .await;
    wait_for("the sync is retried", Duration::from_secs(3), || {
        tool.pids().len() >= 2
    })
    .await;
    assert_eq!(health.healthz().code, 503, "still failing");

    // The tool works again: the next retry succeeds and health recovers.
    tool.hang(false);
    wait_for("healthz recovers", Duration::from_secs(6), || {
        health.healthz().code == 200
    })
    .await;
    assert!(timeouts_counted(&metrics, "tool") >= 1);
    let text = metrics.encode();
    assert!(
        text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"),
        "{text}"
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    for pid in tool.pids() {
        assert!(dead(pid), "process {pid} outlived the test");
    }
}
