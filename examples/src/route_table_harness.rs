//! The conformance harness of [`RouteTableBackend`]: a tracer that walks a
//! packet through the route table, the way the kernel would walk it through
//! rules. The suite (`proxy_core::conformance::run`) does the rest.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use proxy_core::backend::BackendContext;
use proxy_core::conformance::{Harness, Origin, Outcome, Packet};
use proxy_core::{Backend, BackendError, Endpoint, ServicePortView, Target};

use crate::route_table::RouteTableBackend;

/// [`RouteTableBackend`] plus its tracer.
#[derive(Debug)]
pub struct RouteTableHarness {
    backend: RouteTableBackend,
    ctx: BackendContext,
}

impl RouteTableHarness {
    /// A harness for `ctx`; usable directly as a
    /// [`HarnessFactory`](proxy_core::conformance::HarnessFactory).
    pub fn factory(ctx: &BackendContext) -> Result<Box<dyn Harness>, BackendError> {
        Ok(Box::new(RouteTableHarness {
            backend: RouteTableBackend::default(),
            ctx: ctx.clone(),
        }))
    }

    fn is_local(&self, ip: &IpAddr) -> bool {
        self.ctx.node.addresses.contains(ip) || self.ctx.family.loopback_net().contains(ip)
    }

    /// Whether node ports are served on `ip`: a local address inside the
    /// node-port networks; loopback too (IPv6 included), as the userspace
    /// proxy does, unless `localhostNodePorts: false`.
    fn serves_node_ports(&self, ip: &IpAddr) -> bool {
        let loopback_allowed =
            !self.ctx.family.loopback_net().contains(ip) || self.ctx.config.localhost_node_ports();
        let in_networks = self
            .ctx
            .node_port_cidrs
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n.contains(ip)));
        self.is_local(ip) && loopback_allowed && in_networks
    }

    /// Where `packet` goes under the table the backend last wrote.
    pub fn trace(&self, packet: &Packet) -> Outcome {
        if !self.ctx.family.contains(&packet.destination) {
            return Outcome::NotMatched;
        }
        let key = (packet.protocol, Some(packet.destination), packet.port);
        if let Some((view, internal)) = self.backend.routes.get(&key) {
            return match (internal, view.internal) {
                (true, Target::Reject) => Outcome::Rejected,
                (true, Target::Drop) => Outcome::Dropped,
                (true, target) => forwarded(view.endpoints_for(target)),
                (false, _) => self.external(view, packet),
            };
        }
        // Node ports: on local addresses only.
        let Some((view, _)) = self
            .backend
            .routes
            .get(&(packet.protocol, None, packet.port))
        else {
            return Outcome::NotMatched;
        };
        let local = self.is_local(&packet.destination);
        match (
            self.serves_node_ports(&packet.destination),
            local,
            view.external,
        ) {
            (true, _, _) => self.external(view, packet),
            // Filter rules for ports without usable endpoints match any local address.
            (false, true, Target::Reject) => Outcome::Rejected,
            (false, true, Target::Drop) => Outcome::Dropped,
            _ => Outcome::NotMatched,
        }
    }

    fn external(&self, view: &ServicePortView, packet: &Packet) -> Outcome {
        let from_host = packet.origin == Origin::Host || self.is_local(&packet.source);
        match view.external {
            Target::Reject => Outcome::Rejected,
            Target::Cluster => forwarded(&view.cluster),
            _ if from_host => forwarded(&view.cluster),
            Target::Local => forwarded(&view.local),
            Target::Drop => Outcome::Dropped,
        }
    }
}

/// Forwarded to any of `endpoints`. The table does not model masquerading
/// (the backend declares `preserves_client_ip: false`, so the suite does not
/// compare it).
fn forwarded(endpoints: &[Endpoint]) -> Outcome {
    Outcome::Forwarded {
        endpoints: endpoints
            .iter()
            .map(Endpoint::socket_addr)
            .collect::<BTreeSet<SocketAddr>>(),
        masqueraded: true,
    }
}

#[async_trait::async_trait]
impl Harness for RouteTableHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        Ok(self.trace(packet))
    }

    async fn dump(&mut self) -> Option<String> {
        Some(self.backend.dump())
    }
}
