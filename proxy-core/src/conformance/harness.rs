use crate::backend::{Backend, BackendContext, BackendError, Capabilities, Capability};

use super::packet::{Outcome, Packet};

/// A backend under test, wired to a dataplane the suite can send packets
/// through: a fake with a tracer (tier 2) or the real kernel in network
/// namespaces (tier 3).
///
/// The suite drives [`Harness::backend`] itself (full sync, partial sync,
/// no-op sync, cleanup) and then asks for packet outcomes.
#[async_trait::async_trait]
pub trait Harness: Send {
    /// The backend under test.
    fn backend(&mut self) -> &mut dyn Backend;

    /// What the harness (backend plus dataplane) can observe and express;
    /// usually the backend's capabilities.
    fn capabilities(&mut self) -> Capabilities {
        self.backend().capabilities()
    }

    /// Why scenarios needing `capability` are skipped when the harness
    /// lacks it although the backend may have it (say, the kernel cannot
    /// make SCTP sockets); `None` (the default) names the capability.
    fn missing_reason(&mut self, capability: Capability) -> Option<String> {
        let _ = capability;
        None
    }

    /// The outcome of `packet` under the state the backend last wrote.
    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError>;

    /// A canonical, sorted dump of the dataplane state the backend wrote
    /// (compared between a partial and a full sync), or `None` when this
    /// tier cannot dump (real kernel).
    async fn dump(&mut self) -> Option<String>;
}

/// Makes a fresh [`Harness`] for a scenario's [`BackendContext`].
pub trait HarnessFactory: Send + Sync {
    /// A harness whose backend serves `ctx`.
    fn harness(&self, ctx: &BackendContext) -> Result<Box<dyn Harness>, BackendError>;
}

impl<F> HarnessFactory for F
where
    F: Fn(&BackendContext) -> Result<Box<dyn Harness>, BackendError> + Send + Sync,
{
    fn harness(&self, ctx: &BackendContext) -> Result<Box<dyn Harness>, BackendError> {
        self(ctx)
    }
}
