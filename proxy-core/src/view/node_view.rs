use std::sync::Arc;

use crate::model::{
    Endpoint, IpFamily, NodeInfo, Protocol, ServiceKey, ServicePort, ServicePortName,
};
use crate::topology::{ServiceEntry, ServiceTopology, Slice};

use super::port_map::PortMap;
use super::port_view::{ServicePortView, unique_local_ready_ips};

/// The node-local projection of a [`ServiceTopology`] for one IP family.
///
/// Backends receive it in [`Backend::sync`](crate::Backend::sync). Service
/// ports are kept sorted by name, so iterating gives a stable order.
/// A service port without a ClusterIP of this family is absent.
///
/// Cloning is cheap (the ports live in shared chunks), and so is changing
/// one service of a clone: the change tracker relies on both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    family: IpFamily,
    node: Arc<NodeInfo>,
    ports: PortMap,
}

impl NodeView {
    /// An empty view.
    pub fn empty(family: IpFamily, node: Arc<NodeInfo>) -> Self {
        NodeView {
            family,
            node,
            ports: PortMap::default(),
        }
    }

    /// Builds the view of every service in `topology`.
    pub fn build(topology: &ServiceTopology, node: Arc<NodeInfo>, family: IpFamily) -> Self {
        let mut views = Vec::new();
        let mut scratch = Vec::new();
        // Entries come sorted by service, and each service's views sorted
        // by port name: `views` ends up sorted.
        for entry in topology.entries() {
            service_views(entry, &node, family, &mut scratch, |v| views.push(v));
        }
        debug_assert!(views.windows(2).all(|w| w[0].port.name < w[1].port.name));
        NodeView {
            family,
            node,
            ports: PortMap::from_sorted(views),
        }
    }

    /// Recomputes the ports of one service (after it or its slices changed,
    /// or it was deleted).
    pub fn update_service(&mut self, topology: &ServiceTopology, key: &ServiceKey) {
        let mut fresh = Vec::new();
        if let Some(entry) = topology.entry(key) {
            service_views(entry, &self.node, self.family, &mut Vec::new(), |v| {
                fresh.push(v)
            });
        }
        let stale: Vec<ServicePortName> = self
            .service_ports(key)
            .filter(|(name, _)| !fresh.iter().any(|v| v.port.name == **name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            self.ports.remove(name);
        }
        for view in fresh {
            // Keep the shared chunk when nothing changed.
            if self.ports.get(&view.port.name) != Some(&view) {
                self.ports.insert(view);
            }
        }
    }

    /// The IP family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The node.
    pub fn node(&self) -> &Arc<NodeInfo> {
        &self.node
    }

    /// Every service port, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ServicePortName, &Arc<ServicePortView>)> {
        self.ports.iter().map(|v| (&v.port.name, v))
    }

    /// One service port.
    pub fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePortView>> {
        self.ports.get(name)
    }

    /// The ports of one service, sorted by name.
    pub fn service_ports<'a>(
        &'a self,
        key: &'a ServiceKey,
    ) -> impl Iterator<Item = (&'a ServicePortName, &'a Arc<ServicePortView>)> + 'a {
        let start = ServicePortName {
            service: key.clone(),
            port: String::new(),
            protocol: Protocol::Tcp,
        };
        self.ports
            .range_from(&start)
            .take_while(move |v| v.port.name.service == *key)
            .map(|v| (&v.port.name, v))
    }

    /// Upstream's per-service count for the health-check node port: the
    /// number of unique IPs of local ready endpoints over all ports of the
    /// service (of this family).
    ///
    /// A one-port service gives its port's exact [`ServicePortView::local_ready`].
    /// With several ports the IPs are collected from the ports' `cluster` and
    /// `local` lists, which hold every local ready endpoint whenever the port
    /// uses local endpoints, as every port with a health-check node port does.
    pub fn local_ready_endpoints(&self, key: &ServiceKey) -> u32 {
        let mut ports = self.service_ports(key);
        let Some((_, first)) = ports.next() else {
            return 0;
        };
        let Some((_, second)) = ports.next() else {
            return first.local_ready;
        };
        let mut endpoints: Vec<&Endpoint> = Vec::new();
        for view in [first, second].into_iter().chain(ports.map(|(_, v)| v)) {
            endpoints.extend(view.cluster.iter().chain(view.local.iter()));
        }
        unique_local_ready_ips(endpoints)
    }

    /// Number of service ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether the view has no service port.
    pub fn is_empty(&self) -> bool {
        self.ports.len() == 0
    }

    /// Total number of endpoints over all ports (cluster and local lists).
    pub fn endpoint_count(&self) -> usize {
        self.ports.iter().map(|p| p.all_endpoints().count()).sum()
    }

    /// A copy of this view in which each of `ports` is `other`'s version
    /// instead: the same port of `other`, or none when `other` has none.
    /// Every other port, the family and the node stay this view's.
    ///
    /// The runtime composes the views of failure isolation with it: the
    /// wanted view with some ports held back at the last programmed one's
    /// versions. Costs a clone (one pointer per chunk of ports) and one
    /// update per port named.
    pub fn with_ports_from<'a>(
        &self,
        other: &NodeView,
        ports: impl IntoIterator<Item = &'a ServicePortName>,
    ) -> NodeView {
        let mut view = self.clone();
        for name in ports {
            match other.get(name) {
                Some(port) => {
                    if view.ports.get(name) != Some(port) {
                        view.ports.insert(port.clone());
                    }
                }
                None => {
                    view.ports.remove(name);
                }
            }
        }
        view
    }
}

/// Decides every port of `family` of the service of `entry`, handing each
/// view to `out` in port name order.
fn service_views(
    entry: &ServiceEntry,
    node: &NodeInfo,
    family: IpFamily,
    scratch: &mut Vec<Endpoint>,
    mut out: impl FnMut(Arc<ServicePortView>),
) {
    let Some(service) = entry.service.as_ref() else {
        return;
    };
    let ports = service.ports(family);
    let mut order: Vec<&Arc<ServicePort>> = ports.iter().collect();
    if !ports.is_sorted_by(|a, b| a.name <= b.name) {
        order.sort_by(|a, b| a.name.cmp(&b.name));
    }
    for port in order {
        endpoints_of(port, entry.slices.values(), &node.name, scratch);
        let endpoints = std::mem::take(scratch);
        out(Arc::new(ServicePortView::decide_owned(
            port.clone(),
            endpoints,
            &node.name,
            node.zone(),
        )));
    }
}

/// Collects the endpoints of `port` from the slices of its service into
/// `out`, as upstream's `EndpointSliceCache`: slices of the port's family
/// with a port of the same name and protocol; deduplicated by `ip:port` (a
/// local copy wins); sorted by their string form `ip:port` (`[ip]:port` for
/// IPv6), which sets the order of load-balancing rules.
fn endpoints_of<'a>(
    port: &ServicePort,
    slices: impl Iterator<Item = &'a Arc<Slice>> + Clone,
    node_name: &str,
    out: &mut Vec<Endpoint>,
) {
    out.clear();
    // The slices of the port's family that carry the port, with its number.
    let matching = slices.filter(|s| s.family == port.family).filter_map(|s| {
        let sp = s
            .ports
            .iter()
            .find(|sp| sp.name == port.name.port && sp.protocol == port.protocol)?;
        Some((s, sp.port))
    });
    // The list usually becomes the view's own: size it exactly.
    out.reserve_exact(matching.clone().map(|(s, _)| s.endpoints.len()).sum());
    // Upstream: a node with no name has no local endpoints.
    let is_local = |name: Option<&str>| !node_name.is_empty() && name == Some(node_name);
    let mut matched_slices = 0;
    for (slice, target_port) in matching.clone() {
        matched_slices += 1;
        out.extend(slice.endpoints.iter().map(|ep| Endpoint {
            ip: ep.ip,
            port: target_port,
            ready: ep.ready,
            serving: ep.serving,
            terminating: ep.terminating,
            is_local: is_local(ep.node_name.as_deref()),
            node_name: ep.node_name.clone(),
            zone: ep.zone.clone(),
            hints: ep.hints.clone(),
        }));
    }
    // One slice is already in order (see `Slice::endpoints`); several need a sort.
    if matched_slices > 1 {
        let text: Vec<&str> = matching
            .flat_map(|(s, _)| s.endpoints.iter().map(|e| &*e.ip_text))
            .collect();
        let mut order: Vec<usize> = (0..out.len()).collect();
        order.sort_by(|&a, &b| {
            crate::topology::cmp_endpoint_strings(text[a], out[a].port, text[b], out[b].port)
        });
        let sorted: Vec<Endpoint> = order.iter().map(|&i| out[i].clone()).collect();
        *out = sorted;
    }
    // Duplicates are adjacent now; keep one, preferring a local copy.
    out.dedup_by(|later, kept| {
        if later.ip == kept.ip && later.port == kept.port {
            if later.is_local && !kept.is_local {
                std::mem::swap(later, kept);
            }
            true
        } else {
            false
        }
    });
}
