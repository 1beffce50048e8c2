//! A hung `nft` (a script that never exits) is killed after the context's
//! command timeout: the transaction and the table listing fail with a
//! transient error instead of hanging the sync loop, and the kill is counted.
//! The table lookup is forced onto `nft` (by default it is a netlink
//! request that runs no program) to exercise the fallback path.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backend_nftables::{Executor, NftCli};
use proxy_core::backend::{BackendContext, CommandLimits, TimeoutRecorder};
use proxy_core::exec::nft::TableLookup;
use proxy_core::{BackendErrorKind, ChangeSet, IpFamily, NodeInfo, NodeView};

#[derive(Default)]
struct Count(AtomicUsize);

impl TimeoutRecorder for Count {
    fn command_timed_out(&self, program: &str) {
        assert_eq!(program, "nft");
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A directory holding an `nft` that sleeps forever.
fn hung_nft(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hung-nft-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nft = dir.join("nft");
    std::fs::write(&nft, "#!/bin/sh\nexec sleep 3600\n").unwrap();
    std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn a_hung_nft_is_killed_and_the_sync_fails_transiently() {
    let dir = hung_nft("backend");
    let program = dir.join("nft").to_string_lossy().into_owned();
    let count = Arc::new(Count::default());
    let limits = CommandLimits::new(Duration::from_millis(200)).with_recorder(count.clone());

    let mut nft = NftCli::with_program(&program)
        .with_table_lookup(TableLookup::Cli)
        .with_limits(limits.clone());
    let started = Instant::now();
    let error = nft.table_exists(IpFamily::V4).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        error.into_backend("listing").kind(),
        BackendErrorKind::Transient
    );
    assert_eq!(count.0.load(Ordering::SeqCst), 1);

    // A whole sync through the backend, with the context's limits.
    let node = NodeInfo::named("node-a").shared();
    let ctx = BackendContext::for_tests(IpFamily::V4, node.clone()).with_commands(limits);
    let mut backend = backend_nftables::NftablesBackend::with_executor(
        &ctx,
        Box::new(
            NftCli::with_program(&program)
                .with_table_lookup(TableLookup::Cli)
                .with_limits(ctx.commands.clone()),
        ),
    );
    let view = NodeView::empty(IpFamily::V4, node);
    let error = proxy_core::Backend::sync(&mut backend, &view, &ChangeSet::full())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Transient, "{error}");
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
