//! [`Report`]: what a suite run found, scenario by scenario.

use std::fmt;

use super::packet::{Outcome, Packet};
use super::tier::Tier;

/// The result of one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketResult {
    /// The packet sent.
    pub packet: Packet,
    /// What upstream does with it.
    pub expected: Outcome,
    /// What the harness reported, or its error.
    pub actual: Result<Outcome, String>,
    /// Whether `actual` satisfies `expected`.
    pub passed: bool,
}

/// The result of one state check (full sync, partial sync, no-op sync,
/// cleanup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, e.g. `partial sync from empty equals full sync`.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// How a scenario went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioStatus {
    /// Every packet and check passed.
    Passed,
    /// At least one packet or check failed.
    Failed,
    /// Not run, with the reason (a missing capability).
    Skipped(String),
}

/// The result of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// The outcome.
    pub status: ScenarioStatus,
    /// Packets sent, in file order.
    pub packets: Vec<PacketResult>,
    /// Packets not sent in this tier.
    pub packets_skipped: usize,
    /// Packets not sent because the backend lacks a capability, with why.
    pub packets_unsupported: Vec<(Packet, String)>,
    /// State checks, in the order they ran.
    pub checks: Vec<CheckResult>,
}

impl ScenarioReport {
    pub(crate) fn new(name: &str) -> Self {
        ScenarioReport {
            name: name.to_string(),
            status: ScenarioStatus::Passed,
            packets: Vec::new(),
            packets_skipped: 0,
            packets_unsupported: Vec::new(),
            checks: Vec::new(),
        }
    }

    pub(crate) fn skipped(name: &str, reason: String) -> Self {
        ScenarioReport {
            status: ScenarioStatus::Skipped(reason),
            ..ScenarioReport::new(name)
        }
    }

    /// Records a check; `Err` is the failure.
    pub(crate) fn check(&mut self, name: impl Into<String>, result: Result<(), String>) {
        self.checks.push(CheckResult {
            name: name.into(),
            failure: result.err(),
        });
    }

    /// Sets the status from the packets and checks recorded.
    pub(crate) fn finish(&mut self) {
        if matches!(self.status, ScenarioStatus::Skipped(_)) {
            return;
        }
        let failed = self.packets.iter().any(|p| !p.passed)
            || self.checks.iter().any(|c| c.failure.is_some());
        self.status = if failed {
            ScenarioStatus::Failed
        } else {
            ScenarioStatus::Passed
        };
    }

    fn summary(&self) -> String {
        match &self.status {
            ScenarioStatus::Skipped(reason) => reason.clone(),
            _ => {
                let bad_packets = self.packets.iter().filter(|p| !p.passed).count();
                let bad_checks = self.checks.iter().filter(|c| c.failure.is_some()).count();
                let mut s = format!(
                    "packets {}/{}, checks {}/{}",
                    self.packets.len() - bad_packets,
                    self.packets.len(),
                    self.checks.len() - bad_checks,
                    self.checks.len()
                );
                for (packet, why) in &self.packets_unsupported {
                    s.push_str(&format!("; skipped {packet}: {why}"));
                }
                if self.packets_skipped > 0 {
                    s.push_str(&format!(
                        ", {} packets not in this tier",
                        self.packets_skipped
                    ));
                }
                s
            }
        }
    }
}

/// What a suite run found.
///
/// `Display` prints one line per scenario, then the details of every
/// failure; [`Report::assert_passed`] panics with that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The tier that ran.
    pub tier: Tier,
    /// One entry per scenario, in load order.
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    fn with_status(
        &self,
        want: fn(&ScenarioStatus) -> bool,
    ) -> impl Iterator<Item = &ScenarioReport> {
        self.scenarios.iter().filter(move |s| want(&s.status))
    }

    /// Scenarios that passed.
    pub fn passed(&self) -> impl Iterator<Item = &ScenarioReport> {
        self.with_status(|s| *s == ScenarioStatus::Passed)
    }

    /// Scenarios that failed.
    pub fn failed(&self) -> impl Iterator<Item = &ScenarioReport> {
        self.with_status(|s| *s == ScenarioStatus::Failed)
    }

    /// Scenarios skipped for a missing capability.
    pub fn skipped(&self) -> impl Iterator<Item = &ScenarioReport> {
        self.with_status(|s| matches!(s, ScenarioStatus::Skipped(_)))
    }

    /// Whether no scenario failed and at least one passed (a run where
    /// everything was skipped proves nothing).
    pub fn is_success(&self) -> bool {
        self.failed().next().is_none() && self.passed().next().is_some()
    }

    /// Prints the report and panics with it if any scenario failed.
    #[track_caller]
    pub fn assert_passed(&self) {
        println!("{self}");
        if !self.is_success() {
            panic!("conformance suite failed\n{self}");
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance ({} tier): {} passed, {} failed, {} skipped",
            self.tier,
            self.passed().count(),
            self.failed().count(),
            self.skipped().count()
        )?;
        let width = self
            .scenarios
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for s in &self.scenarios {
            let status = match s.status {
                ScenarioStatus::Passed => "PASS",
                ScenarioStatus::Failed => "FAIL",
                ScenarioStatus::Skipped(_) => "SKIP",
            };
            writeln!(f, "  {status}  {:width$}  {}", s.name, s.summary())?;
        }
        for s in self.failed() {
            writeln!(f, "\n{}:", s.name)?;
            for p in s.packets.iter().filter(|p| !p.passed) {
                let actual = match &p.actual {
                    Ok(o) => o.to_string(),
                    Err(e) => format!("error: {e}"),
                };
                writeln!(
                    f,
                    "  packet {}\n    expected {}\n    actual   {actual}",
                    p.packet, p.expected
                )?;
            }
            for c in &s.checks {
                if let Some(why) = &c.failure {
                    writeln!(f, "  check {}: {why}", c.name)?;
                }
            }
        }
        Ok(())
    }
}
