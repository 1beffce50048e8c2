//! [`RouteTableHarness`]: the backend in dry-run mode (listeners recorded,
//! no sockets) with its route-table tracer, for the shared conformance
//! suite's fake tier and the partial-equals-full property.

use std::net::SocketAddr;

use proxy_core::backend::BackendContext;
use proxy_core::conformance::{Harness, Origin, Outcome, Packet};
use proxy_core::{Backend, BackendError};

use crate::{HostAddresses, Options, UserspaceBackend};

/// The backend in dry-run mode; packets are answered by its tracer.
pub struct RouteTableHarness {
    backend: UserspaceBackend,
}

impl RouteTableHarness {
    /// A dry-run backend for `ctx` with `options`. The node's addresses
    /// are its own; everything else (ClusterIPs, external and
    /// load-balancer IPs) is not local, as on a real node.
    pub fn new(ctx: &BackendContext, options: Options) -> Self {
        let host = HostAddresses::new(ctx.node.addresses.iter().copied());
        RouteTableHarness {
            backend: UserspaceBackend::dry_run(ctx, host, options),
        }
    }

    /// A harness factory: each harness's backend gets `options(ctx)`.
    pub fn factory(
        options: impl Fn(&BackendContext) -> Options + Send + Sync,
    ) -> impl Fn(&BackendContext) -> Result<Box<dyn Harness>, BackendError> + Send + Sync {
        move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
            Ok(Box::new(RouteTableHarness::new(ctx, options(ctx))))
        }
    }
}

#[async_trait::async_trait]
impl Harness for RouteTableHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        let destination = SocketAddr::new(packet.destination, packet.port);
        Ok(self
            .backend
            .trace(packet.protocol, destination, packet.origin == Origin::Host)
            .into())
    }

    async fn dump(&mut self) -> Option<String> {
        Some(self.backend.dump())
    }
}
