//! The watcher against the real kernel, in a fresh network namespace: an
//! `nft` run from outside is reported, the same `nft` spawned by our
//! executor inside [`OwnWrites::scope`] is not, nor a change to a table that
//! is not ours.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::Duration;

use crate::config::ProxyMode;
use crate::conformance::netns::{Netns, check_tool, privileged_or_skip_with, run_tool};
use crate::exec::{Command, Executor, OwnWrites, SystemExecutor};
use crate::model::IpFamily;

use super::NftWatcher;

/// Runs `nft args…` from outside our scope (as another process would).
fn foreign_nft(args: &[&str]) {
    run_tool("nft", args, "").unwrap();
}

/// The families the watcher reports within `wait`, or none.
async fn reported(watcher: &mut NftWatcher, wait: Duration) -> Vec<IpFamily> {
    tokio::time::timeout(wait, watcher.changed())
        .await
        .map(|r| r.unwrap())
        .unwrap_or_default()
}

#[test]
fn reports_outside_commits_to_our_table_and_ignores_our_own() {
    let test = "reports_outside_commits_to_our_table_and_ignores_our_own";
    if !privileged_or_skip_with(test, || check_tool("nft", &["--version"], "nftables")) {
        return;
    }
    Netns::new()
        .unwrap()
        .block_on(|| async {
            let own = OwnWrites::new();
            let mut watcher =
                NftWatcher::open(ProxyMode::Nftables, vec![IpFamily::V4], own.clone())
                    .unwrap()
                    .expect("nftables mode is watched");
            let ours =
                |script: &str| Command::new("nft", ["-f", "-"]).with_stdin(script.to_string());
            // Our own writes: created, filled, flushed by our executor.
            let script = "table ip kube-proxy {\n chain services {\n counter\n }\n}\n";
            let out = own
                .scope(SystemExecutor::default().run(&ours(script)))
                .await
                .unwrap();
            assert_eq!(out.code, Some(0), "{}", out.stderr);
            let out = own
                .scope(SystemExecutor::default().run(&ours("flush chain ip kube-proxy services\n")))
                .await
                .unwrap();
            assert_eq!(out.code, Some(0), "{}", out.stderr);
            assert_eq!(reported(&mut watcher, Duration::from_millis(300)).await, []);

            // Someone else's table: not ours.
            foreign_nft(&["add", "table", "ip", "firewalld"]);
            foreign_nft(&["delete", "table", "ip", "firewalld"]);
            assert_eq!(reported(&mut watcher, Duration::from_millis(300)).await, []);

            // Someone else touching ours: reported, once.
            foreign_nft(&["add", "rule", "ip", "kube-proxy", "services", "counter"]);
            assert_eq!(
                reported(&mut watcher, Duration::from_secs(2)).await,
                [IpFamily::V4]
            );
            foreign_nft(&["delete", "table", "ip", "kube-proxy"]);
            assert_eq!(
                reported(&mut watcher, Duration::from_secs(2)).await,
                [IpFamily::V4]
            );
            assert_eq!(reported(&mut watcher, Duration::from_millis(300)).await, []);
        })
        .unwrap();
}
