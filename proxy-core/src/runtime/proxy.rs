//! [`Proxy`]: the whole kube-proxy of the binary — sources, sync loop,
//! health and metrics servers, host set-up, conntrack cleanup — started
//! from a library user's own program, on their Tokio runtime, with their
//! `kube::Client`, their registry of backends and their metrics registry.
//!
//! The `kube-proxy` binary is a [`ProxyBuilder`] plus flag parsing.

use std::future::Future;
use std::sync::Arc;

use crate::backend::privileges::has_net_admin;
use crate::backend::{BackendContext, BackendFactory, CommandLimits, Registry};
use crate::config::{KubeProxyConfiguration, ProxyMode};
use crate::error::Error;
use crate::model::{IpFamily, NodeInfo};

use super::conntrack::ConntrackCleaner;
use super::health::{HealthServer, HostAddressLister, ProxyHealth, ServiceHealthServer};
use super::host_addresses::host_addresses;
use super::metrics::{MetricsServer, ProxyMetrics};
use super::node::NodeState;
use super::observer::SyncObserver;
use super::source::{KubeSource, KubeSourceOptions, Source};
use super::sync_loop::{Runtime, RuntimeOptions, cleanup_other_modes};

/// Where a [`Proxy`] gets its objects.
enum SourceChoice {
    /// Watch the API server with this client.
    Client(kube::Client),
    /// Any source (manifests, a channel, one of the embedder's).
    Source(Box<dyn Source>),
}

/// Builds a [`Proxy`].
///
/// ```no_run
/// # async fn example(client: kube::Client, registry: proxy_core::backend::Registry) -> Result<(), proxy_core::Error> {
/// use proxy_core::config::KubeProxyConfiguration;
/// use proxy_core::runtime::ProxyBuilder;
///
/// let mut metrics = prometheus_client::registry::Registry::default();
/// let mut config = KubeProxyConfiguration::default();
/// config.mode = Some(proxy_core::ProxyMode::Userspace);
/// let proxy = ProxyBuilder::new(config, registry, "node-1")
///     .kube_client(client)
///     .metrics_registry(&mut metrics)
///     .metrics_server(false)
///     .build()?;
/// proxy.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct ProxyBuilder {
    config: KubeProxyConfiguration,
    registry: Registry,
    node_name: String,
    mode: ProxyMode,
    source: Option<SourceChoice>,
    metrics: Arc<ProxyMetrics>,
    observers: Vec<Arc<dyn SyncObserver>>,
    host_setup: Option<bool>,
    health_server: bool,
    metrics_server: bool,
    host_addresses: HostAddressLister,
    commands: CommandLimits,
    families: Option<Vec<IpFamily>>,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("node_name", &self.node_name)
            .field("mode", &self.mode)
            .field("modes", &self.registry.modes())
            .field("host_setup", &self.host_setup)
            .field("health_server", &self.health_server)
            .field("metrics_server", &self.metrics_server)
            .finish_non_exhaustive()
    }
}

impl ProxyBuilder {
    /// A proxy for node `node_name` with `config`, in the mode
    /// `config.mode` selects (iptables when unset), built by that mode's
    /// factory in `registry` (which may hold backends of the caller's own).
    ///
    /// By default it serves `healthzBindAddress` and `metricsBindAddress`,
    /// counts the metrics in a [`ProxyMetrics`] of its own, lists the
    /// host's addresses for the health-check node ports, and sets up the
    /// host as the binary does when it may ([`host_setup`](Self::host_setup)).
    /// A source must be given: [`kube_client`](Self::kube_client) or
    /// [`source`](Self::source).
    pub fn new(
        config: KubeProxyConfiguration,
        registry: Registry,
        node_name: impl Into<String>,
    ) -> Self {
        let metrics = Arc::new(ProxyMetrics::new());
        ProxyBuilder {
            mode: config.effective_mode(),
            config,
            registry,
            node_name: node_name.into(),
            source: None,
            // Every external command (nft, iptables-restore, conntrack, ...)
            // is killed after the timeout and counted in the metrics.
            commands: CommandLimits::default().with_recorder(metrics.clone()),
            metrics,
            observers: Vec::new(),
            host_setup: None,
            health_server: true,
            metrics_server: true,
            host_addresses: Arc::new(host_addresses),
            families: None,
        }
    }

    /// Runs `mode` instead of the one `config.mode` selects.
    pub fn mode(mut self, mode: ProxyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Watches Services, EndpointSlices and this node through `client`, as
    /// the binary does (see [`KubeSource`]).
    pub fn kube_client(mut self, client: kube::Client) -> Self {
        self.source = Some(SourceChoice::Client(client));
        self
    }

    /// Gets the objects from `source` instead of the API server: manifests
    /// ([`ManifestSource`](super::source::ManifestSource)), objects the
    /// caller pushes ([`ChannelSource`](super::source::ChannelSource)), or
    /// a [`Source`] of the caller's own.
    pub fn source(mut self, source: Box<dyn Source>) -> Self {
        self.source = Some(SourceChoice::Source(source));
        self
    }

    /// Counts the metrics in `metrics` (e.g. one shared with other parts of
    /// the program) instead of a new [`ProxyMetrics`].
    pub fn metrics(mut self, metrics: Arc<ProxyMetrics>) -> Self {
        self.commands = self.commands.clone().with_recorder(metrics.clone());
        self.metrics = metrics;
        self
    }

    /// Also registers upstream's `kubeproxy_*` metrics in the caller's
    /// prometheus-client `registry`, so that the caller's own `/metrics`
    /// serves them (turn ours off with
    /// [`metrics_server(false)`](Self::metrics_server)). The values are
    /// shared: both registries show the same numbers. Call it after
    /// [`metrics`](Self::metrics), if both are used.
    pub fn metrics_registry(self, registry: &mut prometheus_client::registry::Registry) -> Self {
        self.metrics.register_in(registry);
        self
    }

    /// Adds an observer of every sync (e.g. the caller's own metrics or
    /// logs), after the health tracker, the metrics and the health-check
    /// node ports.
    pub fn observer(mut self, observer: Arc<dyn SyncObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Whether to change the host as kube-proxy does on start-up: set the
    /// conntrack sysctls, run the mode's privileged initialisation, remove
    /// the other modes' rules, and delete stale conntrack entries after
    /// syncs. (`oomScoreAdj` is a choice of the program, not the library's:
    /// the binary sets it.) By default this happens when the
    /// process has `CAP_NET_ADMIN` and the mode is not `userspace` (which
    /// programs no kernel rules).
    pub fn host_setup(mut self, enabled: bool) -> Self {
        self.host_setup = Some(enabled);
        self
    }

    /// Whether to serve `/healthz` and `/livez` on `healthzBindAddress`
    /// (default: yes, unless the address is empty).
    pub fn health_server(mut self, enabled: bool) -> Self {
        self.health_server = enabled;
        self
    }

    /// Whether to serve `/metrics` on `metricsBindAddress` (default: yes,
    /// unless the address is empty).
    pub fn metrics_server(mut self, enabled: bool) -> Self {
        self.metrics_server = enabled;
        self
    }

    /// Lists the host's addresses with `lister` (for the health-check node
    /// ports when `nodePortAddresses` selects some) instead of the
    /// interfaces' addresses.
    pub fn host_addresses(mut self, lister: HostAddressLister) -> Self {
        self.host_addresses = lister;
        self
    }

    /// Sets the time limit of the backends' external commands (their
    /// timeouts are still counted in the metrics).
    pub fn command_limits(mut self, limits: CommandLimits) -> Self {
        self.commands = limits.with_recorder(self.metrics.clone());
        self
    }

    /// Serves these IP families, primary first, instead of the node's
    /// (see [`RuntimeOptions::families`]).
    pub fn families(mut self, families: Vec<IpFamily>) -> Self {
        self.families = Some(families);
        self
    }

    /// Checks the choices: the mode must be in the registry, a source must
    /// be given, and the configured addresses must parse.
    pub fn build(self) -> Result<Proxy, Error> {
        let factory = self.registry.get(self.mode).cloned().ok_or_else(|| {
            let modes: Vec<String> = self
                .registry
                .modes()
                .iter()
                .map(|m| m.to_string())
                .collect();
            Error::config(
                "mode",
                format!(
                    "mode {} is not in the registry; available: {}",
                    self.mode,
                    modes.join(", ")
                ),
            )
        })?;
        let source = self.source.ok_or_else(|| {
            Error::config(
                "source",
                "no source of objects: give a kube::Client or a Source",
            )
        })?;
        if self.node_name.trim().is_empty() {
            return Err(Error::config("hostnameOverride", "the node name is empty"));
        }
        let config = Arc::new(self.config);
        let healthz_addr = match self.health_server {
            true => config.healthz_socket_addr()?,
            false => None,
        };
        let metrics_addr = match self.metrics_server {
            true => config.metrics_socket_addr()?,
            false => None,
        };
        let host_setup = self
            .host_setup
            .unwrap_or_else(|| self.mode != ProxyMode::Userspace && has_net_admin());
        let health = Arc::new(ProxyHealth::from_config(&config).with_metrics(self.metrics.clone()));
        Ok(Proxy {
            node_port_addresses: config.node_port_addresses()?,
            config,
            registry: self.registry,
            factory,
            node_name: self.node_name,
            source,
            metrics: self.metrics,
            health,
            observers: self.observers,
            host_setup,
            healthz_addr,
            metrics_addr,
            host_addresses: self.host_addresses,
            commands: self.commands,
            families: self.families,
        })
    }
}

/// A kube-proxy ready to run: see [`ProxyBuilder`].
pub struct Proxy {
    config: Arc<KubeProxyConfiguration>,
    registry: Registry,
    factory: Arc<dyn BackendFactory>,
    node_name: String,
    source: SourceChoice,
    metrics: Arc<ProxyMetrics>,
    health: Arc<ProxyHealth>,
    observers: Vec<Arc<dyn SyncObserver>>,
    host_setup: bool,
    healthz_addr: Option<std::net::SocketAddr>,
    metrics_addr: Option<std::net::SocketAddr>,
    node_port_addresses: crate::config::NodePortAddresses,
    host_addresses: HostAddressLister,
    commands: CommandLimits,
    families: Option<Vec<IpFamily>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("mode", &self.factory.mode())
            .field("node_name", &self.node_name)
            .field("host_setup", &self.host_setup)
            .field("healthz_addr", &self.healthz_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// The mode it runs.
    pub fn mode(&self) -> ProxyMode {
        self.factory.mode()
    }

    /// Its metrics (upstream's `kubeproxy_*`).
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// Its health tracker (what `/healthz` answers).
    pub fn health(&self) -> &Arc<ProxyHealth> {
        &self.health
    }

    /// Whether it changes the host (see [`ProxyBuilder::host_setup`]).
    pub fn host_setup(&self) -> bool {
        self.host_setup
    }

    /// Runs on the current Tokio runtime until `shutdown` completes, then
    /// returns and leaves the rules in place, as kube-proxy does on
    /// SIGTERM. The servers start first, so that a slow start-up step never
    /// keeps `/healthz` and `/metrics` from answering. Fails when no family
    /// can be served, or when a server cannot bind and
    /// `bindAddressHardFail` is set.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let config = self.config;
        let mode = self.factory.mode();
        let hard_fail = config.bind_address_hard_fail;
        let mut servers = tokio::task::JoinSet::new();
        if let Some(addr) = self.healthz_addr {
            servers.spawn(HealthServer::new(self.health.clone()).serve_retrying(addr, hard_fail));
        }
        if let Some(addr) = self.metrics_addr {
            servers.spawn(
                MetricsServer::new(self.metrics.clone(), &config).serve_retrying(addr, hard_fail),
            );
        }
        let runtime_options = RuntimeOptions {
            commands: self.commands.clone(),
            families: self.families,
            ..RuntimeOptions::new(&config, self.node_name.clone())
        };
        if self.host_setup {
            set_up_host(
                &config,
                &self.registry,
                &self.factory,
                &self.node_name,
                runtime_options.bind_ip,
                &self.commands,
            )
            .await?;
        } else {
            tracing::info!(%mode, "not setting sysctls nor cleaning up other modes' rules");
        }
        // Health-check node ports follow the synced node and the host's addresses.
        let service_health = Arc::new(ServiceHealthServer::for_node_port_addresses(
            self.health.clone(),
            self.node_port_addresses,
            self.host_addresses,
        ));
        service_health.watch_host_addresses();
        let mut observers: Vec<Arc<dyn SyncObserver>> =
            vec![self.health.clone(), self.metrics.clone(), service_health];
        // Stale UDP flows exist only where the kernel does the NAT.
        if self.host_setup {
            observers.push(Arc::new(
                ConntrackCleaner::host_with_limits(self.commands.clone())
                    .with_metrics(self.metrics.clone()),
            ));
        }
        observers.extend(self.observers);
        let source: Box<dyn Source> = match self.source {
            SourceChoice::Client(client) => Box::new(KubeSource::new(
                client,
                KubeSourceOptions {
                    node_name: self.node_name.clone(),
                },
            )),
            SourceChoice::Source(source) => source,
        };
        let runtime = Runtime::new(config.clone(), self.factory, observers, runtime_options);
        let servers_failed = async {
            while let Some(result) = servers.join_next().await {
                match result {
                    Ok(Err(error)) => return error,
                    Err(error) => {
                        return Error::Io {
                            context: "the health or metrics server stopped".to_string(),
                            source: std::io::Error::other(error),
                        };
                    }
                    Ok(Ok(())) => {}
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            result = runtime.run(source, shutdown) => result,
            error = servers_failed => Err(error),
        }
    }
}

/// What kube-proxy does to the host before its first sync: the conntrack
/// sysctls, the mode's privileged initialisation and (in the background)
/// the removal of the other modes' rules. Failures are logged, never fatal.
async fn set_up_host(
    config: &Arc<KubeProxyConfiguration>,
    registry: &Registry,
    factory: &Arc<dyn BackendFactory>,
    node_name: &str,
    bind_ip: Option<std::net::IpAddr>,
    commands: &CommandLimits,
) -> Result<(), Error> {
    let mode = factory.mode();
    match super::sysctl::apply_conntrack_sysctls(config) {
        Ok(changes) => tracing::info!(changed = changes.len(), "conntrack sysctls applied"),
        Err(error) => tracing::warn!(%error, "setting the conntrack sysctls failed"),
    }
    let node: Arc<NodeInfo> = NodeState::new(node_name, bind_ip, None).info;
    let contexts = IpFamily::ALL
        .into_iter()
        .map(|family| {
            BackendContext::new(config.clone(), node.clone(), family)
                .map(|ctx| ctx.with_commands(commands.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for ctx in &contexts {
        if let Err(error) = factory.privileged_init(ctx).await {
            tracing::warn!(%mode, family = %ctx.family, %error, "privileged initialisation failed");
        }
    }
    // Other modes' leftovers live in tables and chains of their own
    // (iptables and ipvs, which share chains, never clean each other), so
    // removing them need not hold up this mode's first sync: a hung tool
    // there (killed only after the command timeout, per command) would
    // otherwise delay it by minutes.
    let registry = registry.clone();
    tokio::spawn(async move { cleanup_other_modes(&registry, mode, &contexts).await });
    Ok(())
}
