//! [`FakeHarness`]: the nftables backend wired to the in-memory dataplane,
//! for the shared conformance suite (tier 2).

use proxy_core::backend::BackendContext;
use proxy_core::conformance::{Harness, Outcome, Packet};
use proxy_core::{Backend, BackendError};

use super::{FakeExecutor, FakeNft, SharedFake, Tracer, lock};
use crate::backend::NftablesBackend;

/// The backend plus the fake it writes to.
pub struct FakeHarness {
    backend: NftablesBackend,
    fake: SharedFake,
}

impl FakeHarness {
    /// A harness for `ctx` on a fresh fake.
    pub fn new(ctx: &BackendContext) -> Self {
        let fake = FakeNft::shared();
        let backend =
            NftablesBackend::with_executor(ctx, Box::new(FakeExecutor::new(fake.clone())));
        FakeHarness { backend, fake }
    }

    /// The fake dataplane.
    pub fn fake(&self) -> &SharedFake {
        &self.fake
    }

    /// The backend, with its concrete type.
    pub fn nftables(&mut self) -> &mut NftablesBackend {
        &mut self.backend
    }
}

#[async_trait::async_trait]
impl Harness for FakeHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        let ctx = self.backend.context();
        let fake = lock(&self.fake);
        let Some(table) = fake.table(ctx.family) else {
            return Ok(Outcome::NotMatched);
        };
        Ok(Tracer::new(table, ctx.family, ctx.node.addresses.clone()).trace(packet))
    }

    async fn dump(&mut self) -> Option<String> {
        Some(lock(&self.fake).dump(self.backend.context().family))
    }
}

/// The [`HarnessFactory`](proxy_core::conformance::HarnessFactory) of the
/// fake tier: `suite::run(&fake_harness_factory, Tier::Fake)`.
pub fn fake_harness_factory(ctx: &BackendContext) -> Result<Box<dyn Harness>, BackendError> {
    Ok(Box::new(FakeHarness::new(ctx)))
}
