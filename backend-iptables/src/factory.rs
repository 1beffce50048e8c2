//! [`IptablesFactory`]: start-up checks, privileged set-up and leftovers
//! cleanup of the iptables mode.

use std::sync::Arc;

use proxy_core::ProxyMode;
use proxy_core::backend::{Backend, BackendContext, BackendError, BackendFactory};

use crate::backend::{IptablesBackend, cleanup_family};
use crate::exec::{Executor, SystemExecutor};
use crate::iptables::Iptables;
use crate::render::RenderConfig;

const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Builds [`IptablesBackend`]s; register it in the binary's
/// [`Registry`](proxy_core::backend::Registry).
#[derive(Clone)]
pub struct IptablesFactory {
    /// `None`: the host's tools, under the context's command limits.
    exec: Option<Arc<dyn Executor>>,
    probe_host: bool,
}

impl Default for IptablesFactory {
    fn default() -> Self {
        IptablesFactory {
            exec: None,
            probe_host: true,
        }
    }
}

impl std::fmt::Debug for IptablesFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IptablesFactory")
    }
}

impl IptablesFactory {
    /// The factory of the host's iptables.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory whose backends run their commands through `exec` (tests).
    pub fn with_executor(exec: Arc<dyn Executor>) -> Self {
        IptablesFactory {
            exec: Some(exec),
            probe_host: false,
        }
    }

    fn exec(&self, ctx: &BackendContext) -> Arc<dyn Executor> {
        match &self.exec {
            Some(exec) => Arc::clone(exec),
            None => Arc::new(SystemExecutor::new(ctx.commands.clone())),
        }
    }
}

#[async_trait::async_trait]
impl BackendFactory for IptablesFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Iptables
    }

    async fn check(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        let ipt = Iptables::detect(self.exec(ctx), ctx.family).await?;
        // Reading a chain of the nat table needs CAP_NET_ADMIN: a cheap
        // privilege check. One built-in chain, not `iptables-save -t nat`:
        // with iptables-nft a save reads the whole table (minutes and
        // hundreds of MiB beside 10k Services at a restart), `-S CHAIN`
        // only that chain.
        let unreadable = |reason: String| {
            BackendError::unsupported(format!(
                "cannot read the {} nat table (kube-proxy needs CAP_NET_ADMIN): {reason}",
                ctx.family
            ))
        };
        match ipt.chain_exists("nat", "POSTROUTING").await {
            Ok(true) => Ok(()),
            Ok(false) => Err(unreadable("no POSTROUTING chain".to_string())),
            Err(e) => Err(unreadable(e.to_string())),
        }
    }

    async fn privileged_init(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        if RenderConfig::from_context(ctx).localhost_node_ports {
            tracing::info!(
                "setting route_localnet=1 to allow node ports on localhost; to change this either disable iptables.localhostNodePorts or set nodePortAddresses to filter loopback addresses"
            );
            let current = std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default();
            if current.trim() != "1" {
                std::fs::write(ROUTE_LOCALNET, "1").map_err(|e| {
                    BackendError::unsupported(format!("cannot set {ROUTE_LOCALNET}")).with_source(e)
                })?;
            }
        }
        Ok(())
    }

    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(
            IptablesBackend::with_executor(ctx, self.exec(ctx)).probe_host(self.probe_host),
        ))
    }

    async fn cleanup_leftovers(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        let ipt = match Iptables::detect(self.exec(ctx), ctx.family).await {
            Ok(ipt) => ipt,
            // Without iptables there is nothing to clean.
            Err(proxy_core::exec::ToolError::Missing { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        cleanup_family(&ipt).await
    }
}
