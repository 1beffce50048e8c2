//! [`UserspaceFactory`]: builds [`UserspaceBackend`]s for the registry.

use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::{Backend, BackendError, ProxyMode};

use crate::backend::UserspaceBackend;

/// The factory of the userspace mode. It needs no privileges and installs
/// nothing in the kernel, so there is nothing to check and nothing to clean.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserspaceFactory;

#[async_trait::async_trait]
impl BackendFactory for UserspaceFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }

    async fn check(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }

    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(UserspaceBackend::new(ctx)))
    }

    async fn cleanup_leftovers(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        // Listeners live in the process that opened them and die with it.
        Ok(())
    }
}
