use std::sync::Arc;

use crate::model::{Endpoint, ServicePort};

use super::categorize::{Split, split, split_owned};

/// Where traffic of one class (internal or external) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// To [`ServicePortView::cluster`] endpoints.
    Cluster,
    /// To [`ServicePortView::local`] endpoints.
    Local,
    /// Dropped: the policy is `Local` and this node has no usable endpoint,
    /// but endpoints exist elsewhere. Upstream counts these in
    /// `sync_proxy_rules_no_local_endpoints_total`.
    Drop,
    /// Rejected (ICMP port unreachable / TCP reset): the service has no
    /// usable endpoint anywhere.
    Reject,
}

/// The node-local decision for one service port.
///
/// For `externalTrafficPolicy: Local`, [`ServicePortView::external`] is
/// `Local` or `Drop`, and upstream's short-circuits still apply on top of it:
/// traffic from local pods (per the local-traffic detector) and from the node
/// itself goes to the cluster endpoints, the latter masqueraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortView {
    /// The port: VIPs, ports, node port, policies, affinity, source ranges.
    pub port: Arc<ServicePort>,
    /// Endpoints usable under `Cluster` policy (topology hints applied).
    pub cluster: Vec<Endpoint>,
    /// Endpoints usable under `Local` policy.
    pub local: Vec<Endpoint>,
    /// Target of ClusterIP traffic.
    pub internal: Target,
    /// Target of NodePort, external IP and load-balancer traffic. Meaningful
    /// only when [`ServicePort::externally_accessible`].
    pub external: Target,
    /// Unique IPs of local ready endpoints: the health-check node port answers
    /// 200 only when this is non-zero.
    pub local_ready: u32,
    /// Serving endpoints in neither list (left out by topology hints or a
    /// traffic policy, or terminating while ready ones exist). Traffic is
    /// never sent to them, but the stale-UDP conntrack cleanup keeps flows
    /// to them, as upstream does. Usually empty.
    pub other_serving: Vec<std::net::SocketAddr>,
}

impl ServicePortView {
    /// Decides `port` given all its endpoints (sorted, deduplicated) on node
    /// `node_name` in `zone`, as upstream's proxiers do after
    /// `CategorizeEndpoints`:
    ///
    /// - no ready or serving-terminating endpoint anywhere: `Reject` for both
    ///   traffic classes;
    /// - else a `Local` policy with no usable local endpoint: `Drop`;
    /// - else `Local` or `Cluster` per the class's traffic policy.
    pub fn decide(
        port: Arc<ServicePort>,
        endpoints: &[Endpoint],
        node_name: &str,
        zone: &str,
    ) -> Self {
        let local_ready = unique_local_ready_ips(endpoints);
        let cat = split(endpoints, &port, node_name, zone);
        Self::from_split(port, cat, local_ready)
    }

    /// [`ServicePortView::decide`] taking the endpoints by value, which
    /// saves copying them in the common case.
    pub(crate) fn decide_owned(
        port: Arc<ServicePort>,
        endpoints: Vec<Endpoint>,
        node_name: &str,
        zone: &str,
    ) -> Self {
        let local_ready = unique_local_ready_ips(&endpoints);
        let cat = split_owned(endpoints, &port, node_name, zone);
        Self::from_split(port, cat, local_ready)
    }

    fn from_split(port: Arc<ServicePort>, cat: Split, local_ready: u32) -> Self {
        let target = |local_policy: bool| {
            if !cat.has_any {
                Target::Reject
            } else if local_policy {
                if cat.local.is_empty() {
                    Target::Drop
                } else {
                    Target::Local
                }
            } else {
                Target::Cluster
            }
        };
        let internal = target(port.internal_policy_local());
        let external = target(port.external_policy_local());
        ServicePortView {
            port,
            cluster: cat.cluster,
            local: cat.local,
            other_serving: cat.other_serving,
            internal,
            external,
            local_ready,
        }
    }

    /// The endpoints `target` sends to (empty for `Drop` and `Reject`).
    pub fn endpoints_for(&self, target: Target) -> &[Endpoint] {
        match target {
            Target::Cluster => &self.cluster,
            Target::Local => &self.local,
            Target::Drop | Target::Reject => &[],
        }
    }

    /// Every endpoint this node may send traffic of this port to, cluster
    /// ones first, without duplicates.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.cluster
            .iter()
            .chain(self.local.iter().filter(|e| !self.cluster.contains(e)))
    }
}

/// Number of unique IPs among the local ready endpoints of `endpoints`.
pub(crate) fn unique_local_ready_ips<'a>(endpoints: impl IntoIterator<Item = &'a Endpoint>) -> u32 {
    let mut ips: Vec<std::net::IpAddr> = endpoints
        .into_iter()
        .filter(|e| e.is_local && e.ready)
        .map(|e| e.ip)
        .collect();
    if ips.len() < 2 {
        return ips.len() as u32;
    }
    ips.sort_unstable();
    ips.dedup();
    u32::try_from(ips.len()).unwrap_or(u32::MAX)
}
