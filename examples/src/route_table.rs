//! A custom backend in under 100 lines: an in-memory route table.
//!
//! It shows the whole contract of [`Backend`]: a full sync rebuilds the
//! table, a partial sync rewrites only the ports in the [`ChangeSet`] (so a
//! no-op sync writes nothing), `cleanup` empties it, `render` prints it, and
//! [`Capabilities`] declare what it does not model. The tracer that walks
//! packets through the table lives in [`crate::route_table_harness`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use proxy_core::backend::BackendContext;
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, NodeView, Protocol, ProxyMode, ServicePortName,
    ServicePortView, SyncStats,
};

/// Where a service address leads: a service port, and whether the address
/// is its ClusterIP (internal traffic) or an external one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The service port.
    pub port: Arc<ServicePortView>,
    /// ClusterIP traffic (`true`) or external traffic.
    pub internal: bool,
}

/// An in-memory route table: service address → service port.
#[derive(Debug, Default)]
pub struct RouteTableBackend {
    /// `(protocol, VIP, port)` → route, for ClusterIPs, external and LB IPs.
    pub vips: BTreeMap<(Protocol, IpAddr, u16), Route>,
    /// `(protocol, node port)` → service port.
    pub node_ports: BTreeMap<(Protocol, u16), Arc<ServicePortView>>,
    /// The context it was built for (node-port addresses, node IPs).
    pub ctx: Option<BackendContext>,
}

impl RouteTableBackend {
    /// An empty table for `ctx`.
    pub fn new(ctx: &BackendContext) -> Self {
        RouteTableBackend {
            ctx: Some(ctx.clone()),
            ..Self::default()
        }
    }

    fn remove(&mut self, name: &ServicePortName) -> usize {
        let before = self.vips.len() + self.node_ports.len();
        self.vips.retain(|_, r| r.port.port.name != *name);
        self.node_ports.retain(|_, p| p.port.name != *name);
        before - self.vips.len() - self.node_ports.len()
    }

    fn insert(&mut self, view: &Arc<ServicePortView>) -> usize {
        let p = &view.port;
        let route = |internal| Route {
            port: view.clone(),
            internal,
        };
        self.vips
            .insert((p.protocol, p.cluster_ip, p.port), route(true));
        for ip in p.external_ips.iter().chain(&p.load_balancer_ips) {
            self.vips.insert((p.protocol, *ip, p.port), route(false));
        }
        if let Some(node_port) = p.node_port {
            self.node_ports
                .insert((p.protocol, node_port), view.clone());
        }
        1 + p.external_ips.len() + p.load_balancer_ips.len() + usize::from(p.node_port.is_some())
    }

    /// A sorted, canonical dump of the table.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for ((proto, ip, port), r) in &self.vips {
            let v = &r.port;
            let _ = writeln!(
                out,
                "{proto} {ip}:{port} -> {} internal={} {:?}/{:?} {:?}",
                v.port.name, r.internal, v.internal, v.external, v.cluster
            );
        }
        for ((proto, port), v) in &self.node_ports {
            let _ = writeln!(
                out,
                "{proto} node-port {port} -> {} {:?} {:?} {:?}",
                v.port.name, v.external, v.cluster, v.local
            );
        }
        out
    }
}

#[async_trait::async_trait]
impl Backend for RouteTableBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace // no mode of its own: it reports as the closest one
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::ALL;
        (
            caps.source_ranges,
            caps.preserves_client_ip,
            caps.detect_local,
        ) = (false, false, false);
        caps
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let mut stats = SyncStats {
            full: changes.is_full(),
            ..SyncStats::default()
        };
        if changes.is_full() {
            self.vips.clear();
            self.node_ports.clear();
        }
        let names: Vec<ServicePortName> = if changes.is_full() {
            view.iter().map(|(n, _)| n.clone()).collect()
        } else {
            changes.ports().cloned().collect()
        };
        for name in &names {
            let written = self.remove(name) + view.get(name).map_or(0, |v| self.insert(v));
            stats.objects_written += written;
            stats.ports_written += usize::from(written > 0);
        }
        Ok(stats)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        (self.vips, self.node_ports) = (BTreeMap::new(), BTreeMap::new());
        Ok(())
    }

    fn render(&self, _view: &NodeView) -> Result<String, BackendError> {
        Ok(self.dump())
    }
}
