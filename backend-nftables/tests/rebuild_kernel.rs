//! nftables mode rebuilds from an empty model when the kernel no longer
//! matches it: after our table was deleted from outside (`dataplane_lost`),
//! and after a full sync failed (here: because a chain it meant to delete
//! was deleted from outside). Real kernel, real connections, inside
//! throw-away network namespaces (needs root and `nft`; skips with the
//! reason otherwise, fails instead when
//! `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).
//!
//! Both cases need a model that differs from a fresh one: the `api`
//! Service is removed first, so its chains are flushed and wait (1 s) as
//! stale chains the next sync deletes. Diffing against that model after
//! the table was recreated, or after one of those chains was deleted from
//! outside, asks the kernel to delete a chain it does not have, and fails
//! on every retry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::sync::Arc;
use std::time::Duration;

use backend_nftables::NftablesBackend;
use proxy_core::conformance::netns::{
    KernelHarness, MakeBackend, Netns, check_tool, privileged_or_skip_with,
};
use proxy_core::conformance::{Harness, Outcome, Packet, Scenario};
use proxy_core::{Backend, ChangeSet, NodeView, ServiceKey};

const SCENARIO: &str = r#"
name: rebuild
description: >
  two services with a local endpoint each; api is a NodePort service, which
  has chains of its own (ClusterIP-only ones share load-balancing chains)
config:
  clusterCIDR: 10.244.0.0/16
objects:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      clusterIP: 10.96.0.10
      ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
    addressType: IPv4
    ports: [{name: http, port: 8080, protocol: TCP}]
    endpoints:
      - {addresses: [10.244.1.10], nodeName: node-a, conditions: {ready: true}}
  - apiVersion: v1
    kind: Service
    metadata: {name: api, namespace: default}
    spec:
      type: NodePort
      clusterIP: 10.96.0.11
      ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}
    addressType: IPv4
    ports: [{name: http, port: 8080, protocol: TCP}]
    endpoints:
      - {addresses: [10.244.1.11], nodeName: node-a, conditions: {ready: true}}
packets:
  - origin: local_pod
    source: 10.244.1.20
    destination: 10.96.0.10
    port: 80
    expect:
      forwarded: {endpoints: ["10.244.1.10:8080"], masqueraded: false}
"#;

fn nft_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")
}

fn scenario() -> Scenario {
    Scenario::from_yaml("rebuild", SCENARIO).unwrap()
}

/// The scenario's view without the `api` Service.
fn without_api(scenario: &Scenario) -> NodeView {
    let mut topology = scenario.topology().clone();
    topology.delete_service("default", "api").unwrap();
    NodeView::build(&topology, scenario.node().clone(), scenario.family())
}

fn to_web() -> Packet {
    scenario().packets()[0].packet.clone()
}

fn forwarded_to_web(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Forwarded { endpoints, .. }
        if endpoints.iter().map(ToString::to_string).collect::<Vec<_>>() == ["10.244.1.10:8080"])
}

/// `nft …` inside `ns`; panics unless it succeeds.
fn nft(ns: &Netns, args: &[&str]) -> String {
    let out = ns.command("nft").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A harness synced with both services, then with `api` removed (its
/// chains stale), and the stale chains due for deletion.
async fn harness_with_stale_chains(scenario: &Scenario) -> (KernelHarness, NodeView) {
    let make: Arc<MakeBackend> =
        Arc::new(|ctx| Ok(Box::new(NftablesBackend::new(ctx)?) as Box<dyn Backend>));
    let mut harness = KernelHarness::new(scenario.context(), make).unwrap();
    harness
        .backend()
        .sync(scenario.view(), &ChangeSet::full())
        .await
        .unwrap();
    assert!(forwarded_to_web(&harness.send(&to_web()).await.unwrap()));
    let web_only = without_api(scenario);
    let changes = ChangeSet::between(
        scenario.view(),
        &web_only,
        &[ServiceKey::new("default", "api")],
    );
    let stats = harness.backend().sync(&web_only, &changes).await.unwrap();
    assert!(!stats.full);
    // Past the stale-chain delay: the next sync deletes them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    (harness, web_only)
}

/// The chains of the `api` Service still in the table (flushed, stale).
fn api_chains(ns: &Netns) -> Vec<String> {
    nft(ns, &["list", "chains", "ip"])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.contains("/api/"))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_table_is_rebuilt_from_an_empty_model() {
    if !privileged_or_skip_with("a_lost_table_is_rebuilt_from_an_empty_model", nft_present) {
        return;
    }
    let scenario = scenario();
    let (mut harness, web_only) = harness_with_stale_chains(&scenario).await;
    let node = harness.topology().node().try_clone().unwrap();
    assert!(!api_chains(&node).is_empty(), "api's chains wait as stale");

    nft(&node, &["delete", "table", "ip", "kube-proxy"]);
    assert!(!forwarded_to_web(&harness.send(&to_web()).await.unwrap()));
    // What the runtime does every syncPeriod: check, then a full sync.
    assert!(harness.backend().dataplane_lost().await);
    let stats = harness
        .backend()
        .sync(&web_only, &ChangeSet::full())
        .await
        .expect("the full sync after the table was lost");
    assert!(stats.full);
    assert!(forwarded_to_web(&harness.send(&to_web()).await.unwrap()));
    assert!(api_chains(&node).is_empty());
    assert!(!harness.backend().dataplane_lost().await);

    // And the rebuilt model serves partial syncs again.
    let changes = ChangeSet::between(
        &web_only,
        scenario.view(),
        &[ServiceKey::new("default", "api")],
    );
    let stats = harness
        .backend()
        .sync(scenario.view(), &changes)
        .await
        .unwrap();
    assert!(!stats.full);
    assert!(forwarded_to_web(&harness.send(&to_web()).await.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_full_sync_is_followed_by_one_from_an_empty_model() {
    if !privileged_or_skip_with(
        "a_failed_full_sync_is_followed_by_one_from_an_empty_model",
        nft_present,
    ) {
        return;
    }
    let scenario = scenario();
    let (mut harness, web_only) = harness_with_stale_chains(&scenario).await;
    let node = harness.topology().node().try_clone().unwrap();
    let stale = api_chains(&node);
    assert!(!stale.is_empty(), "api's chains wait as stale");
    // A stale chain is flushed and unreferenced: it can be deleted from
    // outside, and our model still plans to delete it.
    nft(&node, &["delete", "chain", "ip", "kube-proxy", &stale[0]]);

    let first = harness.backend().sync(&web_only, &ChangeSet::full()).await;
    let second = harness.backend().sync(&web_only, &ChangeSet::full()).await;
    assert!(
        first.is_ok() || second.is_ok(),
        "the full sync after a failed one starts from an empty model: {first:?} then {second:?}"
    );
    assert!(forwarded_to_web(&harness.send(&to_web()).await.unwrap()));
    assert!(api_chains(&node).is_empty(), "stale chains are gone");

    // The service is programmed in full: a new one gets its own chains too.
    let changes = ChangeSet::between(
        &web_only,
        scenario.view(),
        &[ServiceKey::new("default", "api")],
    );
    harness
        .backend()
        .sync(scenario.view(), &changes)
        .await
        .unwrap();
    assert!(!api_chains(&node).is_empty());
    assert!(forwarded_to_web(&harness.send(&to_web()).await.unwrap()));
}
