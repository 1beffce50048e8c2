//! [`KernelHarness`]: the conformance [`Harness`] of the real-kernel tier.

use std::sync::Arc;

use crate::backend::{Backend, BackendContext, BackendError, Capabilities, Capability};
use crate::conformance::{Harness, HarnessFactory, Outcome, Packet};

use super::check_privileges;
use super::send::{PacketSender, SendOptions};
use super::topology::NodeTopology;
use super::worker::{MakeBackend, NetnsBackend};

/// A backend in the node namespace of a fresh [`NodeTopology`], with
/// packets sent as real connections.
///
/// - [`Harness::backend`] is a [`NetnsBackend`]: every call runs on a
///   worker inside the node namespace, and `sync` first grows the
///   topology for the view.
/// - [`Harness::send`] makes real connections (see [`SendOptions`]):
///   answered ones give [`Outcome::Forwarded`] with the set of endpoints
///   that answered (compare it with the expected set as `⊆`; with the
///   default 64 attempts, equality is safe for up to 4 equally likely
///   endpoints, see the module docs).
/// - [`Harness::dump`] is `None`: the kernel cannot be dumped canonically.
///
/// It blocks the calling thread while it sends (up to one timeout per
/// packet); the backend keeps running on its own thread meanwhile.
pub struct KernelHarness {
    backend: NetnsBackend,
    sender: PacketSender,
}

impl KernelHarness {
    /// Builds the topology for `ctx` and the backend inside it.
    pub fn new(ctx: &BackendContext, make_backend: Arc<MakeBackend>) -> Result<Self, BackendError> {
        check_privileges().map_err(BackendError::unsupported)?;
        let topology = NodeTopology::new(ctx)?;
        Ok(KernelHarness {
            backend: NetnsBackend::start(topology, ctx, make_backend)?,
            sender: PacketSender::new(SendOptions::default()),
        })
    }

    /// Changes how packets are sent.
    pub fn with_send_options(mut self, options: SendOptions) -> Self {
        self.sender.options = options;
        self
    }

    /// The topology (namespaces: `node()`, `lan()`, `pod(ip)`), e.g. to
    /// run `nft list ruleset` in the node.
    pub fn topology(&self) -> &NodeTopology {
        self.backend.topology()
    }

    /// The backend wrapper, with its concrete type.
    pub fn netns_backend(&mut self) -> &mut NetnsBackend {
        &mut self.backend
    }
}

#[async_trait::async_trait]
impl Harness for KernelHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    /// The backend's capabilities, without SCTP when the kernel cannot make
    /// SCTP sockets: the suite then skips those scenarios and says why
    /// ([`NO_SCTP_REASON`](super::NO_SCTP_REASON)).
    fn capabilities(&mut self) -> Capabilities {
        let mut capabilities = self.backend.capabilities();
        capabilities.sctp &= self.backend.topology().has_sctp();
        capabilities
    }

    fn missing_reason(&mut self, capability: Capability) -> Option<String> {
        // only when the backend has SCTP: otherwise the backend is the reason
        (capability == Capability::Sctp
            && self.backend.capabilities().sctp
            && !self.backend.topology().has_sctp())
        .then(|| super::NO_SCTP_REASON.to_string())
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        self.sender.send(self.backend.topology_mut(), packet)
    }

    async fn dump(&mut self) -> Option<String> {
        None
    }
}

/// A [`HarnessFactory`] that gives every scenario a [`KernelHarness`] whose
/// backend is `make_backend(ctx)`, built and run inside the node namespace.
///
/// Each harness checks [`check_privileges`] first and fails with an
/// [`Unsupported`](crate::BackendErrorKind::Unsupported) error naming what
/// is missing.
pub fn kernel_harness_factory<F>(make_backend: F) -> impl HarnessFactory
where
    F: Fn(&BackendContext) -> Result<Box<dyn Backend>, BackendError> + Send + Sync + 'static,
{
    kernel_harness_factory_with(make_backend, SendOptions::default())
}

/// [`kernel_harness_factory`] with non-default [`SendOptions`].
pub fn kernel_harness_factory_with<F>(make_backend: F, options: SendOptions) -> impl HarnessFactory
where
    F: Fn(&BackendContext) -> Result<Box<dyn Backend>, BackendError> + Send + Sync + 'static,
{
    let make_backend: Arc<MakeBackend> = Arc::new(make_backend);
    move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        let harness = KernelHarness::new(ctx, make_backend.clone())?.with_send_options(options);
        Ok(Box::new(harness))
    }
}
