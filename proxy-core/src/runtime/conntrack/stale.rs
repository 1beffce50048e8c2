//! [`StaleFlowFilter`]: which UDP conntrack entries no longer lead to a
//! serving endpoint (upstream's `CleanStaleEntries`, minus the table access).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use crate::model::Protocol;
use crate::view::NodeView;

use super::entry::{ConntrackEntry, IPPROTO_UDP};

/// The UDP service addresses of one family's view, each with the set of
/// serving endpoints (`ip:port`) a flow to it may be DNATed to.
///
/// Keys, for every UDP service port with at least one serving endpoint:
/// `clusterIP:port`, every `loadBalancerIP:port`, every `externalIP:port`
/// and `*:nodePort`. An entry is stale when it is UDP, its original
/// destination matches a key and its reply source is not one of that key's
/// endpoints. Traffic policies, topology and terminating status are ignored
/// on purpose, as upstream does: a change of policy must not cut flows that
/// still reach a serving endpoint. Service ports with no serving endpoint
/// are skipped (their traffic is rejected; entries go when endpoints come
/// back).
///
/// The endpoints are every serving endpoint of the port: the cluster and
/// local lists plus [`ServicePortView::other_serving`](crate::ServicePortView::other_serving).
/// One deliberate difference from upstream: keys and endpoints are
/// `ip:port`, not IPs alone (upstream's per-IP map lets the last UDP port of
/// a multi-port service decide for all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleFlowFilter {
    by_address: HashMap<SocketAddr, HashSet<SocketAddr>>,
    by_node_port: HashMap<u16, HashSet<SocketAddr>>,
}

impl StaleFlowFilter {
    /// The keys of `view`.
    pub fn from_view(view: &NodeView) -> Self {
        let mut filter = StaleFlowFilter::default();
        for (_, port) in view.iter() {
            let sp = &port.port;
            if sp.protocol != Protocol::Udp {
                continue;
            }
            let serving: HashSet<SocketAddr> = port
                .all_endpoints()
                .filter(|e| e.serving)
                .map(|e| e.socket_addr())
                .chain(port.other_serving.iter().copied())
                .collect();
            if serving.is_empty() {
                continue;
            }
            let vips = std::iter::once(sp.cluster_ip)
                .chain(sp.load_balancer_ips.iter().copied())
                .chain(sp.external_ips.iter().copied());
            for ip in vips {
                filter
                    .by_address
                    .entry(SocketAddr::new(ip, sp.port))
                    .or_default()
                    .extend(serving.iter().copied());
            }
            if let Some(node_port) = sp.node_port {
                filter
                    .by_node_port
                    .entry(node_port)
                    .or_default()
                    .extend(serving.iter().copied());
            }
        }
        filter
    }

    /// Whether no entry can be stale (no UDP service port with endpoints).
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty() && self.by_node_port.is_empty()
    }

    /// Whether `entry` is a UDP flow to a service address that no longer
    /// leads to one of its serving endpoints.
    pub fn is_stale(&self, entry: &ConntrackEntry) -> bool {
        if entry.protocol != IPPROTO_UDP {
            return false;
        }
        let dst = entry.original.dst;
        let answered_by = entry.reply.src;
        let stale_for = |endpoints: Option<&HashSet<SocketAddr>>| {
            endpoints.is_some_and(|set| !set.contains(&answered_by))
        };
        stale_for(self.by_address.get(&dst)) || stale_for(self.by_node_port.get(&dst.port()))
    }

    /// The stale entries of `entries`, sorted and without duplicates.
    pub fn stale_entries<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a ConntrackEntry>,
    ) -> Vec<ConntrackEntry> {
        let stale: BTreeSet<ConntrackEntry> = entries
            .into_iter()
            .filter(|e| self.is_stale(e))
            .copied()
            .collect();
        stale.into_iter().collect()
    }
}
