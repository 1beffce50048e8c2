//! How the backend applies rules: partial syncs, stale chains, jump rules,
//! canaries, failures and cleanup, observed through the fake executor.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use std::sync::Arc;

use backend_iptables::fake::FakeExecutor;
use backend_iptables::{IptablesBackend, IptablesFactory};
use proxy_core::backend::BackendFactory;
use proxy_core::{Backend, BackendErrorKind, ChangeSet, IpFamily, NodeView, ServiceTopology};

fn backend(exec: &FakeExecutor) -> IptablesBackend {
    IptablesBackend::with_executor(&common::context(), Arc::new(exec.clone()))
}

/// Service `i` of `topo` gets new endpoint addresses; returns the new view
/// and the change set.
fn move_endpoints(topo: &mut ServiceTopology, old: &NodeView, i: usize) -> (NodeView, ChangeSet) {
    let _ = topo.apply_endpoint_slice(&common::slice(i, 3, 1));
    let mut new = old.clone();
    new.update_service(topo, &common::key(i));
    let changes = ChangeSet::between(old, &new, &[common::key(i)]);
    (new, changes)
}

fn restores(exec: &FakeExecutor) -> Vec<String> {
    exec.take_log()
        .into_iter()
        .filter(|c| c.program.ends_with("-restore"))
        .filter_map(|c| c.stdin)
        .collect()
}

/// A backend on a fake host after a full sync of `services` Services
/// with 2 endpoints each, and the view it synced.
async fn synced(services: usize) -> (FakeExecutor, IptablesBackend, NodeView) {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    let view = common::view(&common::topology(services, 2));
    b.sync(&view, &ChangeSet::full()).await.unwrap();
    exec.take_log();
    (exec, b, view)
}

/// `common::topology(services, 2)` without the Services `removed`.
fn topology_without(services: usize, removed: &[usize]) -> ServiceTopology {
    let mut topo = common::topology(services, 2);
    for i in removed {
        let _ = topo.delete_service("bench", &format!("svc-{i}"));
        let _ = topo.delete_endpoint_slice("bench", &format!("svc-{i}-1"));
    }
    topo
}

/// The state a fresh full sync of `view` leaves.
async fn fresh_dump(view: &NodeView) -> String {
    let fresh = FakeExecutor::new();
    backend(&fresh)
        .sync(view, &ChangeSet::full())
        .await
        .unwrap();
    fresh.dump(IpFamily::V4)
}

#[tokio::test]
async fn a_sync_without_changes_runs_nothing() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    let view = common::view(&common::topology(3, 3));
    let first = b.sync(&view, &ChangeSet::full()).await.unwrap();
    assert!(first.full && first.objects_written > 0);
    exec.take_log();
    let stats = b.sync(&view, &ChangeSet::default()).await.unwrap();
    assert_eq!(stats.objects_written, 0);
    assert!(!stats.full);
    assert_eq!(stats.totals, first.totals, "totals are still reported");
    assert!(exec.take_log().is_empty(), "a no-op sync ran commands");
}

#[tokio::test]
async fn a_partial_sync_writes_only_the_changed_port_and_deletes_its_stale_chains() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    let mut topo = common::topology(3, 3);
    let old = common::view(&topo);
    b.sync(&old, &ChangeSet::full()).await.unwrap();
    let before = exec.dump(IpFamily::V4);
    exec.take_log();

    let (new, changes) = move_endpoints(&mut topo, &old, 1);
    let stats = b.sync(&new, &changes).await.unwrap();
    assert!(!stats.full);
    assert_eq!(stats.ports_written, 1);

    let log = exec.take_log();
    assert_eq!(log.len(), 1, "a partial sync is one restore: {log:?}");
    let input = log[0].stdin.clone().unwrap();
    let svc = |i: usize| {
        let text = b.render(&common::view(&common::topology(3, 3))).unwrap();
        text.lines()
            .find(|l| {
                l.contains(&format!("bench/svc-{i}:http cluster IP"))
                    && l.starts_with("-A KUBE-SERVICES")
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .to_string()
    };
    assert!(
        input.contains(&format!(":{} - [0:0]", svc(1))),
        "changed port rewritten"
    );
    assert!(
        !input.contains(&format!(":{} - [0:0]", svc(0))),
        "unchanged port left out"
    );
    // The top-level chains did not change (same ClusterIP jumps): left out.
    assert!(
        !input.contains("KUBE-SERVICES") && !input.contains("*filter"),
        "{input}"
    );
    // The old endpoints' chains of svc-1 are flushed and deleted.
    let deleted: Vec<&str> = input
        .lines()
        .filter(|l| l.starts_with("-X KUBE-SEP-"))
        .collect();
    assert_eq!(deleted.len(), 3, "{input}");

    // Same state as a fresh full sync of the new view.
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&new).await);
    assert_ne!(exec.dump(IpFamily::V4), before);
}

#[tokio::test]
async fn a_partial_sync_edits_the_top_level_chains_rule_by_rule() {
    let (exec, mut b, old) = synced(3).await;

    // Service 3 added: one insertion, no chain rewritten.
    let added = common::view(&common::topology(4, 2));
    let stats = b
        .sync(&added, &ChangeSet::between(&old, &added, &[common::key(3)]))
        .await
        .unwrap();
    assert!(!stats.full);
    let inputs = restores(&exec);
    assert_eq!(inputs.len(), 1);
    let top: Vec<&str> = inputs[0]
        .lines()
        .filter(|l| l.contains("KUBE-SERVICES") || l.contains("KUBE-NODEPORTS"))
        .collect();
    assert!(
        top.iter().all(|l| l.contains("bench/svc-3:")),
        "only the new Service's top-level rules are written:\n{}",
        inputs[0]
    );
    assert!(
        top.iter().any(|l| l.starts_with("-I KUBE-SERVICES ")),
        "{}",
        inputs[0]
    );
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&added).await);

    // Service 1 removed: its rules deleted by their text.
    let removed = common::view(&topology_without(4, &[1]));
    b.sync(
        &removed,
        &ChangeSet::between(&added, &removed, &[common::key(1)]),
    )
    .await
    .unwrap();
    let inputs = restores(&exec);
    assert!(
        inputs[0]
            .lines()
            .any(|l| l.starts_with("-D KUBE-SERVICES ") && l.contains("bench/svc-1:")),
        "{}",
        inputs[0]
    );
    assert!(
        !inputs[0].contains(":KUBE-SERVICES - [0:0]"),
        "{}",
        inputs[0]
    );
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&removed).await);
}

#[tokio::test]
async fn many_changes_in_one_partial_sync_end_as_a_full_sync() {
    let (exec, mut b, old) = synced(12).await;
    // Services 12 and 13 added, 0 and 7 removed, 5 moved, in one sync.
    let mut topo = topology_without(14, &[0, 7]);
    let _ = topo.apply_endpoint_slice(&common::slice(5, 3, 1));
    let new = common::view(&topo);
    let keys: Vec<_> = [12, 13, 0, 7, 5].into_iter().map(common::key).collect();
    b.sync(&new, &ChangeSet::between(&old, &new, &keys))
        .await
        .unwrap();
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&new).await);
}

#[tokio::test]
async fn a_top_level_rule_missing_from_the_kernel_fails_the_edit_and_the_next_sync_is_full() {
    let (exec, mut b, old) = synced(3).await;
    // Someone deletes Service 1's ClusterIP rule from outside.
    let rule = exec
        .dump(IpFamily::V4)
        .lines()
        .find(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("bench/svc-1:"))
        .unwrap()
        .to_string();
    exec.state()
        .v4
        .restore(&format!("*nat\n-D{}\nCOMMIT\n", &rule[2..]), true)
        .unwrap();
    let new = common::view(&topology_without(3, &[1]));
    let error = b
        .sync(&new, &ChangeSet::between(&old, &new, &[common::key(1)]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Dataplane, "{error}");
    let stats = b
        .sync(&new, &ChangeSet::between(&old, &new, &[common::key(1)]))
        .await
        .unwrap();
    assert!(stats.full, "the retry rewrites everything");
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&new).await);
}

#[tokio::test]
async fn a_full_sync_deletes_stale_service_chains_and_spares_foreign_ones() {
    let exec = FakeExecutor::new();
    exec.state()
        .v4
        .restore(
            "*nat\n:KUBE-SVC-LEFTOVER0000000 - [0:0]\n:KUBE-SEP-LEFTOVER0000000 - [0:0]\n:MY-CHAIN - [0:0]\n-A KUBE-SVC-LEFTOVER0000000 -j KUBE-SEP-LEFTOVER0000000\n-A MY-CHAIN -j RETURN\nCOMMIT\n",
            true,
        )
        .unwrap();
    let mut b = backend(&exec);
    b.sync(&common::view(&common::topology(1, 1)), &ChangeSet::full())
        .await
        .unwrap();
    let dump = exec.dump(IpFamily::V4);
    assert!(!dump.contains("LEFTOVER"), "{dump}");
    assert!(dump.contains("-A MY-CHAIN -j RETURN"), "{dump}");
}

#[tokio::test]
async fn full_syncs_ensure_jump_rules_once() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    let view = common::view(&common::topology(1, 1));
    b.sync(&view, &ChangeSet::full()).await.unwrap();
    b.sync(&view, &ChangeSet::full()).await.unwrap();
    let dump = exec.dump(IpFamily::V4);
    let jumps = |needle: &str| {
        dump.lines()
            .filter(|l| l.starts_with("-A PREROUTING") && l.contains(needle))
            .count()
    };
    assert_eq!(jumps("-j KUBE-SERVICES"), 1, "{dump}");
    assert_eq!(
        dump.lines().filter(|l| l.starts_with("-A FORWARD")).count(),
        4,
        "{dump}"
    );
    // FORWARD keeps upstream's prepend order: the last ensured jump first.
    let first_forward = dump.lines().find(|l| l.starts_with("-A FORWARD")).unwrap();
    assert!(
        first_forward.ends_with("-j KUBE-PROXY-FIREWALL"),
        "{first_forward}"
    );
}

#[tokio::test]
async fn a_failed_restore_keeps_the_old_rules_and_forces_a_full_sync() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    let mut topo = common::topology(3, 3);
    let old = common::view(&topo);
    b.sync(&old, &ChangeSet::full()).await.unwrap();
    let before = exec.dump(IpFamily::V4);
    let (new, changes) = move_endpoints(&mut topo, &old, 2);
    exec.state().fail_restores = 1;
    let err = b.sync(&new, &changes).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Dataplane);
    assert_eq!(exec.dump(IpFamily::V4), before);
    let retry = b.sync(&new, &changes).await.unwrap();
    assert!(retry.full, "the sync after a failure must be full");
}

#[tokio::test]
async fn a_large_cluster_mode_flip_rewrites_everything() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    let small = common::view(&common::topology(100, 10));
    b.sync(&small, &ChangeSet::full()).await.unwrap();
    let topo = common::topology(101, 10);
    let large = common::view(&topo);
    let changes = ChangeSet::between(&small, &large, &[common::key(100)]);
    let stats = b.sync(&large, &changes).await.unwrap();
    assert!(stats.full);
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&large).await);
}

#[tokio::test]
async fn a_flushed_dataplane_is_detected_through_the_mangle_canary() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec);
    assert!(
        !b.dataplane_lost().await,
        "nothing synced yet: nothing to lose"
    );
    let view = common::view(&common::topology(2, 2));
    b.sync(&view, &ChangeSet::full()).await.unwrap();
    let synced = exec.dump(IpFamily::V4);
    assert!(!b.dataplane_lost().await);
    exec.flush_everything(IpFamily::V4);
    assert!(b.dataplane_lost().await);
    // Even a partial change set now leads to a full sync.
    let stats = b.sync(&view, &ChangeSet::partial([])).await.unwrap();
    assert!(stats.full);
    assert_eq!(exec.dump(IpFamily::V4), synced);
}

const FOREIGN: &str = "*filter\n:MY-FW - [0:0]\n-A INPUT -j MY-FW\n-A MY-FW -s 192.0.2.1 -j DROP\nCOMMIT\n*nat\n-A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE\nCOMMIT\n";

#[tokio::test]
async fn cleanup_removes_everything_it_installed_and_nothing_else() {
    let exec = FakeExecutor::new();
    exec.state().v4.restore(FOREIGN, true).unwrap();
    let foreign = exec.dump(IpFamily::V4);
    let mut b = backend(&exec);
    b.sync(&common::view(&common::topology(3, 3)), &ChangeSet::full())
        .await
        .unwrap();
    b.cleanup().await.unwrap();
    assert_eq!(exec.dump(IpFamily::V4), foreign);
}

#[tokio::test]
async fn cleanup_keeps_kube_firewall_when_kubelet_manages_iptables() {
    let exec = FakeExecutor::new();
    exec.state()
        .v4
        .restore("*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n", true)
        .unwrap();
    let mut b = backend(&exec);
    b.sync(&common::view(&common::topology(1, 1)), &ChangeSet::full())
        .await
        .unwrap();
    b.cleanup().await.unwrap();
    let dump = exec.dump(IpFamily::V4);
    let kube: Vec<&str> = dump
        .lines()
        .filter(|l| l.contains("KUBE-") && !l.contains("KUBELET"))
        .collect();
    assert_eq!(
        kube,
        [
            ":KUBE-FIREWALL - [0:0]",
            "-A INPUT -j KUBE-FIREWALL",
            "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            "-A OUTPUT -j KUBE-FIREWALL",
        ],
        "{dump}"
    );
    assert!(!dump.contains("KUBE-SERVICES"), "{dump}");
}

#[tokio::test]
async fn factory_cleans_leftovers_of_both_families() {
    let exec = FakeExecutor::new();
    exec.state().v4.restore(FOREIGN, true).unwrap();
    let foreign = exec.dump(IpFamily::V4);
    let factory = IptablesFactory::with_executor(Arc::new(exec.clone()));
    let v4 = common::context();
    let mut v6 = proxy_core::backend::BackendContext::for_tests(IpFamily::V6, common::node());
    v6.local_detector = proxy_core::backend::LocalTrafficDetector::None;
    let mut b4 = factory.build(&v4).unwrap();
    b4.sync(&common::view(&common::topology(2, 2)), &ChangeSet::full())
        .await
        .unwrap();
    let mut b6 = factory.build(&v6).unwrap();
    b6.sync(
        &NodeView::empty(IpFamily::V6, common::node()),
        &ChangeSet::full(),
    )
    .await
    .unwrap();
    assert!(exec.dump(IpFamily::V6).contains("KUBE-SERVICES"));
    assert!(
        exec.take_log()
            .iter()
            .any(|c| c.program == "ip6tables-nft-restore"),
        "IPv6 goes through ip6tables"
    );
    factory.cleanup_leftovers(&v4).await.unwrap();
    factory.cleanup_leftovers(&v6).await.unwrap();
    assert_eq!(exec.dump(IpFamily::V4), foreign);
    assert_eq!(exec.dump(IpFamily::V6), "");
}

#[tokio::test]
async fn a_chunked_cold_start_ends_like_one_restore_with_the_top_level_chains_last() {
    let view = common::view(&common::topology(5, 2));
    let exec = FakeExecutor::new();
    let mut b = backend(&exec).max_ports_per_restore(Some(2));
    let chunked = b.sync(&view, &ChangeSet::full()).await.unwrap();
    let inputs = restores(&exec);
    assert_eq!(
        inputs.len(),
        4,
        "3 chunks of at most 2 ports, then the top-level chains"
    );
    assert!(
        inputs[..3]
            .iter()
            .all(|i| !i.contains("KUBE-SERVICES") && !i.contains("*filter"))
    );
    assert!(inputs[3].contains(":KUBE-SERVICES - [0:0]") && !inputs[3].contains(":KUBE-SEP-"));
    let single = FakeExecutor::new();
    let one = backend(&single)
        .max_ports_per_restore(None)
        .sync(&view, &ChangeSet::full())
        .await
        .unwrap();
    assert_eq!(restores(&single).len(), 1);
    assert_eq!(exec.dump(IpFamily::V4), single.dump(IpFamily::V4));
    assert_eq!(
        (
            chunked.totals,
            chunked.objects_written,
            chunked.ports_written
        ),
        (one.totals, one.objects_written, one.ports_written),
        "the same rule totals and counts"
    );
    // A partial sync after the chunked one knows every port's chains.
    let (new, changes) = move_endpoints(&mut common::topology(5, 2), &view, 3);
    b.sync(&new, &changes).await.unwrap();
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&new).await);
}

#[tokio::test]
async fn upstreams_way_rewrites_the_top_level_chains_on_every_partial_sync() {
    let exec = FakeExecutor::new();
    let mut b = backend(&exec).rewrite_unchanged_top_level(true);
    let mut topo = common::topology(3, 3);
    let old = common::view(&topo);
    b.sync(&old, &ChangeSet::full()).await.unwrap();
    exec.take_log();
    let (new, changes) = move_endpoints(&mut topo, &old, 1);
    b.sync(&new, &changes).await.unwrap();
    let inputs = restores(&exec);
    assert!(inputs[0].contains("*filter") && inputs[0].contains(":KUBE-SERVICES - [0:0]"));
    assert_eq!(exec.dump(IpFamily::V4), fresh_dump(&new).await);
}

#[tokio::test]
async fn a_chunked_cold_start_reports_each_chunk_as_progress() {
    let view = common::view(&common::topology(5, 2));
    let exec = FakeExecutor::new();
    let ctx = common::context();
    let mut b =
        IptablesBackend::with_executor(&ctx, Arc::new(exec.clone())).max_ports_per_restore(Some(2));
    b.sync(&view, &ChangeSet::full()).await.unwrap();
    assert_eq!(ctx.progress.programmed(), 5, "chunks of 2, 2 and 1 ports");
    // In one restore, the runtime counts the ports of the accepted sync.
    let single = common::context();
    IptablesBackend::with_executor(&single, Arc::new(FakeExecutor::new()))
        .max_ports_per_restore(None)
        .sync(&view, &ChangeSet::full())
        .await
        .unwrap();
    assert_eq!(single.progress.programmed(), 0);
}
