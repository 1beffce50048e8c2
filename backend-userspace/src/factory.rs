//! [`UserspaceFactory`]: builds [`UserspaceBackend`]s for the registry.

use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::exec::nft::Nft;
use proxy_core::{Backend, BackendError, ProxyMode};

use crate::backend::UserspaceBackend;
use crate::redirect::mode::can_program_nftables;
use crate::redirect::rules::delete_table;

/// The factory of the userspace mode. It needs no privileges; with
/// `CAP_NET_ADMIN` and `nft` its backends also install redirect rules
/// ([`RedirectMode::Auto`](crate::RedirectMode::Auto)), the tables `ip
/// kube-proxy-userspace` and `ip6 kube-proxy-userspace`, which
/// [`cleanup_leftovers`](BackendFactory::cleanup_leftovers) deletes.
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
        let backend = UserspaceBackend::new(ctx);
        tracing::info!(
            family = %ctx.family,
            redirect_rules = backend.redirecting(),
            "userspace backend built"
        );
        Ok(Box::new(backend))
    }

    async fn cleanup_leftovers(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        // Listeners live in the process that opened them and die with it;
        // the redirect table of `ctx.family` stays until deleted.
        if !can_program_nftables() {
            tracing::debug!("cannot program nftables: no redirect tables to delete");
            return Ok(());
        }
        let nft = Nft::new(ctx.commands.clone());
        Ok(delete_table(&nft, ctx.family).await?)
    }
}
