use std::net::IpAddr;

use ipnet::IpNet;

use super::{IpFamily, Protocol, ServicePortName};

/// A traffic policy (`internalTrafficPolicy` / `externalTrafficPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Use endpoints anywhere in the cluster (the default).
    #[default]
    Cluster,
    /// Use only endpoints on this node.
    Local,
}

/// `sessionAffinity: ClientIP`: requests from one client IP go to the same
/// endpoint for `timeout_seconds` after the last packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionAffinity {
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` (API default 10800).
    pub timeout_seconds: u32,
}

/// One port of one Service, as seen by one IP family's backend.
///
/// Everything a backend needs to program the port's virtual IPs: only the
/// addresses of [`ServicePort::family`] are present, already filtered and
/// validated as upstream does (`pkg/proxy/serviceport.go`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `namespace/name:port` plus protocol.
    pub name: ServicePortName,
    /// The IP family of every address below.
    pub family: IpFamily,
    /// The ClusterIP of this family.
    pub cluster_ip: IpAddr,
    /// The service port (`spec.ports[].port`).
    pub port: u16,
    /// The protocol (also in `name`).
    pub protocol: Protocol,
    /// The node port, when the service has one.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` of this family.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` of this family, without `ipMode: Proxy` entries.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` of this family; empty means allow all
    /// (a zero-length prefix also empties the list, as upstream).
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// ClientIP session affinity, if set.
    pub session_affinity: Option<SessionAffinity>,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort`; only set for `LoadBalancer` services with
    /// `externalTrafficPolicy: Local`.
    pub health_check_node_port: Option<u16>,
}

impl ServicePort {
    /// Whether traffic can reach this port from outside the cluster network:
    /// it has a node port, external IPs or load-balancer IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// Upstream's `UsesClusterEndpoints`: `!internalPolicyLocal || externallyAccessible`.
    pub fn uses_cluster_endpoints(&self) -> bool {
        self.internal_traffic_policy != TrafficPolicy::Local || self.externally_accessible()
    }

    /// Upstream's `UsesLocalEndpoints`:
    /// `internalPolicyLocal || (externalPolicyLocal && externallyAccessible)`.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_traffic_policy == TrafficPolicy::Local
            || (self.external_traffic_policy == TrafficPolicy::Local
                && self.externally_accessible())
    }

    /// Whether external traffic is restricted to local endpoints.
    pub fn external_policy_local(&self) -> bool {
        self.external_traffic_policy == TrafficPolicy::Local
    }

    /// Whether ClusterIP traffic is restricted to local endpoints.
    pub fn internal_policy_local(&self) -> bool {
        self.internal_traffic_policy == TrafficPolicy::Local
    }
}
