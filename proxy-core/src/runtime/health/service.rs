//! [`ServiceHealthServer`]: the health-check node ports of
//! `externalTrafficPolicy: Local` LoadBalancer services (upstream's
//! `ServiceHealthServer`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use crate::config::NodePortAddresses;
use crate::model::{IpFamily, NodeInfo, ServiceKey};
use crate::runtime::observer::{SyncObserver, SyncReport};
use crate::view::NodeView;

use super::proxy::ProxyHealth;
use super::server::NOSNIFF;

/// The header carrying the number of local endpoints.
pub const ENDPOINT_WEIGHT_HEADER: &str = "x-load-balancing-endpoint-weight";

/// Where the health-check node ports listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckAddresses {
    /// Every address: `[::]` (dual-stack), or `0.0.0.0` when IPv6 is off.
    All,
    /// These addresses only; `0.0.0.0` stands for every IPv4 address.
    Ips(Vec<IpAddr>),
}

impl HealthCheckAddresses {
    /// The addresses `nodePortAddresses` selects, as the node ports'
    /// ([`NodePortAddresses::networks_for`]): every address when it matches
    /// all of both families, otherwise per family the host's addresses
    /// (`local_ips`) inside its networks (`primary` is the node's primary
    /// IP of the family, so it is served when the host has it), or every
    /// address of a family it matches all of (`0.0.0.0`; for IPv6 each of
    /// the host's IPv6 addresses, since `[::]` would take IPv4 too).
    /// `localhost` selects the host's loopback addresses, as upstream.
    pub fn from_node_port_addresses(
        npa: &NodePortAddresses,
        local_ips: &[IpAddr],
        node: &NodeInfo,
    ) -> Self {
        if npa.matches_all() {
            return HealthCheckAddresses::All;
        }
        let mut ips = Vec::new();
        for family in IpFamily::ALL {
            let primary = node.primary_ip(family);
            if family == IpFamily::V4 && npa.networks_for(family, primary).is_none() {
                ips.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            } else {
                ips.extend(npa.select_local(family, primary, local_ips));
            }
        }
        ips.sort_unstable();
        ips.dedup();
        HealthCheckAddresses::Ips(ips)
    }

    /// The addresses to bind, each with its own listener (`[::]` for all).
    fn targets(&self) -> Vec<IpAddr> {
        match self {
            HealthCheckAddresses::All => vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            HealthCheckAddresses::Ips(ips) => ips.clone(),
        }
    }
}

/// Lists the host's addresses (`getifaddrs`), for the `nodePortAddresses`
/// that select some of them.
pub type HostAddressLister = Arc<dyn Fn() -> std::io::Result<Vec<IpAddr>> + Send + Sync>;

/// How the listen addresses are chosen.
enum Selection {
    /// Given once.
    Fixed(HealthCheckAddresses),
    /// From `nodePortAddresses`, the node of the latest synced view and the
    /// host's addresses, re-resolved at every sync and host address change.
    NodePortAddresses {
        npa: NodePortAddresses,
        host: HostAddressLister,
    },
}

/// One listener; aborted when dropped.
#[derive(Debug)]
struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One service's listeners, one per address.
#[derive(Debug)]
struct Instance {
    port: u16,
    listeners: BTreeMap<IpAddr, Listener>,
}

#[derive(Debug, Default)]
struct ServiceState {
    /// Per family, what its last synced view wants: service → (port, local ready IPs).
    wanted: BTreeMap<IpFamily, BTreeMap<ServiceKey, (u16, u32)>>,
    /// Open listeners.
    instances: HashMap<ServiceKey, Instance>,
    /// Failed binds per service, cumulative.
    bind_failures: HashMap<ServiceKey, u64>,
    /// The node of the latest synced view.
    node: Option<Arc<NodeInfo>>,
    /// The host's addresses, as last listed successfully.
    host: Option<Vec<IpAddr>>,
    /// Where the listeners listen (last resolved).
    addresses: Option<HealthCheckAddresses>,
}

impl ServiceState {
    /// Local endpoints of `key` over all families (their IPs are distinct).
    fn endpoints(&self, key: &ServiceKey) -> u32 {
        self.wanted
            .values()
            .filter_map(|services| services.get(key))
            .map(|(_, n)| *n)
            .fold(0, u32::saturating_add)
    }

    /// Wanted services and their port (the first family's, if they differ).
    fn desired(&self) -> BTreeMap<ServiceKey, u16> {
        let mut out = BTreeMap::new();
        for services in self.wanted.values() {
            for (key, (port, _)) in services {
                out.entry(key.clone()).or_insert(*port);
            }
        }
        out
    }
}

/// The health-check node port servers: one HTTP listener per
/// `externalTrafficPolicy: Local` LoadBalancer service with a
/// `healthCheckNodePort`, on every address of [`HealthCheckAddresses`].
///
/// Every path answers, with `Content-Type: application/json`,
/// `X-Content-Type-Options: nosniff` and `X-Load-Balancing-Endpoint-Weight:
/// <n>`, status 200 when `n != 0` and the proxy is healthy
/// ([`ProxyHealth::is_healthy`], node eligibility not included), else 503,
/// and upstream's tab-indented body
/// `{"service":{"namespace":…,"name":…},"localEndpoints":n,"serviceProxyHealthy":…}`.
/// `n` is the number of unique IPs of the service's local ready endpoints
/// (terminating ones excluded), summed over the IP families.
///
/// Listeners follow the synced views ([`SyncObserver::synced`]): opened for
/// new services, closed for removed ones or when the port changes. Built
/// with [`for_node_port_addresses`](Self::for_node_port_addresses), the
/// addresses follow too: the node's primary IPs come from each synced
/// view's node, the host's addresses are listed at each sync and, with
/// [`watch_host_addresses`](Self::watch_host_addresses), whenever the
/// kernel reports an address change; a listener is opened on an address
/// that comes and closed on one that goes, without touching the others.
///
/// A failed bind is logged and counted ([`bind_failures`](Self::bind_failures)),
/// never fatal, and retried at the next sync; the service's other
/// addresses serve meanwhile. One server serves both families (upstream
/// runs one per family proxier, which collide on a dual-stack wildcard
/// address).
///
/// Listeners are spawned on the Tokio runtime the observer is called from.
pub struct ServiceHealthServer {
    health: Arc<ProxyHealth>,
    selection: Selection,
    state: Arc<Mutex<ServiceState>>,
}

impl fmt::Debug for ServiceHealthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ServiceHealthServer");
        match &self.selection {
            Selection::Fixed(addresses) => out.field("addresses", addresses),
            Selection::NodePortAddresses { npa, .. } => out.field("node_port_addresses", npa),
        };
        out.finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<ServiceState>) -> MutexGuard<'_, ServiceState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ServiceHealthServer {
    /// A server reporting `health` and listening on `addresses`, always.
    pub fn new(health: Arc<ProxyHealth>, addresses: HealthCheckAddresses) -> Self {
        ServiceHealthServer {
            health,
            selection: Selection::Fixed(addresses),
            state: Arc::new(Mutex::new(ServiceState::default())),
        }
    }

    /// A server reporting `health` and listening where `npa` selects
    /// ([`HealthCheckAddresses::from_node_port_addresses`]), re-resolved at
    /// every sync from the synced view's node and the host's addresses as
    /// `host` lists them. When `host` fails, the last good list is used;
    /// with none, every address (upstream's fallback).
    pub fn for_node_port_addresses(
        health: Arc<ProxyHealth>,
        npa: NodePortAddresses,
        host: HostAddressLister,
    ) -> Self {
        ServiceHealthServer {
            health,
            selection: Selection::NodePortAddresses { npa, host },
            state: Arc::new(Mutex::new(ServiceState::default())),
        }
    }

    /// The services with open listeners and their ports, sorted.
    pub fn services(&self) -> Vec<(ServiceKey, u16)> {
        let state = lock(&self.state);
        let mut out: Vec<_> = state
            .instances
            .iter()
            .map(|(k, i)| (k.clone(), i.port))
            .collect();
        out.sort();
        out
    }

    /// Where the listeners listen, as last resolved (`None` before the
    /// first sync).
    pub fn addresses(&self) -> Option<HealthCheckAddresses> {
        lock(&self.state).addresses.clone()
    }

    /// How many times opening the listeners of `key` failed.
    pub fn bind_failures(&self, key: &ServiceKey) -> u64 {
        lock(&self.state)
            .bind_failures
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Takes the health-check ports and local endpoint counts of `view`
    /// (one family) and its node, and opens or closes listeners to match.
    pub fn sync_view(&self, view: &NodeView) {
        let mut services = BTreeMap::new();
        for (name, port) in view.iter() {
            let Some(hc_port) = port.port.health_check_node_port else {
                continue;
            };
            services
                .entry(name.service.clone())
                .or_insert_with(|| (hc_port, view.local_ready_endpoints(&name.service)));
        }
        let host = self.list_host();
        let mut state = lock(&self.state);
        state.wanted.insert(view.family(), services);
        state.node = Some(view.node().clone());
        if host.is_some() {
            state.host = host;
        }
        self.reconcile(&mut state);
    }

    /// Lists the host's addresses again and rebinds to match (called on
    /// the kernel's address notifications). Also retries the binds that
    /// failed: an IPv6 address cannot be bound until its duplicate address
    /// detection is done, which the kernel notifies with the same address.
    pub fn refresh_host_addresses(&self) {
        let Some(host) = self.list_host() else {
            return;
        };
        let mut state = lock(&self.state);
        state.host = Some(host);
        if state.node.is_some() {
            self.reconcile(&mut state);
        }
    }

    /// Spawns, on the current Tokio runtime, a task that calls
    /// [`refresh_host_addresses`](Self::refresh_host_addresses) whenever the
    /// kernel reports an address added or removed (rtnetlink), so that
    /// listeners follow the host's addresses between syncs. `None` when
    /// the addresses do not depend on the host's (fixed, or every
    /// address), or outside a runtime. The task ends with the server. A
    /// watch that cannot start or fails is logged; the addresses are still
    /// listed at every sync.
    pub fn watch_host_addresses(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let Selection::NodePortAddresses { npa, .. } = &self.selection else {
            return None;
        };
        if npa.matches_all() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let server = Arc::downgrade(self);
        Some(runtime.spawn(async move {
            let watched = super::address_watch::watch_address_changes(|| {
                let Some(server) = server.upgrade() else {
                    return false;
                };
                server.refresh_host_addresses();
                true
            })
            .await;
            if let Err(error) = watched {
                tracing::warn!(%error, "cannot watch the host's addresses; health check node ports follow them at each sync only");
            }
        }))
    }

    /// The host's addresses when the selection uses them; `None` when it
    /// does not or listing failed (logged).
    fn list_host(&self) -> Option<Vec<IpAddr>> {
        let Selection::NodePortAddresses { npa, host } = &self.selection else {
            return None;
        };
        if npa.matches_all() {
            return None;
        }
        match host() {
            Ok(mut ips) => {
                ips.sort_unstable();
                ips.dedup();
                Some(ips)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list the host's addresses for the health check node ports");
                None
            }
        }
    }

    /// The addresses to listen on now.
    fn resolve(&self, state: &ServiceState) -> HealthCheckAddresses {
        match &self.selection {
            Selection::Fixed(addresses) => addresses.clone(),
            Selection::NodePortAddresses { npa, .. } => match &state.host {
                _ if npa.matches_all() => HealthCheckAddresses::All,
                None => HealthCheckAddresses::All,
                Some(host) => {
                    let unknown = NodeInfo::default();
                    let node = state.node.as_deref().unwrap_or(&unknown);
                    HealthCheckAddresses::from_node_port_addresses(npa, host, node)
                }
            },
        }
    }

    fn reconcile(&self, state: &mut ServiceState) {
        let addresses = self.resolve(state);
        if state.addresses.as_ref() != Some(&addresses) {
            match &addresses {
                HealthCheckAddresses::Ips(ips) if ips.is_empty() => {
                    tracing::warn!(
                        "nodePortAddresses selects no address of this host: health check node ports are not served"
                    )
                }
                _ => tracing::info!(?addresses, "health check node ports listen here"),
            }
            state.addresses = Some(addresses.clone());
        }
        let targets = addresses.targets();
        let desired = state.desired();
        state.instances.retain(|key, instance| {
            let keep = desired.get(key) == Some(&instance.port);
            if !keep {
                tracing::info!(service = %key, port = instance.port, "closing health check node port");
            }
            keep
        });
        let ServiceState {
            instances,
            bind_failures,
            ..
        } = state;
        for (key, port) in desired {
            let instance = instances.entry(key.clone()).or_insert_with(|| Instance {
                port,
                listeners: BTreeMap::new(),
            });
            instance.listeners.retain(|ip, _| {
                let keep = targets.contains(ip);
                if !keep {
                    tracing::info!(service = %key, port, address = %ip, "closing health check node port on a deselected address");
                }
                keep
            });
            let mut opened = Vec::new();
            let mut failed = false;
            for ip in &targets {
                if instance.listeners.contains_key(ip) {
                    continue;
                }
                match self.open(&key, *ip, port) {
                    Ok(listener) => {
                        instance.listeners.insert(*ip, listener);
                        opened.push(*ip);
                    }
                    Err(error) => {
                        tracing::error!(service = %key, port, address = %ip, %error, "failed to start service health check");
                        failed = true;
                    }
                }
            }
            if !opened.is_empty() {
                tracing::info!(service = %key, port, addresses = ?opened, "opened health check node port");
            }
            if failed {
                *bind_failures.entry(key.clone()).or_default() += 1;
            }
            if instance.listeners.is_empty() {
                instances.remove(&key);
            }
        }
    }

    /// Binds `ip`:`port` and spawns its server.
    fn open(&self, key: &ServiceKey, ip: IpAddr, port: u16) -> std::io::Result<Listener> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let listener = bind(ip, port)?;
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let router = self.router(key.clone());
        let service = key.clone();
        Ok(Listener(runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%service, %error, "health check node port server stopped");
            }
        })))
    }

    fn router(&self, service: ServiceKey) -> Router {
        let handler = HealthCheckHandler {
            service,
            health: self.health.clone(),
            state: self.state.clone(),
        };
        Router::new()
            .fallback(|State(h): State<Arc<HealthCheckHandler>>| async move { h.answer() })
            .with_state(Arc::new(handler))
    }
}

/// A non-blocking listener on `ip`:`port`; `[::]` falls back to `0.0.0.0`
/// when IPv6 is off.
fn bind(ip: IpAddr, port: u16) -> std::io::Result<std::net::TcpListener> {
    let bind_one = |ip: IpAddr| -> std::io::Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    match bind_one(ip) {
        Err(_) if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            bind_one(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        }
        result => result,
    }
}

/// Answers the health-check requests of one service.
struct HealthCheckHandler {
    service: ServiceKey,
    health: Arc<ProxyHealth>,
    state: Arc<Mutex<ServiceState>>,
}

impl HealthCheckHandler {
    fn answer(&self) -> Response {
        let count = lock(&self.state).endpoints(&self.service);
        let healthy = self.health.is_healthy();
        let code = if count != 0 && healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static(NOSNIFF.0),
                    HeaderValue::from_static(NOSNIFF.1),
                ),
                (
                    HeaderName::from_static(ENDPOINT_WEIGHT_HEADER),
                    HeaderValue::from(count),
                ),
            ],
            health_check_body(&self.service, count, healthy),
        )
            .into_response()
    }
}

/// Upstream's body, tab-indented exactly as its dedented template.
pub fn health_check_body(service: &ServiceKey, local_endpoints: u32, healthy: bool) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        quote(&service.namespace),
        quote(&service.name),
    )
}

impl SyncObserver for ServiceHealthServer {
    fn synced(&self, report: &SyncReport<'_>) {
        self.sync_view(report.view);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addresses(list: &[&str], local: &[IpAddr], node: &NodeInfo) -> HealthCheckAddresses {
        let npa = NodePortAddresses::parse(list).unwrap();
        HealthCheckAddresses::from_node_port_addresses(&npa, local, node)
    }

    fn ips(list: &[&str]) -> HealthCheckAddresses {
        HealthCheckAddresses::Ips(list.iter().map(|s| ip(s)).collect())
    }

    #[test]
    fn addresses_follow_node_port_addresses() {
        let node = NodeInfo {
            addresses: vec![ip("192.168.0.2"), ip("2001:db8::1"), ip("192.168.1.2")],
            ..NodeInfo::named("n")
        };
        let local = [
            ip("127.0.0.1"),
            ip("::1"),
            ip("192.168.0.2"),
            ip("192.168.1.2"),
            ip("10.0.0.1"),
            ip("2001:db8::1"),
            ip("fe80::1"),
        ];

        assert_eq!(addresses(&[], &local, &node), HealthCheckAddresses::All);
        assert_eq!(
            addresses(&["all"], &local, &node),
            HealthCheckAddresses::All
        );
        assert_eq!(
            addresses(&["192.168.0.0/16", "2001:db8::/64"], &local, &node),
            ips(&["192.168.0.2", "192.168.1.2", "2001:db8::1"])
        );
        // `primary`: one IP per family, the node's primary ones.
        assert_eq!(
            addresses(&["primary"], &local, &node),
            ips(&["192.168.0.2", "2001:db8::1"])
        );
        assert_eq!(
            addresses(&["primary", "10.0.0.0/8"], &local, &node),
            ips(&["10.0.0.1", "192.168.0.2", "2001:db8::1"])
        );
        // `localhost`: the host's loopback addresses.
        assert_eq!(
            addresses(&["localhost"], &local, &node),
            ips(&["127.0.0.1", "::1"])
        );
        // A list of one family matches all of the other (upstream's
        // per-family rule): IPv4 on 0.0.0.0, IPv6 on each address ([::]
        // would take IPv4 too); link-local addresses need an interface.
        assert_eq!(
            addresses(&["10.0.0.0/8"], &local, &node),
            ips(&["10.0.0.1", "::1", "2001:db8::1"])
        );
        assert_eq!(
            addresses(&["2001:db8::/32"], &local, &node),
            ips(&["0.0.0.0", "2001:db8::1"])
        );
    }

    #[test]
    fn primary_is_served_only_where_the_host_has_it() {
        let local = [ip("127.0.0.1"), ip("192.168.0.2")];
        let elsewhere = NodeInfo {
            addresses: vec![ip("203.0.113.9")],
            ..NodeInfo::named("n")
        };
        assert_eq!(addresses(&["primary"], &local, &elsewhere), ips(&[]));
        // Upstream leaves a loopback node IP out of `primary`.
        let loopback = NodeInfo {
            addresses: vec![ip("127.0.0.1")],
            ..NodeInfo::named("n")
        };
        assert_eq!(addresses(&["primary"], &local, &loopback), ips(&[]));
        // No node IP known: nothing (the node ports are not served either).
        assert_eq!(
            addresses(&["primary"], &local, &NodeInfo::named("n")),
            ips(&[])
        );
    }

    #[test]
    fn body_is_upstreams_dedented_template() {
        let body = health_check_body(&ServiceKey::new("ns", "svc"), 3, false);
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"svc\"\n\t},\n\t\"localEndpoints\": 3,\n\t\"serviceProxyHealthy\": false\n}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["localEndpoints"], 3);
    }
}
