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
use ipnet::IpNet;
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
    /// These node IPs only (`nodePortAddresses` is not empty).
    Ips(Vec<IpAddr>),
}

impl HealthCheckAddresses {
    /// Upstream's choice: every address when `nodePortAddresses` matches all
    /// local IPs, otherwise the node IPs it selects. `local_ips` are the
    /// host's addresses (the caller enumerates them); `primary` in the list
    /// adds the node's primary IPs from `node`.
    pub fn from_node_port_addresses(
        npa: &NodePortAddresses,
        local_ips: &[IpAddr],
        node: &NodeInfo,
    ) -> Self {
        if npa.matches_all() {
            return HealthCheckAddresses::All;
        }
        let mut ips: Vec<IpAddr> = local_ips
            .iter()
            .copied()
            .filter(|ip| npa.cidrs.iter().any(|net: &IpNet| net.contains(ip)))
            .collect();
        if npa.primary {
            ips.extend(IpFamily::ALL.into_iter().filter_map(|f| node.primary_ip(f)));
        }
        ips.sort_unstable();
        ips.dedup();
        HealthCheckAddresses::Ips(ips)
    }
}

/// One service's listeners.
#[derive(Debug)]
struct Instance {
    port: u16,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

#[derive(Debug, Default)]
struct ServiceState {
    /// Per family, what its last synced view wants: service → (port, local ready IPs).
    wanted: BTreeMap<IpFamily, BTreeMap<ServiceKey, (u16, u32)>>,
    /// Open listeners.
    instances: HashMap<ServiceKey, Instance>,
    /// Failed binds per service, cumulative.
    bind_failures: HashMap<ServiceKey, u64>,
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
/// new services, closed for removed ones or when the port changes. A failed
/// bind is logged and counted ([`bind_failures`](Self::bind_failures)),
/// never fatal, and retried at the next sync. One server serves both
/// families (upstream runs one per family proxier, which collide on a
/// dual-stack wildcard address).
///
/// Listeners are spawned on the Tokio runtime the observer is called from.
pub struct ServiceHealthServer {
    health: Arc<ProxyHealth>,
    addresses: HealthCheckAddresses,
    state: Arc<Mutex<ServiceState>>,
}

impl fmt::Debug for ServiceHealthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHealthServer")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<ServiceState>) -> MutexGuard<'_, ServiceState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ServiceHealthServer {
    /// A server reporting `health` and listening on `addresses`.
    pub fn new(health: Arc<ProxyHealth>, addresses: HealthCheckAddresses) -> Self {
        ServiceHealthServer {
            health,
            addresses,
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

    /// How many times opening the listeners of `key` failed.
    pub fn bind_failures(&self, key: &ServiceKey) -> u64 {
        lock(&self.state)
            .bind_failures
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Takes the health-check ports and local endpoint counts of `view`
    /// (one family) and opens or closes listeners to match.
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
        let mut state = lock(&self.state);
        state.wanted.insert(view.family(), services);
        self.reconcile(&mut state);
    }

    fn reconcile(&self, state: &mut ServiceState) {
        let desired = state.desired();
        state.instances.retain(|key, instance| {
            let keep = desired.get(key) == Some(&instance.port);
            if !keep {
                tracing::info!(service = %key, port = instance.port, "closing health check node port");
            }
            keep
        });
        for (key, port) in desired {
            if state.instances.contains_key(&key) {
                continue;
            }
            match self.open(&key, port) {
                Ok(instance) => {
                    tracing::info!(service = %key, port, "opened health check node port");
                    state.instances.insert(key, instance);
                }
                Err(error) => {
                    tracing::error!(service = %key, port, %error, "failed to start service health check");
                    *state.bind_failures.entry(key).or_default() += 1;
                }
            }
        }
    }

    /// Binds every address of `port` and spawns their servers; closes what
    /// was opened when one bind fails.
    fn open(&self, key: &ServiceKey, port: u16) -> std::io::Result<Instance> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let mut instance = Instance {
            port,
            servers: Vec::new(),
        };
        for listener in self.bind_all(port)? {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let router = self.router(key.clone());
            let service = key.clone();
            instance.servers.push(runtime.spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%service, %error, "health check node port server stopped");
                }
            }));
        }
        Ok(instance)
    }

    fn bind_all(&self, port: u16) -> std::io::Result<Vec<std::net::TcpListener>> {
        let bind = |ip: IpAddr| -> std::io::Result<std::net::TcpListener> {
            let listener = std::net::TcpListener::bind(SocketAddr::new(ip, port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        match &self.addresses {
            HealthCheckAddresses::All => Ok(vec![
                bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
                    .or_else(|_| bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))?,
            ]),
            HealthCheckAddresses::Ips(ips) => ips.iter().map(|ip| bind(*ip)).collect(),
        }
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

    #[test]
    fn addresses_follow_node_port_addresses() {
        let node = NodeInfo {
            addresses: vec![ip("192.168.0.2"), ip("2001:db8::1")],
            ..NodeInfo::named("n")
        };
        let local = [
            ip("192.168.0.2"),
            ip("192.168.1.2"),
            ip("10.0.0.1"),
            ip("2001:db8::1"),
        ];

        let all = NodePortAddresses::parse::<&str>(&[]).unwrap();
        assert_eq!(
            HealthCheckAddresses::from_node_port_addresses(&all, &local, &node),
            HealthCheckAddresses::All
        );

        let cidrs = NodePortAddresses::parse(&["192.168.0.0/16", "2001:db8::/64"]).unwrap();
        assert_eq!(
            HealthCheckAddresses::from_node_port_addresses(&cidrs, &local, &node),
            HealthCheckAddresses::Ips(vec![
                ip("192.168.0.2"),
                ip("192.168.1.2"),
                ip("2001:db8::1")
            ])
        );

        let primary = NodePortAddresses::parse(&["primary"]).unwrap();
        assert_eq!(
            HealthCheckAddresses::from_node_port_addresses(&primary, &local, &node),
            HealthCheckAddresses::Ips(vec![ip("192.168.0.2"), ip("2001:db8::1")])
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
