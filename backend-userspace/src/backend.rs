//! [`UserspaceBackend`]: the [`Backend`] that proxies in-process.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};

use proxy_core::backend::BackendContext;
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, IpFamily, NodeView, ProxyMode, ServicePortName,
    ServicePortView, SyncStats,
};

use crate::balancer::Balancer;
use crate::error::UserspaceError;
use crate::host::HostAddresses;
use crate::listener::{Listener, Sockets};
use crate::options::Options;
use crate::plan::{ListenerKey, ListenerSpec, NodePortAddresses, listeners_of};
use crate::route::{Route, SharedHost};

/// What the userspace mode can express.
pub const CAPABILITIES: Capabilities = {
    let mut c = Capabilities::ALL;
    c.sctp = false;
    // Only ClusterIPs, external IPs and load-balancer IPs that are assigned
    // to this host are served: there are no redirect rules.
    c.cluster_ip = false;
    c.external_ip = false;
    c.source_ranges = false;
    // The proxy opens its own connection: endpoints see a node address.
    c.preserves_client_ip = false;
    c.detect_local = false;
    c
};

/// A listener that could not be opened, kept and retried on every sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFailure {
    /// The listener wanted.
    pub spec: ListenerSpec,
    /// Why it is not open.
    pub reason: String,
}

/// The userspace backend for one IP family: a listener per service address
/// it can serve, forwarding each connection to an endpoint chosen by round
/// robin (with ClientIP affinity), and one session per UDP client.
///
/// Listeners are Tokio tasks: `sync` must run inside a Tokio runtime.
#[derive(Debug)]
pub struct UserspaceBackend {
    family: IpFamily,
    node_ports: NodePortAddresses,
    options: Options,
    sockets: Sockets,
    host: SharedHost,
    host_known: bool,
    balancers: BTreeMap<ServicePortName, Arc<Balancer>>,
    /// The listeners each service port wants, as of the last sync.
    wanted: BTreeMap<ServicePortName, Vec<ListenerSpec>>,
    listeners: BTreeMap<ListenerKey, Listener>,
    failures: BTreeMap<ListenerKey, ListenerFailure>,
}

impl UserspaceBackend {
    /// A backend for `ctx`, with settings from `ctx.config`. Opens nothing
    /// until the first sync.
    pub fn new(ctx: &BackendContext) -> Self {
        Self::with_options(ctx, Options::from_context(ctx))
    }

    /// A backend for `ctx` with explicit settings.
    pub fn with_options(ctx: &BackendContext, options: Options) -> Self {
        UserspaceBackend {
            family: ctx.family,
            node_ports: NodePortAddresses::from_context(ctx),
            options,
            sockets: Sockets::Real,
            host: Arc::default(),
            host_known: false,
            balancers: BTreeMap::new(),
            wanted: BTreeMap::new(),
            listeners: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// A backend that computes and records its listeners without opening
    /// any socket, taking `host` as the host's addresses: for tracers,
    /// tests and dry runs.
    pub fn dry_run(ctx: &BackendContext, host: HostAddresses) -> Self {
        let mut backend = Self::new(ctx);
        backend.sockets = Sockets::Dry;
        backend.host = Arc::new(RwLock::new(Arc::new(host)));
        backend.host_known = true;
        backend
    }

    /// The settings.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Listeners that could not be opened (port in use, address conflict).
    pub fn failures(&self) -> impl Iterator<Item = &ListenerFailure> {
        self.failures.values()
    }

    /// The listeners held, with their state (`serving`, `refusing`,
    /// `planned`).
    pub fn listeners(&self) -> impl Iterator<Item = (&ListenerSpec, &'static str)> {
        self.listeners.values().map(|l| (&l.spec, l.state()))
    }

    pub(crate) fn listener(&self, key: &ListenerKey) -> Option<&ListenerSpec> {
        self.listeners.get(key).map(|l| &l.spec)
    }

    pub(crate) fn balancer(&self, port: &ServicePortName) -> Option<&Arc<Balancer>> {
        self.balancers.get(port)
    }

    pub(crate) fn host_addresses(&self) -> Arc<HostAddresses> {
        self.host
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn refresh_host(&mut self) -> Result<(), UserspaceError> {
        if self.sockets == Sockets::Dry {
            return Ok(());
        }
        let host = HostAddresses::discover()?;
        *self.host.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(host);
        self.host_known = true;
        Ok(())
    }

    /// Brings one service port to `view` (None: removed). Returns the
    /// number of objects (balancers, listeners) written.
    fn sync_port(&mut self, name: &ServicePortName, view: Option<&Arc<ServicePortView>>) -> usize {
        let mut written = 0;
        match (self.balancers.get(name), view) {
            (Some(balancer), Some(view)) => written += usize::from(balancer.update(view.clone())),
            (None, Some(view)) => {
                self.balancers
                    .insert(name.clone(), Arc::new(Balancer::new(view.clone())));
                written += 1;
            }
            (Some(_), None) => {
                self.balancers.remove(name);
                written += 1;
            }
            (None, None) => {}
        }
        let host = self.host_addresses();
        let specs = view.map_or_else(Vec::new, |v| listeners_of(v, &self.node_ports, &host));
        let previous = self.wanted.remove(name).unwrap_or_default();
        for old in previous.iter().filter(|old| !specs.contains(old)) {
            if self.listeners.get(&old.key).is_some_and(|l| l.spec == *old) {
                self.listeners.remove(&old.key);
                written += 1;
            }
            if self.failures.get(&old.key).is_some_and(|f| f.spec == *old) {
                self.failures.remove(&old.key);
            }
        }
        for new in specs.iter().filter(|new| !previous.contains(new)) {
            written += usize::from(self.open(new.clone()));
        }
        if !specs.is_empty() {
            self.wanted.insert(name.clone(), specs);
        }
        written
    }

    /// Opens `spec`; on failure records it (and logs it once). Returns
    /// whether a listener was opened.
    fn open(&mut self, spec: ListenerSpec) -> bool {
        let result = match (
            self.listeners.get(&spec.key),
            self.balancers.get(&spec.port),
        ) {
            (Some(holder), _) => Err(UserspaceError::Conflict {
                port: Box::new(spec.port.clone()),
                listener: spec.key,
                owner: Box::new(holder.spec.port.clone()),
            }),
            (None, None) => return false,
            (None, Some(balancer)) => {
                let route = Route {
                    port: spec.port.clone(),
                    class: spec.class,
                    balancer: balancer.clone(),
                    host: self.host.clone(),
                    options: self.options,
                };
                Listener::open(spec.clone(), route, self.sockets).map_err(|source| {
                    UserspaceError::Bind {
                        port: Box::new(spec.port.clone()),
                        listener: spec.key,
                        source,
                    }
                })
            }
        };
        match result {
            Ok(listener) => {
                tracing::debug!(service = %spec.port, listener = %spec.key, state = listener.state(), "listener opened");
                self.failures.remove(&spec.key);
                self.listeners.insert(spec.key, listener);
                true
            }
            Err(error) => {
                let reason = error.to_string();
                let repeated = self
                    .failures
                    .get(&spec.key)
                    .is_some_and(|f| f.reason == reason);
                if repeated {
                    tracing::debug!(service = %spec.port, listener = %spec.key, %error, "listener still cannot be opened");
                } else {
                    tracing::error!(service = %spec.port, listener = %spec.key, %error, "cannot open listener");
                }
                self.failures
                    .insert(spec.key, ListenerFailure { spec, reason });
                false
            }
        }
    }

    /// Retries every failed listener whose address is free now.
    fn retry_failures(&mut self) -> usize {
        let retry: Vec<ListenerSpec> = self
            .failures
            .values()
            .filter(|f| !self.listeners.contains_key(&f.spec.key))
            .map(|f| f.spec.clone())
            .collect();
        retry
            .into_iter()
            .map(|spec| usize::from(self.open(spec)))
            .sum()
    }

    /// A canonical, sorted dump of the state: listeners, then balancers.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for listener in self.listeners.values() {
            let s = &listener.spec;
            let _ = writeln!(
                out,
                "listener {} {} {} {}",
                s.key,
                s.port,
                s.class.as_str(),
                listener.state()
            );
        }
        for failure in self.failures.values() {
            let s = &failure.spec;
            let _ = writeln!(out, "failed {} {} {}", s.key, s.port, s.class.as_str());
        }
        for (name, balancer) in &self.balancers {
            let _ = writeln!(out, "balancer {name} {}", describe(&balancer.view()));
        }
        out
    }
}

fn endpoints(list: &[proxy_core::Endpoint]) -> String {
    let parts: Vec<String> = list.iter().map(|e| e.socket_addr().to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn describe(view: &ServicePortView) -> String {
    let affinity = view.port.session_affinity.map_or_else(
        || "none".to_string(),
        |a| format!("clientip/{}s", a.timeout_seconds),
    );
    format!(
        "internal={:?} external={:?} cluster={} local={} affinity={affinity}",
        view.internal,
        view.external,
        endpoints(&view.cluster),
        endpoints(&view.local)
    )
}

#[async_trait::async_trait]
impl Backend for UserspaceBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        if self.sockets == Sockets::Real && tokio::runtime::Handle::try_current().is_err() {
            return Err(UserspaceError::NoRuntime.into());
        }
        if changes.is_full() || !self.host_known {
            self.refresh_host()?;
        }
        let names: BTreeSet<ServicePortName> = if changes.is_full() {
            view.iter()
                .map(|(n, _)| n.clone())
                .chain(self.balancers.keys().cloned())
                .collect()
        } else {
            changes.ports().cloned().collect()
        };
        let mut stats = SyncStats {
            full: changes.is_full(),
            ..SyncStats::default()
        };
        for name in &names {
            let written = self.sync_port(name, view.get(name));
            stats.objects_written += written;
            stats.ports_written += usize::from(written > 0);
        }
        stats.objects_written += self.retry_failures();
        if changes.is_full() {
            let now = std::time::Instant::now();
            self.balancers.values().for_each(|b| b.expire(now));
        }
        stats.totals = vec![
            ("listeners".to_string(), self.listeners.len() as u64),
            ("listener_failures".to_string(), self.failures.len() as u64),
        ];
        Ok(stats)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.listeners.clear();
        self.failures.clear();
        self.wanted.clear();
        self.balancers.clear();
        Ok(())
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        let host = if self.host_known {
            self.host_addresses()
        } else {
            Arc::new(HostAddresses::discover()?)
        };
        let mut out = format!("# userspace listeners ({})\n", self.family);
        for (name, port) in view.iter() {
            for spec in listeners_of(port, &self.node_ports, &host) {
                let action = if spec.refuse {
                    "refuse".to_string()
                } else {
                    describe(port)
                };
                let _ = writeln!(
                    out,
                    "{} {name} {} -> {action}",
                    spec.key,
                    spec.class.as_str()
                );
            }
        }
        Ok(out)
    }
}
