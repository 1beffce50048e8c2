//! [`FakeHarness`]: the tier-2 conformance harness of the iptables mode.

use std::sync::Arc;

use proxy_core::backend::{Backend, BackendContext, BackendError};
use proxy_core::conformance::{Harness, Outcome, Packet};

use super::FakeExecutor;
use crate::IptablesBackend;
use crate::trace::{Node, trace};

/// An [`IptablesBackend`] wired to a [`FakeExecutor`]; packets are traced
/// through the state its restores left, merged as `iptables-restore
/// --noflush` would.
#[derive(Debug)]
pub struct FakeHarness {
    backend: IptablesBackend,
    exec: FakeExecutor,
    ctx: BackendContext,
}

impl FakeHarness {
    /// A harness for `ctx` on an empty fake host.
    pub fn new(ctx: &BackendContext) -> Self {
        let exec = FakeExecutor::new();
        FakeHarness {
            backend: IptablesBackend::with_executor(ctx, Arc::new(exec.clone())),
            exec,
            ctx: ctx.clone(),
        }
    }

    /// A boxed harness, the shape [`proxy_core::conformance::HarnessFactory`] wants.
    pub fn boxed(ctx: &BackendContext) -> Result<Box<dyn Harness>, BackendError> {
        Ok(Box::new(Self::new(ctx)))
    }

    /// The fake host.
    pub fn executor(&self) -> &FakeExecutor {
        &self.exec
    }

    /// The backend, by its concrete type.
    pub fn iptables(&mut self) -> &mut IptablesBackend {
        &mut self.backend
    }

    /// The node as the tracer sees it: its addresses are local.
    pub fn node(&self) -> Node {
        Node {
            local_ips: self.ctx.node.addresses.clone(),
        }
    }

    /// Traces `packet` through the current state.
    pub fn trace(&self, packet: &Packet) -> Result<Outcome, BackendError> {
        let state = self.exec.state();
        trace(state.tables(self.ctx.family), &self.node(), packet)
            .map_err(|e| BackendError::dataplane(e.to_string()).with_source(e))
    }
}

#[async_trait::async_trait]
impl Harness for FakeHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        self.trace(packet)
    }

    async fn dump(&mut self) -> Option<String> {
        Some(self.exec.dump(self.ctx.family))
    }
}
