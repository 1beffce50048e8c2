//! ipvs mode for the pluggable kube-proxy: **not implemented yet**.
//!
//! [`IpvsFactory`] is registered so that `--proxy-mode=ipvs` is recognised
//! and fails with a clear message instead of "unknown mode". Upstream
//! deprecated the IPVS mode in v1.35 (KEP-5495); this kernel build also has no
//! `CONFIG_IP_VS`, so a real backend could not be tested here.

use proxy_core::ProxyMode;
use proxy_core::backend::{Backend, BackendContext, BackendError, BackendFactory};

/// The message every operation of [`IpvsFactory`] fails with.
pub const NOT_IMPLEMENTED: &str = "IPVS mode is not implemented yet";

/// The factory of the ipvs mode; it reports
/// [`Unsupported`](proxy_core::BackendErrorKind::Unsupported) for everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct IpvsFactory;

impl IpvsFactory {
    /// The factory.
    pub fn new() -> Self {
        IpvsFactory
    }
}

#[async_trait::async_trait]
impl BackendFactory for IpvsFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Ipvs
    }

    async fn check(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Err(BackendError::unsupported(NOT_IMPLEMENTED))
    }

    fn build(&self, _ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        Err(BackendError::unsupported(NOT_IMPLEMENTED))
    }

    /// Nothing to remove: this mode never installs anything.
    async fn cleanup_leftovers(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::{BackendErrorKind, IpFamily, NodeInfo};

    #[tokio::test]
    async fn reports_unsupported_with_a_clear_message() {
        let ctx = BackendContext::for_tests(IpFamily::V4, NodeInfo::named("n").shared());
        let error = IpvsFactory::new().check(&ctx).await.unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Unsupported);
        assert_eq!(error.message(), NOT_IMPLEMENTED);
        assert!(IpvsFactory::new().build(&ctx).is_err());
        assert!(IpvsFactory::new().cleanup_leftovers(&ctx).await.is_ok());
    }
}
