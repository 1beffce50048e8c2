//! A custom backend in under 100 lines: an in-memory route table. A full
//! sync rewrites every port, a partial one only the ports in the
//! [`ChangeSet`]; the tracer is in [`crate::route_table_harness`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, NodeView, Protocol, ProxyMode, ServicePortName,
    ServicePortView, SyncStats,
};

/// `(protocol, address or None for a node port, port)`.
pub type RouteKey = (Protocol, Option<IpAddr>, u16);

/// An in-memory route table: key → (service port, is it the ClusterIP).
#[derive(Debug, Default)]
pub struct RouteTableBackend {
    /// The routes, sorted.
    pub routes: BTreeMap<RouteKey, (Arc<ServicePortView>, bool)>,
}

impl RouteTableBackend {
    /// Replaces the routes of `name` with those of `view`; returns the count.
    fn write_port(&mut self, name: &ServicePortName, view: Option<&Arc<ServicePortView>>) -> usize {
        let before = self.routes.len();
        self.routes.retain(|_, (v, _)| v.port.name != *name);
        let removed = before - self.routes.len();
        let Some(view) = view else { return removed };
        let (p, mut keys) = (&view.port, Vec::new());
        keys.push((p.protocol, Some(p.cluster_ip), p.port)); // first: the internal one
        let external = p.external_ips.iter().chain(&p.load_balancer_ips);
        keys.extend(external.map(|ip| (p.protocol, Some(*ip), p.port)));
        keys.extend(p.node_port.map(|n| (p.protocol, None, n)));
        for (i, key) in keys.iter().enumerate() {
            self.routes.insert(*key, (view.clone(), i == 0));
        }
        removed + keys.len()
    }

    /// A sorted, canonical dump of the table.
    pub fn dump(&self) -> String {
        self.routes
            .iter()
            .map(|(key, route)| format!("{key:?} -> {route:?}\n"))
            .collect()
    }
}

#[async_trait::async_trait]
impl Backend for RouteTableBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace // it has no mode of its own
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
        let held: Vec<ServicePortName> = self
            .routes
            .values()
            .map(|(v, _)| v.port.name.clone())
            .collect();
        let names = changes.ports_to_visit(view, &held);
        let mut stats = SyncStats {
            full: changes.is_full(),
            ..SyncStats::default()
        };
        for name in &names {
            let written = self.write_port(name, view.get(name));
            stats.objects_written += written;
            stats.ports_written += usize::from(written > 0);
        }
        Ok(stats)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.routes.clear();
        Ok(())
    }

    fn render(&self, _view: &NodeView) -> Result<String, BackendError> {
        Ok(self.dump())
    }
}
