//! [`IpvsFactory`]: the `ipvs` mode's factory.

use std::sync::Arc;

use proxy_core::ProxyMode;
use proxy_core::backend::{Backend, BackendContext, BackendError, BackendFactory};

use crate::cleanup;
use crate::host::{Host, SystemHost};

/// Why [`IpvsFactory::check`] and [`IpvsFactory::build`] fail.
pub const NOT_IMPLEMENTED: &str = "IPVS mode is not implemented yet (the IPVS backend serves ClusterIPs and node ports only: no external or load-balancer IPs, no IPv6); use iptables or nftables";

/// The factory of the `ipvs` mode.
///
/// The mode is not enabled: [`IpvsBackend`](crate::IpvsBackend) serves
/// ClusterIPs and node ports only, so [`check`](BackendFactory::check) and
/// [`build`](BackendFactory::build) report
/// [`Unsupported`](proxy_core::BackendErrorKind::Unsupported) with
/// [`NOT_IMPLEMENTED`]. [`cleanup_leftovers`](BackendFactory::cleanup_leftovers)
/// is real: it removes what upstream kube-proxy's IPVS mode left on the
/// node (see the crate documentation).
#[derive(Clone)]
pub struct IpvsFactory {
    host: Arc<dyn Host>,
}

impl IpvsFactory {
    /// The factory, acting on the real host.
    pub fn new() -> Self {
        Self::with_host(Arc::new(SystemHost))
    }

    /// The factory, running its commands through `host`.
    pub fn with_host(host: Arc<dyn Host>) -> Self {
        IpvsFactory { host }
    }
}

impl Default for IpvsFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IpvsFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsFactory").finish_non_exhaustive()
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

    /// Flushes the IPVS virtual servers, deletes `kube-ipvs0`, removes the
    /// IPVS mode's iptables jumps and chains of `ctx.family`, then destroys
    /// its ipsets of `ctx.family`. Idempotent; every step runs even when an
    /// earlier one failed, and the error lists every failure.
    async fn cleanup_leftovers(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        cleanup::cleanup_leftovers(self.host.as_ref(), ctx.family)
            .await
            .map_err(BackendError::from)
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::{BackendErrorKind, IpFamily, NodeInfo};

    use super::*;
    use crate::host::fake::FakeHost;

    fn ctx(family: IpFamily) -> BackendContext {
        BackendContext::for_tests(family, NodeInfo::named("n").shared())
    }

    #[tokio::test]
    async fn check_and_build_report_unsupported_with_a_clear_message() {
        let factory = IpvsFactory::with_host(Arc::new(FakeHost::new()));
        let error = factory.check(&ctx(IpFamily::V4)).await.unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Unsupported);
        assert_eq!(error.message(), NOT_IMPLEMENTED);
        let error = factory.build(&ctx(IpFamily::V4)).err().unwrap();
        assert_eq!(error.kind(), BackendErrorKind::Unsupported);
        assert_eq!(error.message(), NOT_IMPLEMENTED);
    }

    #[tokio::test]
    async fn cleanup_acts_on_the_family_of_the_context() {
        let host = Arc::new(FakeHost::new().with_programs(&["ipset"]).respond(
            "ipset list -n",
            FakeHost::ok("KUBE-CLUSTER-IP\nKUBE-6-CLUSTER-IP\n"),
        ));
        let factory = IpvsFactory::with_host(host.clone());
        factory.cleanup_leftovers(&ctx(IpFamily::V6)).await.unwrap();
        assert_eq!(
            host.commands(),
            ["ipset list -n", "ipset destroy KUBE-6-CLUSTER-IP"]
        );
    }

    #[tokio::test]
    async fn cleanup_failures_become_backend_errors_with_the_cause() {
        let host = Arc::new(FakeHost::new().with_programs(&["ipset"]).respond(
            "ipset list -n",
            FakeHost::fail(1, "Kernel error received: Operation not permitted"),
        ));
        let error = IpvsFactory::with_host(host)
            .cleanup_leftovers(&ctx(IpFamily::V4))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Dataplane);
        assert!(
            error
                .message()
                .contains("`ipset list -n` failed (exit code 1)"),
            "{}",
            error.message()
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
