//! The iptables mode against the real kernel, inside throw-away network
//! namespaces (needs root and the iptables package; skips with the reason
//! otherwise, fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::collections::BTreeMap;

use backend_iptables::IptablesBackend;
use proxy_core::conformance::netns::{
    Netns, assert_only_missing_sctp_skipped, check_tool, kernel_harness_factory,
    privileged_or_skip_with,
};
use proxy_core::conformance::{Scenario, Tier, load_scenarios, run};
use proxy_core::{Backend, ChangeSet, NodeView};

fn iptables_present() -> Result<(), String> {
    check_tool("iptables-restore", &["--version"], "iptables")
}

/// Every conformance scenario with real connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_in_the_kernel() {
    if !privileged_or_skip_with("conformance_suite_passes_in_the_kernel", iptables_present) {
        return;
    }
    let factory =
        kernel_harness_factory(|ctx| Ok(Box::new(IptablesBackend::new(ctx)?) as Box<dyn Backend>));
    let report = run(&factory, Tier::Kernel).await;
    println!("{report}");
    report.assert_passed();
    // Only what this kernel lacks may be skipped.
    assert_only_missing_sctp_skipped(&report);
}

/// The kube-proxy chains of `table` in `ns` (`iptables-save`, the
/// kernel's normalised text): chain → its rules, in order. Two syncs are
/// compared by it, rule order included.
fn kube_rules(ns: &Netns, table: &str) -> BTreeMap<String, Vec<String>> {
    ns.run(|| kube_rules_here(table)).unwrap()
}

/// [`kube_rules`] of the calling thread's namespace.
fn kube_rules_here(table: &str) -> BTreeMap<String, Vec<String>> {
    let out = std::process::Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iptables-save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(chain) = line
            .strip_prefix(':')
            .and_then(|l| l.split_whitespace().next())
        {
            if chain.starts_with("KUBE-") {
                rules.entry(chain.to_string()).or_default();
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            rules
                .entry(chain.to_string())
                .or_default()
                .push(rule.to_string());
        }
    }
    rules
}

/// Runs `f` with a fresh backend for `scenario` inside a fresh namespace,
/// on a current-thread runtime there (so `iptables` runs in it).
fn in_namespace<T: Send>(
    ns: &Netns,
    scenario: &Scenario,
    f: impl AsyncFnOnce(&mut IptablesBackend) -> T + Send,
) -> T {
    ns.block_on(|| async {
        let mut backend = IptablesBackend::new(scenario.context()).unwrap();
        f(&mut backend).await
    })
    .unwrap()
}

/// A partial sync from one scenario to the next (Services added and
/// removed: top-level rules deleted and inserted one by one) leaves the
/// kernel with the same chains and rules, in the same order, as a full
/// sync of the second; cleanup then leaves no kube-proxy chain in any
/// table.
#[test]
fn partial_sync_and_cleanup_in_the_kernel() {
    if !privileged_or_skip_with("partial_sync_and_cleanup_in_the_kernel", iptables_present) {
        return;
    }
    let scenarios: Vec<Scenario> = load_scenarios()
        .into_iter()
        .filter(|s| s.family() == proxy_core::IpFamily::V4)
        .collect();
    let mut checked = 0;
    for pair in scenarios.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.config() != b.config() || a.node() != b.node() {
            continue;
        }
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
        for table in ["nat", "filter", "mangle"] {
            assert_eq!(
                kube_rules(&partial_ns, table),
                kube_rules(&full_ns, table),
                "{table}: partial {} -> {} differs from a full sync",
                a.name(),
                b.name()
            );
        }
        in_namespace(&partial_ns, b, async |backend| {
            backend.cleanup().await.unwrap()
        });
        for table in ["nat", "filter", "mangle"] {
            assert_eq!(
                kube_rules(&partial_ns, table),
                BTreeMap::new(),
                "{table} after cleanup"
            );
        }
        checked += 1;
    }
    assert!(
        checked > 10,
        "only {checked} scenario pairs were compatible"
    );
}

/// After `iptables -F`/`-X` of every table (a firewall reload), the backend
/// notices the missing canary and a full sync restores everything.
#[test]
fn flushed_rules_are_detected_and_restored() {
    if !privileged_or_skip_with("flushed_rules_are_detected_and_restored", iptables_present) {
        return;
    }
    let scenario = load_scenarios()
        .into_iter()
        .find(|s| s.name() == "nodeport-cluster")
        .unwrap();
    let ns = Netns::new().unwrap();
    in_namespace(&ns, &scenario, async |backend| {
        backend
            .sync(scenario.view(), &ChangeSet::full())
            .await
            .unwrap();
        assert!(!backend.dataplane_lost().await);
        let before = (kube_rules_here("nat"), kube_rules_here("filter"));
        for table in ["mangle", "nat", "filter"] {
            for flag in ["-F", "-X"] {
                let ok = std::process::Command::new("iptables")
                    .args(["-t", table, flag])
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
        }
        assert!(backend.dataplane_lost().await);
        // The runtime answers with a full change set.
        let stats = backend
            .sync(scenario.view(), &ChangeSet::full())
            .await
            .unwrap();
        assert!(stats.full);
        assert_eq!((kube_rules_here("nat"), kube_rules_here("filter")), before);
        assert!(!backend.dataplane_lost().await);
    });
}

fn scenario_named(name: &str) -> Scenario {
    load_scenarios()
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// Partial syncs that remove and add back a Service whose name, port name
/// and comments are at their maximum length (`-D` and `-I` of its
/// top-level rules by their text), then the same removal after someone
/// deleted one of its `KUBE-SERVICES` rules from outside: the restore
/// fails (nothing applied), and the next sync is full and repairs. After
/// each step the kube chains are exactly those of a full sync of the same
/// view, in order.
#[test]
fn top_level_edits_with_long_names_and_a_rule_removed_from_outside() {
    if !privileged_or_skip_with(
        "top_level_edits_with_long_names_and_a_rule_removed_from_outside",
        iptables_present,
    ) {
        return;
    }
    let scenario = scenario_named("long-names");
    let all = scenario.view().clone();
    let key = scenario
        .services()
        .into_iter()
        .find(|k| k.name.starts_with("service-with-endpoints-"))
        .unwrap();
    let mut topology = scenario.topology().clone();
    let _ = topology.delete_service(&key.namespace, &key.name);
    let mut without = all.clone();
    without.update_service(&topology, &key);
    assert!(without.len() < all.len());

    let full_of = |view: &NodeView| {
        let ns = Netns::new().unwrap();
        in_namespace(&ns, &scenario, async |backend| {
            backend.sync(view, &ChangeSet::full()).await.unwrap();
        });
        (kube_rules(&ns, "nat"), kube_rules(&ns, "filter"))
    };
    let (want_all, want_without) = (full_of(&all), full_of(&without));
    let removed = ChangeSet::all_between(&all, &without);
    let added = ChangeSet::all_between(&without, &all);

    let ns = Netns::new().unwrap();
    let rules = || (kube_rules(&ns, "nat"), kube_rules(&ns, "filter"));
    let comment = &key.name[..20];
    in_namespace(&ns, &scenario, async |backend| {
        backend.sync(&all, &ChangeSet::full()).await.unwrap();
        for (view, changes, want) in [
            (&without, &removed, &want_without),
            (&all, &added, &want_all),
        ] {
            let stats = backend.sync(view, changes).await.unwrap();
            assert!(!stats.full);
            assert_eq!(&(kube_rules_here("nat"), kube_rules_here("filter")), want);
        }
        // Its ClusterIP rule, deleted from outside.
        let out = std::process::Command::new("iptables")
            .args(["-t", "nat", "-S", "KUBE-SERVICES"])
            .output()
            .unwrap();
        let listed = String::from_utf8(out.stdout).unwrap();
        let rule = listed
            .lines()
            .find(|l| l.contains(comment) && l.contains("cluster IP"))
            .unwrap_or_else(|| panic!("no rule of {comment} in\n{listed}"));
        let spec: Vec<&str> = shell_words(&rule[3..]);
        let ok = std::process::Command::new("iptables")
            .args(["-t", "nat", "-D"])
            .args(&spec)
            .status()
            .unwrap();
        assert!(ok.success());
        backend
            .sync(&without, &removed)
            .await
            .expect_err("deleting a rule the kernel does not hold fails the restore");
        let stats = backend.sync(&without, &removed).await.unwrap();
        assert!(stats.full, "the sync after a refused restore is full");
    });
    assert_eq!(rules(), want_without);
}

/// `iptables -S` arguments, quoted comments kept whole (no escapes occur
/// in our rules).
fn shell_words(line: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (word, tail) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        words.push(word);
        rest = tail.trim_start();
    }
    words
}

/// A full sync written in chunks (one port per restore here; 500 with
/// iptables-nft by default) leaves the kernel with the same kube chains,
/// in order, as one restore of everything.
#[test]
fn a_chunked_full_sync_writes_what_one_restore_writes() {
    if !privileged_or_skip_with(
        "a_chunked_full_sync_writes_what_one_restore_writes",
        iptables_present,
    ) {
        return;
    }
    let scenario = scenario_named("long-names");
    let written = |chunk: Option<usize>| {
        let ns = Netns::new().unwrap();
        ns.block_on(|| async {
            let mut backend = IptablesBackend::new(scenario.context())
                .unwrap()
                .max_ports_per_restore(chunk);
            backend
                .sync(scenario.view(), &ChangeSet::full())
                .await
                .unwrap()
        })
        .unwrap();
        (kube_rules(&ns, "nat"), kube_rules(&ns, "filter"))
    };
    assert!(scenario.view().len() > 1, "several chunks");
    assert_eq!(written(Some(1)), written(None));
}
