//! [`ListenerTable`]: the backend's in-process state as data, the listener
//! table the metrics server publishes (`/proxyListeners`) and `kube-proxy
//! trace` / `diff` read: every listener with the service port and traffic
//! class it serves, the redirect rules' VIPs and their listeners, and each
//! service port's balancer (targets, endpoints, affinity).
//!
//! It round-trips through JSON, so a saved copy traces like the live one
//! ([`ListenerTable::trace`], in [`crate::trace`]).

use std::net::{IpAddr, SocketAddr};

use proxy_core::{Protocol, ServicePortView, Target};
use serde::{Deserialize, Serialize};

use crate::backend::UserspaceBackend;
use crate::plan::TrafficClass;

/// The listener table of one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerTable {
    /// `IPv4` or `IPv6`.
    pub family: String,
    /// The host's addresses as of the last full sync (a wildcard listener
    /// receives connections to these).
    pub host_addresses: Vec<IpAddr>,
    /// Whether redirect rules capture VIP traffic.
    pub redirecting: bool,
    /// Listeners on node ports (and, without redirect rules, on VIPs
    /// assigned to the host).
    pub listeners: Vec<TableListener>,
    /// Listeners that could not be opened.
    pub failures: Vec<TableFailure>,
    /// The VIPs the redirect rules handle (empty without redirect rules).
    #[serde(default)]
    pub redirects: Vec<TableRedirect>,
    /// The listeners the redirect rules send VIP traffic to.
    #[serde(default)]
    pub redirect_listeners: Vec<TableRedirectListener>,
    /// Each service port's balancer.
    pub balancers: Vec<TableBalancer>,
}

/// Which of a service port's targets a listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// ClusterIP traffic.
    Internal,
    /// Node port, external IP and load-balancer traffic.
    External,
}

impl From<TrafficClass> for Class {
    fn from(class: TrafficClass) -> Self {
        match class {
            TrafficClass::Internal => Class::Internal,
            TrafficClass::External => Class::External,
        }
    }
}

impl Class {
    /// `internal` or `external`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Internal => "internal",
            Class::External => "external",
        }
    }
}

/// What a balancer does with new traffic of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableTarget {
    /// The cluster endpoints.
    Cluster,
    /// The node-local endpoints.
    Local,
    /// Held unanswered (policy `Local`, no local endpoint).
    Drop,
    /// Refused (no endpoint anywhere).
    Reject,
}

impl From<Target> for TableTarget {
    fn from(target: Target) -> Self {
        match target {
            Target::Cluster => TableTarget::Cluster,
            Target::Local => TableTarget::Local,
            Target::Drop => TableTarget::Drop,
            Target::Reject => TableTarget::Reject,
        }
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableListener {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address bound (the unspecified address: every local address).
    pub address: SocketAddr,
    /// `namespace/name:port`.
    pub service_port: String,
    /// The target it uses.
    pub class: Class,
    /// `serving`, `refusing` (a UDP port of a service without endpoints:
    /// nothing bound, the kernel answers port unreachable) or `planned`
    /// (a dry run).
    pub state: String,
}

/// A listener that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFailure {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address wanted.
    pub address: SocketAddr,
    /// `namespace/name:port`.
    pub service_port: String,
    /// The target it would use.
    pub class: Class,
    /// Why it is not open.
    pub reason: String,
}

/// One VIP of the redirect rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRedirect {
    /// ClusterIP, external IP or load-balancer IP.
    pub ip: IpAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The service port number.
    pub port: u16,
    /// `namespace/name:port`.
    pub service_port: String,
    /// Its redirect listener's class.
    pub class: Class,
    /// Rejected by the rules (the service has no endpoints).
    pub reject: bool,
}

/// A listener the redirect rules send VIP traffic to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRedirectListener {
    /// `namespace/name:port`.
    pub service_port: String,
    /// The class it serves.
    pub class: Class,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port the kernel gave it; `None` when nothing is bound (a dry
    /// run).
    pub port: Option<u16>,
    /// `serving` or `planned`.
    pub state: String,
}

/// One service port's balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableBalancer {
    /// `namespace/name:port`.
    pub service_port: String,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// Target of ClusterIP traffic.
    pub internal: TableTarget,
    /// Target of node port, external IP and load-balancer traffic.
    pub external: TableTarget,
    /// Endpoints under `Cluster`.
    pub cluster: Vec<SocketAddr>,
    /// Endpoints under `Local`.
    pub local: Vec<SocketAddr>,
    /// ClientIP session affinity timeout, if any.
    pub affinity_seconds: Option<u32>,
}

impl TableBalancer {
    fn of(service_port: String, view: &ServicePortView) -> Self {
        let addrs = |list: &[proxy_core::Endpoint]| list.iter().map(|e| e.socket_addr()).collect();
        TableBalancer {
            service_port,
            protocol: view.port.protocol,
            internal: view.internal.into(),
            external: view.external.into(),
            cluster: addrs(&view.cluster),
            local: addrs(&view.local),
            affinity_seconds: view.port.session_affinity.map(|a| a.timeout_seconds),
        }
    }

    /// The target of `class`.
    pub fn target(&self, class: Class) -> TableTarget {
        match class {
            Class::Internal => self.internal,
            Class::External => self.external,
        }
    }

    /// The endpoints of `target` (none for drop and reject).
    pub fn endpoints(&self, target: TableTarget) -> &[SocketAddr] {
        match target {
            TableTarget::Cluster => &self.cluster,
            TableTarget::Local => &self.local,
            TableTarget::Drop | TableTarget::Reject => &[],
        }
    }
}

impl ListenerTable {
    /// The balancer of `service_port`.
    pub fn balancer(&self, service_port: &str) -> Option<&TableBalancer> {
        self.balancers
            .iter()
            .find(|b| b.service_port == service_port)
    }

    /// The table as JSON.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and addresses: encoding cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl UserspaceBackend {
    /// The listener table as of now.
    pub fn table(&self) -> ListenerTable {
        let mut host_addresses: Vec<IpAddr> =
            self.host_addresses().of_family(self.family()).collect();
        host_addresses.sort_unstable();
        let listeners = self
            .listeners()
            .map(|(spec, state)| TableListener {
                protocol: spec.key.protocol,
                address: spec.key.addr,
                service_port: spec.port.to_string(),
                class: spec.class.into(),
                state: state.to_string(),
            })
            .collect();
        let failures = self
            .failures()
            .map(|f| TableFailure {
                protocol: f.spec.key.protocol,
                address: f.spec.key.addr,
                service_port: f.spec.port.to_string(),
                class: f.spec.class.into(),
                reason: f.reason.clone(),
            })
            .collect();
        let (redirects, redirect_listeners) = match self.redirect_state() {
            None => (Vec::new(), Vec::new()),
            Some(redirect) => (
                redirect
                    .owners()
                    .into_iter()
                    .map(|(vip, spec)| TableRedirect {
                        ip: vip.ip,
                        protocol: vip.protocol,
                        port: vip.port,
                        service_port: spec.port.to_string(),
                        class: spec.class.into(),
                        reject: spec.reject,
                    })
                    .collect(),
                redirect
                    .listener_states()
                    .map(|((name, class), spec, state, port)| TableRedirectListener {
                        service_port: name.to_string(),
                        class: (*class).into(),
                        protocol: spec.key.protocol,
                        port,
                        state: state.to_string(),
                    })
                    .collect(),
            ),
        };
        let balancers = self
            .balancers()
            .map(|(name, b)| TableBalancer::of(name.to_string(), &b.view()))
            .collect();
        ListenerTable {
            family: self.family().as_str().to_string(),
            host_addresses,
            redirecting: self.redirecting(),
            listeners,
            failures,
            redirects,
            redirect_listeners,
            balancers,
        }
    }
}
