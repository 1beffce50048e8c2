//! The suite runner: every scenario against fresh harnesses.

use std::collections::BTreeSet;

use crate::backend::{BackendError, Capabilities, Capability};
use crate::changes::ChangeSet;
use crate::view::NodeView;

use super::catalog::load_scenarios;
use super::harness::{Harness, HarnessFactory};
use super::report::{PacketResult, Report, ScenarioReport, ScenarioStatus};
use super::scenario::Scenario;
use super::tier::Tier;

/// Runs every embedded scenario ([`load_scenarios`]) against harnesses from
/// `factory`. See [`run_scenarios`].
pub async fn run(factory: &dyn HarnessFactory, tier: Tier) -> Report {
    run_scenarios(factory, tier, &load_scenarios()).await
}

/// Runs `scenarios` against harnesses from `factory`, each on a fresh
/// harness:
///
/// 1. Scenarios needing a capability the harness lacks are skipped, with
///    the capabilities named.
/// 2. `backend().sync(view, ChangeSet::full())`, then every packet of the
///    tier through [`Harness::send`], compared with the expectation (without
///    the `masqueraded` flag when the harness cannot preserve client IPs).
/// 3. Where [`Harness::dump`] gives a dump (the fake tier), state checks:
///    - a second sync with an empty change set writes nothing
///      (`SyncStats::objects_written == 0`) and changes nothing;
///    - `cleanup()` leaves the dump of a never-synced harness;
///    - a partial sync (change set [`ChangeSet::between`] the two views over
///      the services of both) from the empty view to the scenario, from the
///      scenario to the empty view, and from the previous scenario with the
///      same family, node and configuration to this one, each ends with the
///      dump of a full sync of the target.
///
/// The kernel tier sends packets only. Harness errors fail the scenario.
pub async fn run_scenarios(
    factory: &dyn HarnessFactory,
    tier: Tier,
    scenarios: &[Scenario],
) -> Report {
    let mut report = Report {
        tier,
        scenarios: Vec::with_capacity(scenarios.len()),
    };
    let mut previous: Option<&Scenario> = None;
    for scenario in scenarios {
        let compatible = previous.filter(|p| compatible(p, scenario));
        let result = run_one(factory, tier, scenario, compatible).await;
        tracing::info!(scenario = scenario.name(), status = ?result.status, "conformance scenario");
        // Chain partial syncs only through scenarios the harness can run.
        if !matches!(result.status, ScenarioStatus::Skipped(_)) {
            previous = Some(scenario);
        }
        report.scenarios.push(result);
    }
    report
}

/// Whether a backend built for `a` can be partially synced to `b`.
fn compatible(a: &Scenario, b: &Scenario) -> bool {
    a.family() == b.family() && a.node() == b.node() && a.config() == b.config()
}

fn missing(caps: &Capabilities, required: Vec<Capability>) -> Vec<Capability> {
    required
        .into_iter()
        .filter(|c| !caps.supports(*c))
        .collect()
}

/// Why something needing `missing` is skipped: "requires a, b", with the
/// harness's own reasons ([`Harness::missing_reason`]) after a `;`.
fn skip_reason(harness: &mut dyn Harness, missing: &[Capability]) -> String {
    let mut names = Vec::new();
    let mut reasons = Vec::new();
    for &c in missing {
        match harness.missing_reason(c) {
            Some(reason) => reasons.push(reason),
            None => names.push(capability_name(c)),
        }
    }
    let mut parts = Vec::new();
    if !names.is_empty() {
        parts.push(format!("requires {}", names.join(", ")));
    }
    parts.extend(reasons);
    parts.join("; ")
}

/// The scenario-file name of `capability` (`session_affinity`).
fn capability_name(capability: Capability) -> String {
    match serde_json::to_value(capability) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{capability:?}"),
    }
}

async fn run_one(
    factory: &dyn HarnessFactory,
    tier: Tier,
    scenario: &Scenario,
    previous: Option<&Scenario>,
) -> ScenarioReport {
    let name = scenario.name();
    let mut harness = match factory.harness(scenario.context()) {
        Ok(h) => h,
        Err(e) => {
            let mut r = ScenarioReport::new(name);
            r.check("build harness", Err(e.to_string()));
            r.finish();
            return r;
        }
    };
    let caps = harness.capabilities();
    let missing_here = missing(&caps, scenario.scenario_requirements());
    if !missing_here.is_empty() {
        return ScenarioReport::skipped(name, skip_reason(harness.as_mut(), &missing_here));
    }
    // Packets needing what the backend lacks are skipped one by one; a
    // scenario with none left is skipped as a whole.
    let unsupported: Vec<Option<String>> = scenario
        .packets()
        .iter()
        .map(|p| {
            let m = missing(&caps, scenario.packet_requirements(p));
            (!m.is_empty()).then(|| skip_reason(harness.as_mut(), &m))
        })
        .collect();
    if unsupported.iter().all(Option::is_some) {
        let all = missing(&caps, scenario.requirements());
        return ScenarioReport::skipped(name, skip_reason(harness.as_mut(), &all));
    }

    let mut report = ScenarioReport::new(name);
    let synced = harness
        .backend()
        .sync(scenario.view(), &ChangeSet::full())
        .await;
    report.check("full sync", synced.map(|_| ()).map_err(|e| e.to_string()));
    if report.checks.iter().all(|c| c.failure.is_none()) {
        send_packets(
            harness.as_mut(),
            tier,
            scenario,
            &unsupported,
            caps.preserves_client_ip,
            &mut report,
        )
        .await;
        if tier == Tier::Fake {
            state_checks(factory, harness.as_mut(), scenario, previous, &mut report).await;
        }
    }
    report.finish();
    report
}

async fn send_packets(
    harness: &mut dyn Harness,
    tier: Tier,
    scenario: &Scenario,
    unsupported: &[Option<String>],
    compare_masquerade: bool,
    report: &mut ScenarioReport,
) {
    for (p, missing) in scenario.packets().iter().zip(unsupported) {
        if !p.runs_in(tier) {
            report.packets_skipped += 1;
            continue;
        }
        if let Some(reason) = missing {
            report
                .packets_unsupported
                .push((p.packet.clone(), reason.clone()));
            continue;
        }
        let expected = p.expected_in(harness.backend().mode());
        let actual = harness.send(&p.packet).await.map_err(|e| e.to_string());
        let sticky = tier == Tier::Kernel && scenario.has_affinity(&p.packet);
        let passed = actual.as_ref().is_ok_and(|a| {
            if sticky {
                expected.accepts_sticky(a, compare_masquerade)
            } else {
                expected.accepts(a, compare_masquerade)
            }
        });
        report.packets.push(PacketResult {
            packet: p.packet.clone(),
            expected: expected.clone(),
            actual,
            passed,
        });
    }
}

/// The state checks of the fake tier; `harness` is fully synced to
/// `scenario`.
async fn state_checks(
    factory: &dyn HarnessFactory,
    harness: &mut dyn Harness,
    scenario: &Scenario,
    previous: Option<&Scenario>,
    report: &mut ScenarioReport,
) {
    let Some(full) = harness.dump().await else {
        return;
    };
    let empty = NodeView::empty(scenario.family(), scenario.node().clone());

    // A no-op sync writes nothing and changes nothing.
    let noop = match harness
        .backend()
        .sync(scenario.view(), &ChangeSet::default())
        .await
    {
        Ok(stats) if stats.objects_written != 0 => Err(format!(
            "wrote {} objects (expected 0): {stats:?}",
            stats.objects_written
        )),
        Ok(_) => same_dump("after the no-op sync", &full, harness.dump().await),
        Err(e) => Err(e.to_string()),
    };
    report.check("no-op sync writes nothing", noop);

    // Cleanup leaves what a never-synced harness has.
    let cleaned = match harness.backend().cleanup().await {
        Ok(()) => match pristine_dump(factory, scenario).await {
            Ok(pristine) => same_dump(
                "after cleanup (left: never synced)",
                &pristine,
                harness.dump().await,
            ),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.to_string()),
    };
    report.check("cleanup leaves nothing behind", cleaned);

    // Partial syncs end where full syncs do.
    let empty_full = match synced_dump(factory, scenario, &empty).await {
        Ok(d) => d,
        Err(e) => {
            report.check("full sync of the empty view", Err(e));
            return;
        }
    };
    let result = partial_then_dump(factory, scenario, &empty, scenario.view()).await;
    report.check(
        "partial sync empty -> scenario equals full sync",
        result.and_then(|d| same_dump("(left: full sync)", &full, Some(d))),
    );
    let result = partial_then_dump(factory, scenario, scenario.view(), &empty).await;
    report.check(
        "partial sync scenario -> empty equals full sync",
        result.and_then(|d| same_dump("(left: full sync)", &empty_full, Some(d))),
    );
    if let Some(prev) = previous {
        let result = partial_then_dump(factory, scenario, prev.view(), scenario.view()).await;
        report.check(
            format!("partial sync {} -> scenario equals full sync", prev.name()),
            result.and_then(|d| same_dump("(left: full sync)", &full, Some(d))),
        );
    }
}

fn harness_error(what: &str, e: BackendError) -> String {
    format!("{what}: {e}")
}

async fn pristine_dump(
    factory: &dyn HarnessFactory,
    scenario: &Scenario,
) -> Result<String, String> {
    let mut h = factory
        .harness(scenario.context())
        .map_err(|e| harness_error("build harness", e))?;
    h.dump()
        .await
        .ok_or_else(|| "a fresh harness has no dump".to_string())
}

async fn synced_dump(
    factory: &dyn HarnessFactory,
    scenario: &Scenario,
    view: &NodeView,
) -> Result<String, String> {
    let mut h = factory
        .harness(scenario.context())
        .map_err(|e| harness_error("build harness", e))?;
    h.backend()
        .sync(view, &ChangeSet::full())
        .await
        .map_err(|e| harness_error("full sync", e))?;
    h.dump().await.ok_or_else(|| "no dump".to_string())
}

/// A fresh harness fully synced to `from`, then partially to `to`; its dump.
async fn partial_then_dump(
    factory: &dyn HarnessFactory,
    scenario: &Scenario,
    from: &NodeView,
    to: &NodeView,
) -> Result<String, String> {
    let mut h = factory
        .harness(scenario.context())
        .map_err(|e| harness_error("build harness", e))?;
    h.backend()
        .sync(from, &ChangeSet::full())
        .await
        .map_err(|e| harness_error("full sync", e))?;
    let changes = ChangeSet::all_between(from, to);
    h.backend()
        .sync(to, &changes)
        .await
        .map_err(|e| harness_error("partial sync", e))?;
    h.dump().await.ok_or_else(|| "no dump".to_string())
}

fn same_dump(what: &str, want: &str, got: Option<String>) -> Result<(), String> {
    let Some(got) = got else {
        return Err(format!("{what}: no dump"));
    };
    if want == got {
        return Ok(());
    }
    Err(format!("dumps differ {what}:\n{}", line_diff(want, &got)))
}

/// The lines only in `left` (`-`) or only in `right` (`+`), at most 20.
fn line_diff(left: &str, right: &str) -> String {
    let l: BTreeSet<&str> = left.lines().collect();
    let r: BTreeSet<&str> = right.lines().collect();
    let mut out: Vec<String> = l.difference(&r).map(|s| format!("      - {s}")).collect();
    out.extend(r.difference(&l).map(|s| format!("      + {s}")));
    if out.is_empty() {
        out.push("      (same lines, different order or count)".to_string());
    }
    let more = out.len().saturating_sub(20);
    out.truncate(20);
    if more > 0 {
        out.push(format!("      ... and {more} more"));
    }
    out.join("\n")
}
