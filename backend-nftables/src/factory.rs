//! [`NftablesFactory`]: checks, builds and cleans up nftables mode.

use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::{Backend, BackendError, IpFamily, ProxyMode};

use crate::backend::NftablesBackend;
use crate::exec::{Executor, NftCli};
use crate::ir::{Command, Transaction};
use crate::netlink::NetlinkExecutor;

/// Oldest kernel upstream supports for nftables mode.
pub const MIN_KERNEL: (u32, u32) = (5, 13);
/// Environment variable that skips the kernel version check (upstream's).
pub const SKIP_KERNEL_CHECK_ENV: &str = "KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK";

/// The factory of nftables mode.
///
/// Starting nftables mode must also remove iptables- and IPVS-mode
/// leftovers; the runtime does that by calling those factories'
/// `cleanup_leftovers`, as upstream's `platformCleanup` does.
#[derive(Debug, Clone, Default)]
pub struct NftablesFactory {
    nft: NftCli,
}

impl NftablesFactory {
    /// A factory running `nft` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Parses `major.minor` from a kernel release string (`6.18.44-fc`).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[async_trait::async_trait]
impl BackendFactory for NftablesFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }

    async fn check(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        if std::env::var_os(SKIP_KERNEL_CHECK_ENV).is_none() {
            let release = tokio::fs::read_to_string("/proc/sys/kernel/osrelease")
                .await
                .unwrap_or_default();
            match parse_kernel_version(&release) {
                Some(v) if v < MIN_KERNEL => {
                    return Err(BackendError::unsupported(format!(
                        "kernel {} is older than {}.{}, which nftables mode needs (set {SKIP_KERNEL_CHECK_ENV} to skip this check)",
                        release.trim(),
                        MIN_KERNEL.0,
                        MIN_KERNEL.1
                    )));
                }
                Some(_) => {}
                None => tracing::warn!(
                    release = release.trim(),
                    "cannot parse the kernel version; not checking it"
                ),
            }
        }
        if !self.nft.is_installed() {
            return Err(BackendError::unsupported(format!(
                "`{}` is not installed (nftables mode needs the nftables tools)",
                self.nft.program()
            )));
        }
        let mut nft = self.nft.clone().with_limits(ctx.commands.clone());
        nft.table_exists(ctx.family).await.map(|_| ()).map_err(|e| {
            e.into_backend(&format!(
                "cannot read the nf_tables tables over netlink nor with `{} list tables` (are we privileged?)",
                self.nft.program()
            ))
        })
    }

    /// Transactions go over netlink ([`NetlinkExecutor`], opened in the
    /// calling thread's network namespace), unless the `nft` first in
    /// `PATH` is a wrapper (a script, not the nft binary): then they go
    /// through it, as text, so the site's wrapper keeps seeing them.
    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        let nft = self.nft.clone().with_limits(ctx.commands.clone());
        let exec: Box<dyn Executor> = if is_wrapper(self.nft.program()) {
            tracing::info!(
                program = self.nft.program(),
                "nft is a wrapper: nftables transactions go through it, not over netlink"
            );
            Box::new(nft)
        } else {
            Box::new(NetlinkExecutor::new(ctx.commands.clone()))
        };
        Ok(Box::new(NftablesBackend::with_executor(ctx, exec)))
    }

    /// Deletes tables `ip kube-proxy` and `ip6 kube-proxy` (upstream's
    /// `CleanupLeftovers` does both whatever the family).
    async fn cleanup_leftovers(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        let mut nft = self.nft.clone().with_limits(ctx.commands.clone());
        for family in IpFamily::ALL {
            let mut tx = Transaction::new(family);
            tx.push(Command::AddTable);
            tx.push(Command::DeleteTable);
            nft.apply(&tx)
                .await
                .map_err(|e| e.into_backend("cannot delete the kube-proxy nftables table"))?;
        }
        Ok(())
    }
}

/// Whether `program` (a path, or a name looked up in `PATH`) is a wrapper
/// rather than an executable binary: a file that does not start with the
/// ELF magic (a script). A program not found is not a wrapper.
pub fn is_wrapper(program: &str) -> bool {
    let path = if program.contains('/') {
        Some(std::path::PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
    };
    let Some(path) = path else {
        return false;
    };
    let mut magic = [0u8; 4];
    match std::fs::File::open(&path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
    {
        Ok(()) => &magic != b"\x7fELF",
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse_and_compare() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0"), Some((5, 4)));
        assert!(parse_kernel_version("5.4.0").unwrap() < MIN_KERNEL);
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn scripts_are_wrappers_binaries_are_not() {
        let dir = std::env::temp_dir().join(format!("nft-wrapper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("nft");
        std::fs::write(&script, "#!/bin/sh\nexec /usr/sbin/nft \"$@\"\n").unwrap();
        assert!(is_wrapper(script.to_str().unwrap()));
        let binary = std::env::current_exe().unwrap();
        assert!(!is_wrapper(binary.to_str().unwrap()));
        assert!(!is_wrapper("/nonexistent/nft"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
