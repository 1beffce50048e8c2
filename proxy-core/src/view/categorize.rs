//! A faithful port of upstream's `CategorizeEndpoints` (`pkg/proxy/topology.go`).

use crate::model::{Endpoint, ServicePort};

/// Which endpoints a service port may use on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Endpoints for `Cluster` traffic policy: ready endpoints allowed by the
    /// topology hints, or, if none, every serving and terminating endpoint.
    /// Empty when the port does not use cluster endpoints.
    pub cluster: Vec<Endpoint>,
    /// Endpoints for `Local` traffic policy: local ready endpoints, or, if
    /// none, local serving and terminating ones. Empty when the port does not
    /// use local endpoints.
    pub local: Vec<Endpoint>,
    /// The union of `cluster` and `local`: every endpoint this node may send to.
    pub all_reachable: Vec<Endpoint>,
    /// Whether any ready, or serving and terminating, endpoint exists anywhere.
    pub has_any: bool,
}

/// The topology mode chosen from the hints of ready endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyMode {
    /// No filtering.
    None,
    /// Only endpoints hinted for this node.
    PreferSameNode,
    /// Only endpoints hinted for this node's zone.
    PreferSameZone,
}

/// Upstream's `topologyModeFromHints`: `PreferSameNode` when every ready
/// endpoint has node hints and one names this node; otherwise
/// `PreferSameZone` when every ready endpoint has zone hints and one names
/// this zone; otherwise no filtering.
pub fn topology_mode(endpoints: &[Endpoint], node_name: &str, zone: &str) -> TopologyMode {
    let mut has_for_node = false;
    let mut all_have_node_hints = true;
    let mut has_for_zone = false;
    let mut all_have_zone_hints = true;
    for ep in endpoints.iter().filter(|e| e.ready) {
        let nodes = ep.node_hints();
        if nodes.is_empty() {
            all_have_node_hints = false;
        } else if nodes.iter().any(|n| &**n == node_name) {
            has_for_node = true;
        }
        let zones = ep.zone_hints();
        if zones.is_empty() {
            all_have_zone_hints = false;
        } else if zones.iter().any(|z| &**z == zone) {
            has_for_zone = true;
        }
    }
    if all_have_node_hints && has_for_node {
        TopologyMode::PreferSameNode
    } else if all_have_zone_hints && has_for_zone {
        TopologyMode::PreferSameZone
    } else {
        TopologyMode::None
    }
}

fn available_for_topology(ep: &Endpoint, mode: TopologyMode, node_name: &str, zone: &str) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints().iter().any(|n| &**n == node_name),
        TopologyMode::PreferSameZone => ep.zone_hints().iter().any(|z| &**z == zone),
    }
}

fn filtered(endpoints: &[Endpoint], keep: impl Fn(&Endpoint) -> bool) -> Vec<Endpoint> {
    endpoints.iter().filter(|e| keep(e)).cloned().collect()
}

/// The Cluster and Local sets without their union: what
/// [`ServicePortView::decide`](super::ServicePortView::decide) needs.
pub(crate) struct Split {
    pub(crate) cluster: Vec<Endpoint>,
    pub(crate) local: Vec<Endpoint>,
    pub(crate) has_any: bool,
    /// `cluster` may miss some of `local` (topology filtering, or local
    /// serving-terminating endpoints): the union must be merged.
    needs_merge: bool,
    /// Serving endpoints in neither list.
    pub(crate) other_serving: Vec<std::net::SocketAddr>,
}

/// [`split`] taking the endpoints by value: when the port uses only cluster
/// endpoints, every endpoint is ready and no hint filters, the list is the
/// cluster set as it is, and is moved instead of copied (the common case).
pub(crate) fn split_owned(
    endpoints: Vec<Endpoint>,
    port: &ServicePort,
    node_name: &str,
    zone: &str,
) -> Split {
    if port.uses_cluster_endpoints()
        && !port.uses_local_endpoints()
        && endpoints.iter().all(|e| e.ready)
        && topology_mode(&endpoints, node_name, zone) == TopologyMode::None
    {
        return Split {
            has_any: !endpoints.is_empty(),
            cluster: endpoints,
            local: Vec::new(),
            needs_merge: false,
            other_serving: Vec::new(),
        };
    }
    split(&endpoints, port, node_name, zone)
}

/// [`split_lists`], plus the serving endpoints neither list selected.
pub(crate) fn split(
    endpoints: &[Endpoint],
    port: &ServicePort,
    node_name: &str,
    zone: &str,
) -> Split {
    let mut out = split_lists(endpoints, port, node_name, zone);
    // Both lists are ordered subsequences of `endpoints`: one walk finds the rest.
    let (mut c, mut l) = (0, 0);
    for e in endpoints {
        let in_cluster = out.cluster.get(c) == Some(e);
        let in_local = out.local.get(l) == Some(e);
        c += usize::from(in_cluster);
        l += usize::from(in_local);
        if e.serving && !in_cluster && !in_local {
            out.other_serving.push(e.socket_addr());
        }
    }
    out
}

fn split_lists(endpoints: &[Endpoint], port: &ServicePort, node_name: &str, zone: &str) -> Split {
    let mut out = Split {
        cluster: Vec::new(),
        local: Vec::new(),
        has_any: false,
        needs_merge: false,
        other_serving: Vec::new(),
    };
    if endpoints.is_empty() {
        return out;
    }

    let mut mode = TopologyMode::None;
    if port.uses_cluster_endpoints() {
        mode = topology_mode(endpoints, node_name, zone);
        out.cluster = filtered(endpoints, |e| {
            e.ready && available_for_topology(e, mode, node_name, zone)
        });
        // No ready endpoint for this topology means no ready endpoint at all
        // (the mode would have been None otherwise): fall back to
        // serving-terminating ones, ignoring topology.
        if out.cluster.is_empty() {
            out.cluster = filtered(endpoints, |e| e.serving && e.terminating);
        }
        // Any ready endpoint in the cluster is guaranteed to be in `cluster`.
        out.has_any = !out.cluster.is_empty();
    }

    if !port.uses_local_endpoints() {
        return out;
    }

    let mut has_local_ready = false;
    let mut has_local_serving_terminating = false;
    for e in endpoints {
        if e.ready {
            out.has_any = true;
            has_local_ready |= e.is_local;
        } else if e.serving && e.terminating {
            out.has_any = true;
            has_local_serving_terminating |= e.is_local;
        }
    }
    let mut use_serving_terminating = false;
    if has_local_ready {
        out.local = filtered(endpoints, |e| e.is_local && e.ready);
    } else if has_local_serving_terminating {
        use_serving_terminating = true;
        out.local = filtered(endpoints, |e| e.is_local && e.serving && e.terminating);
    }
    // Without topology filtering and with only ready local endpoints,
    // `cluster` holds every ready endpoint, so it is a superset of `local`.
    out.needs_merge =
        port.uses_cluster_endpoints() && (mode != TopologyMode::None || use_serving_terminating);
    out
}

/// Splits `endpoints` (sorted, of one service port) into the sets each
/// traffic policy may use on node `node_name` in `zone`, as upstream's
/// `CategorizeEndpoints`.
///
/// `cluster` is empty when the port does not use cluster endpoints
/// ([`ServicePort::uses_cluster_endpoints`]), `local` when it does not use
/// local ones ([`ServicePort::uses_local_endpoints`]); upstream returns `nil`
/// for those. `all_reachable` keeps the order of `endpoints` (upstream's
/// order is random when it has to merge).
pub fn categorize(
    endpoints: &[Endpoint],
    port: &ServicePort,
    node_name: &str,
    zone: &str,
) -> Categorized {
    let Split {
        cluster,
        local,
        has_any,
        needs_merge,
        ..
    } = split_lists(endpoints, port, node_name, zone);
    let all_reachable = if !port.uses_local_endpoints() {
        cluster.clone()
    } else if !port.uses_cluster_endpoints() {
        local.clone()
    } else if !needs_merge {
        cluster.clone()
    } else {
        // Both lists are ordered subsequences of `endpoints`, so one walk
        // merges them.
        let (mut c, mut l) = (0, 0);
        let mut all = Vec::with_capacity(cluster.len() + local.len());
        for e in endpoints {
            let in_cluster = cluster.get(c) == Some(e);
            let in_local = local.get(l) == Some(e);
            c += usize::from(in_cluster);
            l += usize::from(in_local);
            if in_cluster || in_local {
                all.push(e.clone());
            }
        }
        all
    };
    Categorized {
        cluster,
        local,
        all_reachable,
        has_any,
    }
}
