//! The suite machinery end to end: a reference backend that answers with
//! the oracle passes every scenario and check; broken ones are reported.
#![cfg(feature = "conformance")]

use std::collections::BTreeMap;
use std::sync::Arc;

use proxy_core::backend::BackendContext;
use proxy_core::conformance::{self, Harness, Outcome, Packet, ScenarioStatus, Tier, oracle};
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, NodeView, ProxyMode, ServicePortName,
    ServicePortView, SyncStats,
};

/// What a reference backend may get wrong, one flaw at a time.
#[derive(Clone, Copy, Default)]
struct Flaws {
    /// Reports every forwarded packet as unmasqueraded.
    never_masquerade: bool,
    /// Applies partial change sets as if nothing changed.
    ignore_partial_changes: bool,
    /// Counts a write even when nothing changed.
    writes_on_noop: bool,
    /// Leaves a rule behind on cleanup.
    leaks_on_cleanup: bool,
    /// Not a flaw: answers like real connections from one client do, so
    /// ClientIP affinity reaches one endpoint only (the kernel tier).
    sticky_affinity: bool,
}

/// A backend whose "dataplane" is the list of service ports it was told
/// about, updated port by port on partial syncs.
struct ReferenceBackend {
    ctx: BackendContext,
    caps: Capabilities,
    flaws: Flaws,
    /// `None` before the first sync and after cleanup.
    ports: Option<BTreeMap<ServicePortName, Arc<ServicePortView>>>,
    /// The view last synced, for the oracle.
    view: NodeView,
    leaked: bool,
}

fn render_ports<'a>(
    ports: impl Iterator<Item = (&'a ServicePortName, &'a Arc<ServicePortView>)>,
) -> String {
    let mut out = String::from("table kube-proxy\n");
    for (name, view) in ports {
        out.push_str(&format!("{name} {}: {view:?}\n", name.protocol));
    }
    out
}

#[async_trait::async_trait]
impl Backend for ReferenceBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Iptables
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let mut written = 0;
        match self.ports.as_mut() {
            Some(ports) if !changes.is_full() => {
                if !self.flaws.ignore_partial_changes {
                    for name in changes.ports() {
                        match view.get(name) {
                            Some(v) => ports.insert(name.clone(), v.clone()),
                            None => ports.remove(name),
                        };
                        written += 1;
                    }
                }
            }
            _ => {
                let ports: BTreeMap<_, _> =
                    view.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
                written = ports.len() + 1;
                self.ports = Some(ports);
            }
        }
        if self.flaws.writes_on_noop {
            written += 1;
        }
        self.view = view.clone();
        Ok(SyncStats {
            full: changes.is_full(),
            ports_written: changes.len(),
            objects_written: written,
            totals: Vec::new(),
        })
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.ports = None;
        self.leaked = self.flaws.leaks_on_cleanup;
        self.view = NodeView::empty(self.ctx.family, self.ctx.node.clone());
        Ok(())
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        Ok(render_ports(view.iter()))
    }
}

struct ReferenceHarness {
    backend: ReferenceBackend,
}

#[async_trait::async_trait]
impl Harness for ReferenceHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        let b = &self.backend;
        if b.ports.is_none() {
            return Ok(Outcome::NotMatched);
        }
        let trace = oracle::trace(&b.view, &b.ctx, packet);
        // Like real connections from one client: ClientIP affinity makes
        // them all reach one endpoint.
        let sticky = trace
            .service_port
            .as_ref()
            .and_then(|name| b.view.get(name))
            .is_some_and(|v| v.port.session_affinity.is_some());
        let outcome = match trace.outcome {
            Outcome::Forwarded {
                endpoints,
                masqueraded,
            } if sticky && b.flaws.sticky_affinity => Outcome::Forwarded {
                endpoints: endpoints.into_iter().take(1).collect(),
                masqueraded,
            },
            other => other,
        };
        let outcome = match outcome {
            Outcome::Forwarded { endpoints, .. } if b.flaws.never_masquerade => {
                Outcome::Forwarded {
                    endpoints,
                    masqueraded: false,
                }
            }
            other => other,
        };
        Ok(outcome)
    }

    async fn dump(&mut self) -> Option<String> {
        let b = &self.backend;
        let mut out = match &b.ports {
            Some(ports) => render_ports(ports.iter()),
            None => String::new(),
        };
        if b.leaked {
            out.push_str("leaked rule\n");
        }
        Some(out)
    }
}

fn factory(
    caps: Capabilities,
    flaws: Flaws,
) -> impl Fn(&BackendContext) -> Result<Box<dyn Harness>, BackendError> + Send + Sync {
    move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        Ok(Box::new(ReferenceHarness {
            backend: ReferenceBackend {
                ctx: ctx.clone(),
                caps,
                flaws,
                ports: None,
                view: NodeView::empty(ctx.family, ctx.node.clone()),
                leaked: false,
            },
        }))
    }
}

#[tokio::test]
async fn the_reference_backend_passes_every_scenario_and_check() {
    let report = conformance::run(&factory(Capabilities::ALL, Flaws::default()), Tier::Fake).await;
    report.assert_passed();
    assert_eq!(report.passed().count(), conformance::load_scenarios().len());
    // Every state check ran for every scenario: no-op, cleanup, two
    // partial syncs, and a chained one for most.
    let chained = report
        .scenarios
        .iter()
        .filter(|s| {
            s.checks
                .iter()
                .any(|c| c.name.contains(" -> scenario") && !c.name.contains("empty"))
        })
        .count();
    assert!(
        chained >= 30,
        "only {chained} scenarios chained a partial sync"
    );
    for s in &report.scenarios {
        assert!(s.checks.len() >= 5, "{}: {} checks", s.name, s.checks.len());
    }
}

#[tokio::test]
async fn the_kernel_tier_sends_packets_only() {
    let flaws = Flaws {
        sticky_affinity: true,
        ..Flaws::default()
    };
    let report = conformance::run(&factory(Capabilities::ALL, flaws), Tier::Kernel).await;
    report.assert_passed();
    for s in &report.scenarios {
        assert_eq!(
            s.checks.len(),
            1,
            "{}: only the full sync is checked",
            s.name
        );
    }
}

#[tokio::test]
async fn wrong_outcomes_are_reported_with_packet_expected_and_actual() {
    let flaws = Flaws {
        never_masquerade: true,
        ..Flaws::default()
    };
    let report = conformance::run(&factory(Capabilities::ALL, flaws), Tier::Fake).await;
    assert!(!report.is_success());
    let basic = report
        .scenarios
        .iter()
        .find(|s| s.name == "clusterip-basic")
        .unwrap();
    assert_eq!(basic.status, ScenarioStatus::Failed);
    let bad = basic.packets.iter().find(|p| !p.passed).unwrap();
    assert!(matches!(
        bad.expected,
        Outcome::Forwarded {
            masqueraded: true,
            ..
        }
    ));
    assert!(matches!(
        bad.actual,
        Ok(Outcome::Forwarded {
            masqueraded: false,
            ..
        })
    ));
    // Scenarios without masquerading pass.
    let none = report
        .scenarios
        .iter()
        .find(|s| s.name == "detect-local-none")
        .unwrap();
    assert_eq!(none.status, ScenarioStatus::Passed);

    let text = report.to_string();
    assert!(text.contains("FAIL  clusterip-basic"), "{text}");
    assert!(
        text.contains("expected forwarded to {10.244.1.10:8080, 10.244.2.10:8080} masqueraded"),
        "{text}"
    );
    assert!(
        text.contains("actual   forwarded to {10.244.1.10:8080, 10.244.2.10:8080} not masqueraded"),
        "{text}"
    );
}

#[tokio::test]
async fn masquerading_is_not_compared_without_client_ip_preservation() {
    let mut caps = Capabilities::ALL;
    caps.preserves_client_ip = false;
    let flaws = Flaws {
        never_masquerade: true,
        sticky_affinity: true,
        ..Flaws::default()
    };
    conformance::run(&factory(caps, flaws), Tier::Kernel)
        .await
        .assert_passed();
}

#[tokio::test]
async fn state_check_failures_are_reported() {
    for (flaws, check) in [
        (
            Flaws {
                ignore_partial_changes: true,
                ..Flaws::default()
            },
            "partial sync empty -> scenario equals full sync",
        ),
        (
            Flaws {
                writes_on_noop: true,
                ..Flaws::default()
            },
            "no-op sync writes nothing",
        ),
        (
            Flaws {
                leaks_on_cleanup: true,
                ..Flaws::default()
            },
            "cleanup leaves nothing behind",
        ),
    ] {
        let report = conformance::run(&factory(Capabilities::ALL, flaws), Tier::Fake).await;
        let basic = report
            .scenarios
            .iter()
            .find(|s| s.name == "clusterip-basic")
            .unwrap();
        assert_eq!(basic.status, ScenarioStatus::Failed, "{check}");
        assert!(
            basic.packets.iter().all(|p| p.passed),
            "{check}: packets are fine"
        );
        let failed: Vec<_> = basic
            .checks
            .iter()
            .filter(|c| c.failure.is_some())
            .map(|c| c.name.as_str())
            .collect();
        assert!(failed.contains(&check), "{check}: failed checks {failed:?}");
        assert!(
            report.to_string().contains(&format!("check {check}: ")),
            "{report}"
        );
    }
}

#[tokio::test]
async fn scenarios_needing_missing_capabilities_are_skipped_with_the_reason() {
    let mut caps = Capabilities::ALL;
    caps.ipv6 = false;
    caps.sctp = false;
    caps.session_affinity = false;
    let report = conformance::run(&factory(caps, Flaws::default()), Tier::Fake).await;
    report.assert_passed();
    let skipped: BTreeMap<&str, &ScenarioStatus> = report
        .skipped()
        .map(|s| (s.name.as_str(), &s.status))
        .collect();
    assert_eq!(
        skipped.keys().copied().collect::<Vec<_>>(),
        [
            "clusterip-sctp",
            "clusterip-session-affinity",
            "ipv6-clusterip",
            "ipv6-local-policy",
            "ipv6-nodeport"
        ]
    );
    assert_eq!(
        skipped["clusterip-sctp"],
        &ScenarioStatus::Skipped("requires sctp".into())
    );
    assert!(
        report.to_string().contains("SKIP  ipv6-nodeport"),
        "{report}"
    );
}

#[tokio::test]
#[should_panic(expected = "conformance suite failed")]
async fn assert_passed_panics_on_failure() {
    let flaws = Flaws {
        never_masquerade: true,
        ..Flaws::default()
    };
    conformance::run(&factory(Capabilities::ALL, flaws), Tier::Kernel)
        .await
        .assert_passed();
}
