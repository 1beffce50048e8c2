//! What the binary does once its options are resolved.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use proxy_core::backend::{BackendContext, BackendFactory, Registry};
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{
    KubeSource, KubeSourceOptions, ManifestSource, Source, client_from_config,
};
use proxy_core::runtime::{
    NodeState, ProxyBuilder, RuntimeOptions, initial_state, shutdown_signal,
};
use proxy_core::{IpFamily, NodeInfo, NodeView};

use crate::config_watch::ConfigWatch;
use crate::options::{Action, Options, UsageError, node_name};
use crate::privileges;

/// The exit code of usage errors (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Runs `options.action`.
pub async fn execute(options: Options, registry: Registry) -> anyhow::Result<ExitCode> {
    match &options.config_file {
        Some(file) => {
            tracing::debug!(action = ?options.action, config = %file.path.display(), "executing")
        }
        None => tracing::debug!(action = ?options.action, "executing"),
    }
    match &options.action {
        Action::WriteConfig(path) => {
            let text = options.config_to_write.to_yaml()?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "wrote the configuration");
            Ok(ExitCode::SUCCESS)
        }
        Action::Cleanup => cleanup(&options, &registry).await,
        Action::InitOnly => init_only(&options, &registry).await,
        Action::DryRun => dry_run(&options, &registry).await,
        Action::Run => run(options, &registry).await,
    }
}

fn factory(options: &Options, registry: &Registry) -> Result<Arc<dyn BackendFactory>, UsageError> {
    let mode = options.config.effective_mode();
    registry.get(mode).cloned().ok_or_else(|| {
        let modes: Vec<String> = registry.modes().iter().map(ToString::to_string).collect();
        UsageError(format!(
            "invalid flag --proxy-mode: mode {mode} is not compiled into this binary; available: {}",
            modes.join(", ")
        ))
    })
}

/// One context per family for `node`, without the Node object.
fn contexts(
    config: &Arc<KubeProxyConfiguration>,
    node: &Arc<NodeInfo>,
) -> anyhow::Result<Vec<BackendContext>> {
    IpFamily::ALL
        .into_iter()
        .map(|family| {
            BackendContext::new(config.clone(), node.clone(), family).map_err(anyhow::Error::from)
        })
        .collect()
}

fn preliminary_node(options: &Options) -> Result<NodeState, UsageError> {
    let name = node_name(&options.config)?;
    Ok(NodeState::new(
        &name,
        RuntimeOptions::new(&options.config, "").bind_ip,
        None,
    ))
}

pub(crate) async fn source(options: &Options, node_name: &str) -> anyhow::Result<Box<dyn Source>> {
    if let Some(path) = &options.manifests {
        if !options.config.client_connection.kubeconfig.is_empty() || options.master.is_some() {
            tracing::warn!("--manifests is set: the API server is not used");
        }
        return Ok(Box::new(ManifestSource::new(path)?));
    }
    let client = client_from_config(&options.config, options.master.as_deref()).await?;
    Ok(Box::new(KubeSource::new(
        client,
        KubeSourceOptions {
            node_name: node_name.to_string(),
        },
    )))
}

/// `--cleanup`: every registered mode, both families.
async fn cleanup(options: &Options, registry: &Registry) -> anyhow::Result<ExitCode> {
    let node = preliminary_node(options)?;
    let config = Arc::new(options.config.clone());
    let contexts = contexts(&config, &node.info)?;
    // Modes can depend on each other's cleanup: iptables and ipvs share
    // chains (`KUBE-PROXY-FIREWALL`, `KUBE-SERVICES`, ...), and a chain the
    // other mode's rules still jump to cannot be deleted yet. So a failed
    // cleanup is tried once more after every other one ran.
    let mut retry = Vec::new();
    for factory in registry.iter() {
        for ctx in &contexts {
            if let Err(error) = factory.cleanup_leftovers(ctx).await {
                tracing::info!(mode = %factory.mode(), family = %ctx.family, %error, "cleanup incomplete; trying again after the other modes' cleanups");
                retry.push((factory, ctx));
            } else {
                tracing::info!(mode = %factory.mode(), family = %ctx.family, "cleaned up");
            }
        }
    }
    let mut failed = false;
    for (factory, ctx) in retry {
        match factory.cleanup_leftovers(ctx).await {
            Ok(()) => {
                tracing::info!(mode = %factory.mode(), family = %ctx.family, "cleaned up")
            }
            Err(error) => {
                failed = true;
                tracing::error!(mode = %factory.mode(), family = %ctx.family, %error, "cleanup failed");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Says which settings of `config` this implementation accepts but does not
/// act on (see docs/running-in-a-cluster.md), so nobody relies on them.
fn warn_unused_settings(config: &KubeProxyConfiguration) {
    if config.enable_profiling {
        tracing::warn!("enableProfiling/--profiling is accepted but /debug/pprof is not served");
    }
    if !config.feature_gates.is_empty() {
        tracing::warn!(gates = ?config.feature_gates, "featureGates are accepted and ignored: every feature this implementation has is on");
    }
    if !config.show_hidden_metrics_for_version.is_empty() {
        tracing::warn!("showHiddenMetricsForVersion is accepted and ignored: no metric is hidden");
    }
}

/// `--init-only`: the mode's privileged set-up and the conntrack sysctls.
async fn init_only(options: &Options, registry: &Registry) -> anyhow::Result<ExitCode> {
    let factory = factory(options, registry)?;
    let node = preliminary_node(options)?;
    let config = Arc::new(options.config.clone());
    let mut failed = false;
    for ctx in contexts(&config, &node.info)? {
        if let Err(error) = factory.privileged_init(&ctx).await {
            failed = true;
            tracing::error!(mode = %factory.mode(), family = %ctx.family, %error, "privileged initialisation failed");
        }
    }
    match proxy_core::runtime::sysctl::apply_conntrack_sysctls(&options.config) {
        Ok(changes) => tracing::info!(changed = changes.len(), "conntrack sysctls applied"),
        Err(error) => {
            failed = true;
            tracing::error!(%error, "setting the conntrack sysctls failed");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--dry-run`: the ruleset of each family for the sources' current state.
async fn dry_run(options: &Options, registry: &Registry) -> anyhow::Result<ExitCode> {
    let factory = factory(options, registry)?;
    let name = node_name(&options.config)?;
    let (topology, node) = initial_state(source(options, &name).await?, &name).await?;
    let state = NodeState::new(
        &name,
        RuntimeOptions::new(&options.config, &name).bind_ip,
        node.as_ref(),
    );
    let config = Arc::new(options.config.clone());
    let mode = factory.mode();
    let mut out = String::new();
    for family in state.families() {
        let ctx = BackendContext::new(config.clone(), state.info.clone(), family)?;
        let backend = factory
            .build(&ctx)
            .with_context(|| format!("building the {mode} backend for {family}"))?;
        let view = NodeView::build(&topology, state.info.clone(), family);
        let rules = backend
            .render(&view)
            .with_context(|| format!("rendering the {mode} rules for {family}"))?;
        out.push_str(&format!(
            "# {mode} {family}: {} service ports\n",
            view.len()
        ));
        out.push_str(&rules);
        if !rules.ends_with('\n') {
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Why the proxy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT: exit 0.
    Signal,
    /// The `--config` file changed: exit 1, to be restarted with it.
    ConfigChanged,
}

/// Completes when kube-proxy should stop, saying why: a signal, or (with
/// `--config`) a change of the configuration file, as upstream.
async fn stop_requested(watch: Option<ConfigWatch>) -> Stop {
    let config_changed = async {
        match watch {
            Some(watch) => {
                let path = watch.path().to_path_buf();
                watch.changed().await;
                tracing::warn!(path = %path.display(), "the configuration file changed; exiting so that kube-proxy is restarted with it");
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown_signal() => Stop::Signal,
        () = config_changed => Stop::ConfigChanged,
    }
}

/// The proxy. Exits 0 on SIGTERM/SIGINT and 1 when the `--config` file
/// changed; both leave the rules in place. The same [`ProxyBuilder`] a
/// library user embeds, plus the flags, `oomScoreAdj` and the config watch.
async fn run(options: Options, registry: &Registry) -> anyhow::Result<ExitCode> {
    let factory = factory(&options, registry)?;
    let mode = factory.mode();
    let node = preliminary_node(&options)?;
    let watch = options.config_file.clone().map(ConfigWatch::new);
    tracing::info!(%mode, node = %node.info.name, sync_period = %options.sync_period(), "starting kube-proxy");
    warn_unused_settings(&options.config);
    let source = source(&options, &node.info.name).await?;
    let proxy = ProxyBuilder::new(
        options.config.clone(),
        registry.clone(),
        node.info.name.clone(),
    )
    .mode(mode)
    .source(source)
    .build()?;
    // The userspace proxy programs no kernel rules: it neither needs the
    // conntrack sysctls nor removes other modes' rules (use --cleanup).
    if proxy.host_setup()
        && let Some(adj) = options.config.oom_score_adj
    {
        privileges::set_oom_score_adj(adj);
    }
    let (stopped_tx, mut stopped) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let _ = stopped_tx.send(stop_requested(watch).await);
    };
    proxy.run(shutdown).await.map_err(|error| match error {
        proxy_core::Error::Io { .. } if options.config.bind_address_hard_fail => {
            anyhow::Error::from(error).context("bindAddressHardFail is set")
        }
        error => anyhow::Error::from(error),
    })?;
    Ok(match stopped.try_recv() {
        Ok(Stop::ConfigChanged) => ExitCode::FAILURE,
        Ok(Stop::Signal) | Err(_) => ExitCode::SUCCESS,
    })
}
