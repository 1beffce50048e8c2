//! [`UserspaceBackend`]: the [`Backend`] that proxies in-process.

use std::collections::BTreeMap;
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
use crate::plan::{
    ListenerKey, ListenerSpec, NodePortAddresses, RedirectSpec, TrafficClass, listeners_of,
    redirects_of,
};
use crate::redirect::RedirectMode;
use crate::redirect::Vip;
use crate::redirect::state::RedirectState;
use crate::redirect::text::{ElementLine, script};
use crate::route::{Route, SharedHost};

/// What the userspace mode can express without redirect rules.
pub const CAPABILITIES: Capabilities = {
    let mut c = CAPABILITIES_WITH_REDIRECT;
    // Only ClusterIPs, external IPs and load-balancer IPs that are assigned
    // to this host are served.
    c.cluster_ip = false;
    c.external_ip = false;
    c
};

/// What the userspace mode can express with redirect rules
/// ([`RedirectMode`]): every VIP is captured.
pub const CAPABILITIES_WITH_REDIRECT: Capabilities = {
    let mut c = Capabilities::ALL;
    c.sctp = false;
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
    /// Redirect mode's VIPs, listeners and rules; `None` when off.
    redirect: Option<RedirectState>,
}

impl UserspaceBackend {
    /// A backend for `ctx`, with settings from `ctx.config`. Opens nothing
    /// until the first sync.
    pub fn new(ctx: &BackendContext) -> Self {
        Self::with_options(ctx, Options::from_context(ctx))
    }

    /// A backend for `ctx` with explicit settings. Redirect mode is decided
    /// here ([`RedirectMode::enabled`]).
    pub fn with_options(ctx: &BackendContext, options: Options) -> Self {
        Self::build(ctx, options, Sockets::Real)
    }

    fn build(ctx: &BackendContext, options: Options, sockets: Sockets) -> Self {
        let redirect = options
            .redirect
            .enabled()
            .then(|| RedirectState::new(ctx.family, sockets, ctx.commands.clone()));
        UserspaceBackend {
            family: ctx.family,
            node_ports: NodePortAddresses::from_context(ctx),
            options,
            sockets,
            host: Arc::default(),
            host_known: false,
            balancers: BTreeMap::new(),
            wanted: BTreeMap::new(),
            listeners: BTreeMap::new(),
            failures: BTreeMap::new(),
            redirect,
        }
    }

    /// A backend that computes and records its listeners (and redirect
    /// rules, when `options` ask for them) without opening any socket or
    /// running `nft`, taking `host` as the host's addresses: for tracers,
    /// tests and dry runs. [`RedirectMode::Auto`] is off here.
    pub fn dry_run(ctx: &BackendContext, host: HostAddresses, options: Options) -> Self {
        let options = match options.redirect {
            RedirectMode::Auto => options.with_redirect(RedirectMode::Off),
            _ => options,
        };
        let mut backend = Self::build(ctx, options, Sockets::Dry);
        backend.host = Arc::new(RwLock::new(Arc::new(host)));
        backend.host_known = true;
        backend
    }

    /// The settings.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Whether redirect rules capture VIP traffic.
    pub fn redirecting(&self) -> bool {
        self.redirect.is_some()
    }

    /// Listeners that could not be opened (port in use, address conflict).
    pub fn failures(&self) -> impl Iterator<Item = &ListenerFailure> {
        self.failures
            .values()
            .chain(self.redirect.iter().flat_map(|r| r.failures()))
    }

    /// The listeners held, with their state (`serving`, `refusing`,
    /// `planned`).
    pub fn listeners(&self) -> impl Iterator<Item = (&ListenerSpec, &'static str)> {
        self.listeners.values().map(|l| (&l.spec, l.state()))
    }

    pub(crate) fn family(&self) -> IpFamily {
        self.family
    }

    pub(crate) fn balancers(&self) -> impl Iterator<Item = (&ServicePortName, &Arc<Balancer>)> {
        self.balancers.iter()
    }

    pub(crate) fn redirect_state(&self) -> Option<&RedirectState> {
        self.redirect.as_ref()
    }

    /// The route of a listener of `port` with `class`, if the port has a
    /// balancer.
    fn route(&self, port: &ServicePortName, class: TrafficClass) -> Option<Route> {
        let balancer = self.balancers.get(port)?;
        Some(Route {
            port: port.clone(),
            class,
            balancer: balancer.clone(),
            host: self.host.clone(),
            options: self.options,
        })
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
        if let Some(mut redirect) = self.redirect.take() {
            written +=
                redirect.sync_port(name, view.map(|v| &**v), |class| self.route(name, class));
            self.redirect = Some(redirect);
        }
        let host = self.host_addresses();
        let local_vips = self.redirect.is_none();
        let specs = view.map_or_else(Vec::new, |v| {
            listeners_of(v, &self.node_ports, &host, local_vips)
        });
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
            (None, Some(_)) => {
                let Some(route) = self.route(&spec.port, spec.class) else {
                    return false;
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
        if let Some(redirect) = &self.redirect {
            redirect.dump(&mut out);
        }
        for (name, balancer) in &self.balancers {
            let _ = writeln!(out, "balancer {name} {}", describe(&balancer.view()));
        }
        out
    }

    /// The redirect table for `view` as an nft script, with the ports of
    /// the listeners open now.
    fn render_redirects(&self, view: &NodeView, redirect: &RedirectState) -> String {
        let mut owners: BTreeMap<Vip, RedirectSpec> = BTreeMap::new();
        for (_, port) in view.iter() {
            for spec in redirects_of(port) {
                owners.entry(spec.vip).or_insert(spec);
            }
        }
        let lines: Vec<ElementLine> = owners
            .into_values()
            .map(|spec| ElementLine {
                vip: spec.vip,
                redirect: (!spec.reject).then(|| {
                    redirect
                        .listener_port(&(spec.port.clone(), spec.class))
                        .filter(|p| *p != 0)
                }),
                owner: format!("{} {}", spec.port, spec.class.as_str()),
            })
            .collect();
        script(self.family, &lines)
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
        if self.redirect.is_some() {
            CAPABILITIES_WITH_REDIRECT
        } else {
            CAPABILITIES
        }
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
        let names = changes.ports_to_visit(view, self.balancers.keys());
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
        if let Some(mut redirect) = self.redirect.take() {
            stats.objects_written +=
                redirect.retry_failures(|(port, class)| self.route(port, *class));
            let elements = redirect.elements();
            let written = redirect.rules.write(elements, changes.is_full()).await;
            let listeners = redirect.listener_count();
            self.redirect = Some(redirect);
            stats.objects_written += written?;
            stats
                .totals
                .push(("redirect_listeners".to_string(), listeners as u64));
        }
        if changes.is_full() {
            let now = std::time::Instant::now();
            self.balancers.values().for_each(|b| b.expire(now));
        }
        stats.totals.extend([
            ("listeners".to_string(), self.listeners.len() as u64),
            (
                "listener_failures".to_string(),
                self.failures().count() as u64,
            ),
        ]);
        Ok(stats)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.listeners.clear();
        self.failures.clear();
        self.wanted.clear();
        self.balancers.clear();
        if let Some(redirect) = &mut self.redirect {
            redirect.clear();
            redirect.rules.delete().await?;
        }
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
            for spec in listeners_of(port, &self.node_ports, &host, self.redirect.is_none()) {
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
        if let Some(redirect) = &self.redirect {
            let _ = writeln!(out, "# redirect rules ({}, nft)", self.family);
            out.push_str(&self.render_redirects(view, redirect));
        }
        Ok(out)
    }

    /// The listener table ([`UserspaceBackend::table`]) as JSON, for the
    /// metrics server's `/proxyListeners`.
    fn listing(&self) -> Option<String> {
        Some(self.table().to_json())
    }
}
