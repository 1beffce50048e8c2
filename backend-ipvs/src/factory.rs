//! [`IpvsFactory`]: the `ipvs` mode's factory.

use std::sync::Arc;

use proxy_core::ProxyMode;
use proxy_core::backend::{Backend, BackendContext, BackendError, BackendFactory};

use proxy_core::IpFamily;
use proxy_core::exec::SystemExecutor;

use crate::cleanup;
use crate::host::{Host, SystemHost};
use crate::netlink::IpvsNetlink;
use crate::proxier::IpvsBackend;

/// The programs the mode runs, per family.
fn tools(family: IpFamily) -> [(&'static str, &'static str); 3] {
    let restore = match family {
        IpFamily::V4 => "iptables-restore",
        IpFamily::V6 => "ip6tables-restore",
    };
    [
        ("ip", "iproute2"),
        ("ipset", "ipset"),
        (restore, "iptables"),
    ]
}

/// The factory of the `ipvs` mode: one [`IpvsBackend`](crate::IpvsBackend)
/// per family (ClusterIPs, node ports, external and load-balancer IPs with
/// source ranges, health-check node ports); a dual-stack node runs one of
/// each, sharing `kube-ipvs0`.
///
/// [`cleanup_leftovers`](BackendFactory::cleanup_leftovers) removes what
/// upstream kube-proxy's IPVS mode left on the node (see the crate
/// documentation).
#[derive(Clone)]
pub struct IpvsFactory {
    /// `None`: the real host, under the context's command limits.
    host: Option<Arc<dyn Host>>,
}

impl IpvsFactory {
    /// The factory, acting on the real host.
    pub fn new() -> Self {
        IpvsFactory { host: None }
    }

    /// The factory, running its commands through `host`.
    pub fn with_host(host: Arc<dyn Host>) -> Self {
        IpvsFactory { host: Some(host) }
    }

    fn host(&self, ctx: &BackendContext) -> Arc<dyn Host> {
        match &self.host {
            Some(host) => host.clone(),
            None => Arc::new(SystemHost::new(ctx.commands.clone())),
        }
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

    /// The kernel must have IPVS (the `IPVS` generic-netlink family
    /// resolves) and the host `ip`, `ipset` and `iptables-restore` (IPv6:
    /// `ip6tables-restore`).
    async fn check(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        let host = self.host(ctx);
        for (program, package) in tools(ctx.family) {
            if !host.has_program(program) {
                return Err(BackendError::unsupported(format!(
                    "IPVS mode needs `{program}`; install the {package} package"
                )));
            }
        }
        IpvsNetlink::open()
            .map(drop)
            .map_err(|e| BackendError::unsupported(format!("IPVS mode: {e}")).with_source(e))
    }

    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(IpvsBackend::new(
            ctx,
            Arc::new(SystemExecutor::new(ctx.commands.clone())),
            self.host(ctx),
        )?))
    }

    /// Flushes the IPVS virtual servers, deletes `kube-ipvs0`, removes the
    /// IPVS mode's iptables jumps and chains of `ctx.family`, then destroys
    /// its ipsets of `ctx.family`. Idempotent; every step runs even when an
    /// earlier one failed, and the error lists every failure.
    async fn cleanup_leftovers(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        cleanup::cleanup_leftovers(self.host(ctx).as_ref(), ctx.family)
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
    async fn check_names_the_missing_tool_of_the_family() {
        let factory = IpvsFactory::with_host(Arc::new(FakeHost::new().with_programs(&[
            "ip",
            "ipset",
            "iptables-restore",
        ])));
        let error = factory.check(&ctx(IpFamily::V6)).await.unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Unsupported);
        assert_eq!(
            error.message(),
            "IPVS mode needs `ip6tables-restore`; install the iptables package"
        );
        let bare = IpvsFactory::with_host(Arc::new(FakeHost::new().with_programs(&["ip"])));
        let error = bare.check(&ctx(IpFamily::V4)).await.unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Unsupported);
        assert_eq!(
            error.message(),
            "IPVS mode needs `ipset`; install the ipset package"
        );
    }

    #[test]
    fn build_gives_the_ipvs_backend_for_either_family() {
        let factory = IpvsFactory::with_host(Arc::new(FakeHost::new()));
        for family in [IpFamily::V4, IpFamily::V6] {
            let backend = factory.build(&ctx(family)).unwrap();
            assert_eq!(backend.mode(), ProxyMode::Ipvs);
        }
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
