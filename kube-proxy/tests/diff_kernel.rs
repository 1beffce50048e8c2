//! `kube-proxy diff` against the real kernel, for iptables and nftables
//! modes, in throw-away network namespaces: after the sync of every
//! conformance scenario (a full sync of the previous compatible scenario
//! first, then a partial sync to this one, as the daemon does), the live
//! rules equal what the backend renders; and after one rule (iptables: an
//! endpoint's DNAT rule) or one map element (nftables: a `service-ips`
//! entry) is deleted from outside, the diff reports exactly that damage
//! and nothing else.
//!
//! Needs root, iptables and nftables; skips with the reason otherwise
//! (fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;

use kube_proxy::diff::{DiffReport, Status, compare, desired_rules};
use kube_proxy::trace::live::read_live;
use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
use proxy_core::conformance::{Scenario, load_scenarios};
use proxy_core::{Backend, ChangeSet, IpFamily, ProxyMode};

fn tools_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")?;
    check_tool("iptables-save", &["--version"], "iptables")
}

fn backend(mode: ProxyMode, scenario: &Scenario) -> Box<dyn Backend> {
    match mode {
        ProxyMode::Iptables => {
            Box::new(backend_iptables::IptablesBackend::new(scenario.context()).unwrap())
        }
        _ => Box::new(backend_nftables::NftablesBackend::new(scenario.context()).unwrap()),
    }
}

/// Diff of the live rules in the current namespace against `scenario`.
async fn diff(mode: ProxyMode, scenario: &Scenario) -> DiffReport {
    let desired = desired_rules(mode, scenario.context(), scenario.view())
        .await
        .unwrap();
    let live = read_live(mode, scenario.family()).await.unwrap();
    compare(mode, scenario.family(), &desired, &live)
}

/// Deletes one rule or element from outside; returns the service port it
/// served (as the diff names it), the endpoint it DNATs to (if it does),
/// and the command.
fn damage(
    mode: ProxyMode,
    scenario: &Scenario,
) -> Option<(String, Option<std::net::SocketAddr>, Vec<String>)> {
    let family = scenario.family();
    match mode {
        ProxyMode::Iptables => {
            let text = backend(mode, scenario).render(scenario.view()).unwrap();
            let tables = backend_iptables::tables::Tables::parse(&text).unwrap();
            let nat = tables.table("nat")?;
            let (chain, rule) = nat
                .chains
                .iter()
                .filter(|(name, _)| name.starts_with("KUBE-SEP-"))
                .find_map(|(name, c)| {
                    c.rules
                        .iter()
                        .find(|r| r.target() == Some("DNAT"))
                        .map(|r| (name.clone(), r.clone()))
                })?;
            let parsed = backend_iptables::trace::parse(&rule.args).unwrap();
            let backend_iptables::trace::Action::Dnat(to) = parsed.action else {
                return None;
            };
            let comment = rule
                .args
                .iter()
                .position(|a| a == "--comment")
                .map(|i| rule.args[i + 1].clone())?;
            let tool = if family == IpFamily::V4 {
                "iptables"
            } else {
                "ip6tables"
            };
            let mut cmd = vec![
                tool.to_string(),
                "-t".into(),
                "nat".into(),
                "-D".into(),
                chain,
            ];
            cmd.extend(rule.args.clone());
            Some((comment, Some(to), cmd))
        }
        _ => {
            use backend_nftables::ir::{Command, CommandDisplay, Element};
            let fake = backend_nftables::fake::FakeNft::shared();
            let mut b = backend_nftables::NftablesBackend::with_executor(
                scenario.context(),
                Box::new(backend_nftables::fake::FakeExecutor::new(fake.clone())),
            );
            futures_lite_block(b.sync(scenario.view(), &ChangeSet::full())).unwrap();
            let guard = backend_nftables::fake::lock(&fake);
            let table = guard.table(family)?;
            let set = table.sets.get("service-ips")?;
            let (key, (value, comment)) = set.elements.iter().next()?;
            let port = kube_proxy::diff::model::element_group(
                set.def.key,
                key,
                value.as_ref(),
                comment.as_deref(),
            );
            let element = Element {
                set: "service-ips".into(),
                key: key.clone(),
                value: None,
                comment: comment.clone(),
            };
            let script = CommandDisplay {
                family,
                command: &Command::DeleteElement(element),
            }
            .to_string();
            Some((port, None, vec!["nft".into(), script]))
        }
    }
}

/// Runs a future to completion on a throw-away runtime.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn check_mode(mode: ProxyMode) {
    let scenarios = load_scenarios();
    let mut previous: Option<&Scenario> = None;
    let (mut synced, mut damaged) = (0, 0);
    for scenario in &scenarios {
        let caps = backend(mode, scenario).capabilities();
        if !scenario
            .scenario_requirements()
            .into_iter()
            .all(|c| caps.supports(c))
        {
            continue;
        }
        let from = previous.filter(|p| {
            p.family() == scenario.family()
                && p.node() == scenario.node()
                && p.config() == scenario.config()
        });
        let ns = Netns::new().unwrap();
        let name = scenario.name().to_string();
        let damage_plan = damage(mode, scenario);
        let (equal, after) = ns
            .run(|| {
                futures_lite_block(async {
                    let mut b = backend(mode, scenario);
                    if let Some(p) = from {
                        b.sync(p.view(), &ChangeSet::full()).await.unwrap();
                        b.sync(
                            scenario.view(),
                            &ChangeSet::all_between(p.view(), scenario.view()),
                        )
                        .await
                        .unwrap();
                    } else {
                        b.sync(scenario.view(), &ChangeSet::full()).await.unwrap();
                    }
                    let equal = diff(mode, scenario).await;
                    let after = match &damage_plan {
                        Some((_, _, cmd)) => {
                            let status = std::process::Command::new(&cmd[0])
                                .args(&cmd[1..])
                                .status()
                                .unwrap();
                            assert!(status.success(), "{name}: {cmd:?} failed");
                            Some(diff(mode, scenario).await)
                        }
                        None => None,
                    };
                    (equal, after)
                })
            })
            .unwrap();
        assert!(
            equal.equal(),
            "{mode} {name}: after the sync\n{}",
            equal.text()
        );
        synced += 1;
        if let (Some((port, endpoint, cmd)), Some(after)) = (&damage_plan, after) {
            let [d] = after.differences.as_slice() else {
                panic!(
                    "{mode} {name}: after {cmd:?}, expected one difference:\n{}",
                    after.text()
                );
            };
            assert_eq!(&d.service_port, port, "{mode} {name}:\n{}", after.text());
            assert_eq!(
                d.status,
                Status::Different,
                "{mode} {name}:\n{}",
                after.text()
            );
            assert_eq!(d.missing_rules.len(), 1, "{mode} {name}:\n{}", after.text());
            assert!(d.extra_rules.is_empty(), "{mode} {name}:\n{}", after.text());
            let missing: BTreeSet<_> = endpoint.iter().copied().collect();
            assert_eq!(
                d.missing_endpoints,
                missing,
                "{mode} {name}:\n{}",
                after.text()
            );
            damaged += 1;
        }
        previous = Some(scenario);
    }
    assert!(
        synced > 20 && damaged > 10,
        "{mode}: only {synced} syncs, {damaged} damages checked"
    );
    eprintln!(
        "{mode}: diff equal after {synced} syncs; exactly the damage reported {damaged} times"
    );
}

#[test]
fn diff_is_equal_after_syncs_and_names_outside_damage_in_iptables_mode() {
    if !privileged_or_skip_with("diff_..._iptables_mode", tools_present) {
        return;
    }
    check_mode(ProxyMode::Iptables);
}

#[test]
fn diff_is_equal_after_syncs_and_names_outside_damage_in_nftables_mode() {
    if !privileged_or_skip_with("diff_..._nftables_mode", tools_present) {
        return;
    }
    check_mode(ProxyMode::Nftables);
}
