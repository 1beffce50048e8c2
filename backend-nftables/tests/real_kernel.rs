//! nftables mode against the real kernel, inside throw-away network
//! namespaces (needs root and `nft`; skips with the reason otherwise, fails
//! instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use backend_nftables::NftablesBackend;
use proxy_core::backend::BackendContext;
use proxy_core::conformance::netns::{
    Netns, assert_only_missing_sctp_skipped, check_tool, kernel_harness_factory,
    privileged_or_skip_with, run_tool,
};
use proxy_core::conformance::{Scenario, Tier, load_scenarios, run, run_scenarios};
use proxy_core::{Backend, ChangeSet, NodeInfo};

fn nft_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")
}

/// Every conformance scenario with real connections (the scenario files
/// record nftables mode's own outcomes where it differs from iptables mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_in_the_kernel() {
    if !privileged_or_skip_with("conformance_suite_passes_in_the_kernel", nft_present) {
        return;
    }
    let factory =
        kernel_harness_factory(|ctx| Ok(Box::new(NftablesBackend::new(ctx)?) as Box<dyn Backend>));
    let report = run(&factory, Tier::Kernel).await;
    report.assert_passed();
    // Only what this kernel lacks may be skipped.
    assert_only_missing_sctp_skipped(&report);
}

/// Runs the `nodeport-addresses` scenario (`nodePortAddresses:
/// [10.0.0.0/24]`, node IP 10.0.0.1 on the node namespace's uplink) with
/// the backend built from `adjust(ctx)`.
async fn nodeport_addresses_with(adjust: fn(&mut BackendContext)) {
    let scenario = scenario_named("nodeport-addresses");
    let factory = kernel_harness_factory(move |ctx| {
        let mut ctx = ctx.clone();
        adjust(&mut ctx);
        Ok(Box::new(NftablesBackend::new(&ctx)?) as Box<dyn Backend>)
    });
    let report = run_scenarios(&factory, Tier::Kernel, &[scenario]).await;
    report.assert_passed();
    assert_eq!(report.scenarios.len(), 1);
}

/// Node ports are served on the local addresses inside `nodePortAddresses`,
/// as upstream (`GetNodeIPs` over the interfaces): a Node object that lists
/// no address (`--manifests` without a Node) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_follow_local_addresses_not_the_node_object() {
    if !privileged_or_skip_with(
        "node_ports_follow_local_addresses_not_the_node_object",
        nft_present,
    ) {
        return;
    }
    nodeport_addresses_with(|ctx| {
        ctx.node = NodeInfo::named(ctx.node.name.clone()).shared();
    })
    .await;
}

/// Overlapping networks (`primary` inside a configured CIDR) are merged
/// before they reach the interval set, which the kernel requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_node_port_networks_are_accepted() {
    if !privileged_or_skip_with("overlapping_node_port_networks_are_accepted", nft_present) {
        return;
    }
    nodeport_addresses_with(|ctx| {
        if let Some(cidrs) = ctx.node_port_cidrs.as_mut() {
            cidrs.push("10.0.0.1/32".parse().unwrap());
        }
    })
    .await;
}

fn in_namespace<T: Send>(
    ns: &Netns,
    scenario: &Scenario,
    f: impl AsyncFnOnce(&mut NftablesBackend) -> T + Send,
) -> T {
    ns.block_on(|| async {
        let mut backend = NftablesBackend::new(scenario.context()).unwrap();
        f(&mut backend).await
    })
    .unwrap()
}

/// `nft list table` of our table in `ns`, with handles and set element
/// order (hash dependent) normalised away: rules as lines, sorted.
fn listing(ns: &Netns, family: &str) -> Option<Vec<String>> {
    let out = ns
        .command("nft")
        .args(["list", "table", family, "kube-proxy"])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    Some(lines)
}

/// A partial sync from one scenario to the next is accepted by the kernel
/// and leaves the same table as a full sync of the second (flushed stale
/// chains aside); cleanup removes the table.
#[test]
fn partial_sync_and_cleanup_in_the_kernel() {
    if !privileged_or_skip_with("partial_sync_and_cleanup_in_the_kernel", nft_present) {
        return;
    }
    let scenarios: Vec<Scenario> = load_scenarios();
    let mut checked = 0;
    for pair in scenarios.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.config() != b.config() || a.node() != b.node() || a.family() != b.family() {
            continue;
        }
        let fam = if a.family() == proxy_core::IpFamily::V4 {
            "ip"
        } else {
            "ip6"
        };
        let partial_ns = Netns::new().unwrap();
        in_namespace(&partial_ns, b, async |backend| {
            backend.sync(a.view(), &ChangeSet::full()).await.unwrap();
            let stats = backend
                .sync(b.view(), &ChangeSet::all_between(a.view(), b.view()))
                .await
                .unwrap();
            assert!(
                !stats.full,
                "{} -> {}: expected a partial sync",
                a.name(),
                b.name()
            );
        });
        let full_ns = Netns::new().unwrap();
        in_namespace(&full_ns, b, async |backend| {
            backend.sync(b.view(), &ChangeSet::full()).await.unwrap();
        });
        let partial = listing(&partial_ns, fam);
        let full = listing(&full_ns, fam);
        // Stale chains of `a` remain (flushed) in the partial table until
        // their delayed deletion; compare everything but chain headers.
        let no_headers = |l: &Option<Vec<String>>| -> Vec<String> {
            l.clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|x| !x.starts_with("chain ") && x != "}")
                .collect()
        };
        assert_eq!(
            no_headers(&partial),
            no_headers(&full),
            "partial {} -> {} differs from a full sync",
            a.name(),
            b.name()
        );
        in_namespace(&partial_ns, b, async |backend| {
            backend.cleanup().await.unwrap()
        });
        assert_eq!(listing(&partial_ns, fam), None, "table left after cleanup");
        checked += 1;
    }
    assert!(
        checked > 10,
        "only {checked} scenario pairs were compatible"
    );
}

/// Deleting our table from outside is noticed, and a full sync restores it.
#[test]
fn deleted_table_is_detected_and_restored() {
    full_sync_restores_after_outside(
        "deleted_table_is_detected_and_restored",
        &["delete", "table", "ip", "kube-proxy"],
        true,
    );
}

/// A full sync that was not told the table is gone (the change watcher
/// asks for one after `nft flush ruleset` from outside) rewrites every
/// object, set elements included, from the model it keeps.
#[test]
fn a_full_sync_rewrites_everything_after_an_outside_flush() {
    full_sync_restores_after_outside(
        "a_full_sync_rewrites_everything_after_an_outside_flush",
        &["flush", "ruleset"],
        false,
    );
}

/// A fresh backend syncs `nodeport-cluster` over an existing table, then
/// `nft DAMAGE` runs from outside; with `detected`, `dataplane_lost` must
/// notice it first. The next full sync must leave the table as a first
/// sync wrote it.
fn full_sync_restores_after_outside(test: &str, damage: &[&str], detected: bool) {
    if !privileged_or_skip_with(test, nft_present) {
        return;
    }
    let scenario = scenario_named("nodeport-cluster");
    let ns = Netns::new().unwrap();
    in_namespace(&ns, &scenario, async |backend| {
        backend
            .sync(scenario.view(), &ChangeSet::full())
            .await
            .unwrap();
    });
    let before = listing(&ns, "ip").unwrap();
    in_namespace(&ns, &scenario, async |backend| {
        // A fresh backend finds the table and resets it in one transaction.
        backend
            .sync(scenario.view(), &ChangeSet::full())
            .await
            .unwrap();
        assert!(!backend.dataplane_lost().await);
        run_tool("nft", damage, "").unwrap();
        if detected {
            assert!(backend.dataplane_lost().await);
        }
        let stats = backend
            .sync(scenario.view(), &ChangeSet::full())
            .await
            .unwrap();
        assert!(stats.full);
    });
    assert_eq!(listing(&ns, "ip").unwrap(), before);
}

fn scenario_named(name: &str) -> Scenario {
    load_scenarios()
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap()
}
