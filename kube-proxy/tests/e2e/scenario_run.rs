//! One conformance scenario end to end through the binary, and the report
//! of a mode over several scenarios.

use std::fmt;
use std::time::{Duration, Instant};

use proxy_core::backend::{Capabilities, Capability};
use proxy_core::conformance::netns::{Netns, NodeTopology, SendOptions};
use proxy_core::conformance::{Origin, Outcome, Packet, Scenario, Tier, load_scenarios, oracle};
use proxy_core::{NodeView, Protocol, ProxyMode};

use super::files::ScenarioFiles;
use super::process::{KubeProxyProcess, last_sync_in, run_to_completion};
use super::rules::KubeRules;

/// How long the binary may take from start to its first sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one scenario.
#[derive(Debug)]
pub enum ScenarioStatus {
    /// The mode lacks what the scenario needs.
    Skipped(String),
    /// It ran; `failures` is empty when everything matched.
    Ran {
        /// Packets compared with their expectation.
        packets: usize,
        /// Packets left out because the mode lacks what they need.
        packets_unsupported: usize,
        /// Packets sent again after the EndpointSlice files were deleted.
        packets_without_endpoints: usize,
        /// From the start of the binary to its first sync.
        synced_after: Duration,
        /// Everything: namespaces, binary, packets, stop, cleanup.
        elapsed: Duration,
        /// What differed from the library-level run, one line each.
        failures: Vec<String>,
    },
}

/// One scenario's result.
#[derive(Debug)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// What happened.
    pub status: ScenarioStatus,
}

/// Every scenario of one mode.
#[derive(Debug)]
pub struct ModeReport {
    /// The mode the binary ran in.
    pub mode: ProxyMode,
    /// One per scenario, in the order given.
    pub scenarios: Vec<ScenarioResult>,
}

impl ModeReport {
    /// Scenarios that ran (passed or not).
    pub fn ran(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| matches!(s.status, ScenarioStatus::Ran { .. }))
            .count()
    }

    /// Every failure line, prefixed with its scenario.
    pub fn failures(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .flat_map(|s| match &s.status {
                ScenarioStatus::Ran { failures, .. } => failures
                    .iter()
                    .map(|f| format!("{}: {f}", s.name))
                    .collect(),
                ScenarioStatus::Skipped(_) => Vec::new(),
            })
            .collect()
    }

    /// Panics with every failure unless all scenarios that ran passed and
    /// at least `min_ran` ran.
    pub fn assert_passed(&self, min_ran: usize) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "kube-proxy --proxy-mode={} differs from the library-level runs:\n{}\n\n{self}",
            self.mode,
            failures.join("\n")
        );
        assert!(
            self.ran() >= min_ran,
            "only {} scenarios ran in {} mode (expected at least {min_ran}):\n{self}",
            self.ran(),
            self.mode
        );
    }
}

impl fmt::Display for ModeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kube-proxy --proxy-mode={} in a node namespace:",
            self.mode
        )?;
        for s in &self.scenarios {
            match &s.status {
                ScenarioStatus::Skipped(reason) => writeln!(f, "  SKIP {}: {reason}", s.name)?,
                ScenarioStatus::Ran {
                    packets,
                    packets_unsupported,
                    packets_without_endpoints,
                    synced_after,
                    elapsed,
                    failures,
                } => {
                    let verdict = if failures.is_empty() { "PASS" } else { "FAIL" };
                    write!(
                        f,
                        "  {verdict} {}: {packets} packets, {packets_without_endpoints} without endpoints, synced after {} ms, {} ms in all",
                        s.name,
                        synced_after.as_millis(),
                        elapsed.as_millis()
                    )?;
                    if *packets_unsupported > 0 {
                        write!(
                            f,
                            " ({packets_unsupported} packets unsupported by the mode)"
                        )?;
                    }
                    writeln!(f)?;
                    for failure in failures {
                        writeln!(f, "    - {failure}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs the named scenarios (sequentially) through the binary in `mode`.
///
/// # Panics
///
/// When a name is not an embedded scenario.
pub fn run_mode(mode: ProxyMode, names: &[&str]) -> ModeReport {
    let all = load_scenarios();
    let scenarios = names
        .iter()
        .map(|name| {
            let scenario = all
                .iter()
                .find(|s| s.name() == *name)
                .unwrap_or_else(|| panic!("no conformance scenario named {name}"));
            ScenarioResult {
                name: name.to_string(),
                status: run_scenario(mode, scenario),
            }
        })
        .collect();
    ModeReport { mode, scenarios }
}

/// What `mode`'s backend can do for `scenario`, as the binary builds it
/// (from its registry), built in a throw-away namespace. Like the kernel
/// harness, without SCTP: no SCTP sockets to probe with.
fn capabilities(mode: ProxyMode, scenario: &Scenario) -> Result<Capabilities, String> {
    let registry = kube_proxy::registry::registry();
    let factory = registry
        .get(mode)
        .ok_or_else(|| format!("{mode} is not compiled into kube-proxy"))?
        .clone();
    let ns = Netns::new().map_err(|e| format!("creating a namespace: {e}"))?;
    let built = ns
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting a tokio runtime: {e}"))?;
            let _entered = runtime.enter();
            factory
                .build(scenario.context())
                .map(|backend| backend.capabilities())
                .map_err(|e| format!("building the {mode} backend: {e}"))
        })
        .map_err(|e| format!("entering a namespace: {e}"))?;
    let mut caps = built?;
    caps.sctp = false;
    Ok(caps)
}

fn missing(caps: &Capabilities, required: Vec<Capability>) -> Vec<String> {
    required
        .into_iter()
        .filter(|c| !caps.supports(*c))
        .map(|c| format!("{c:?}"))
        .collect()
}

/// One scenario: topology, files, binary, packets, SIGTERM, `--cleanup`.
pub fn run_scenario(mode: ProxyMode, scenario: &Scenario) -> ScenarioStatus {
    let start = Instant::now();
    let caps = match capabilities(mode, scenario) {
        Ok(caps) => caps,
        Err(e) => return ran_with_failure(start, e),
    };
    let missing_here = missing(&caps, scenario.scenario_requirements());
    if !missing_here.is_empty() {
        return ScenarioStatus::Skipped(format!("requires {}", missing_here.join(", ")));
    }
    let supported: Vec<bool> = scenario
        .packets()
        .iter()
        .map(|p| {
            p.runs_in(Tier::Kernel) && missing(&caps, scenario.packet_requirements(p)).is_empty()
        })
        .collect();
    if !supported.contains(&true) {
        let all = missing(&caps, scenario.requirements());
        return ScenarioStatus::Skipped(format!("requires {}", all.join(", ")));
    }
    match Run::new(mode, scenario, caps) {
        Ok(run) => run.finish(start, &supported),
        Err(e) => ran_with_failure(start, e),
    }
}

fn ran_with_failure(start: Instant, failure: String) -> ScenarioStatus {
    ScenarioStatus::Ran {
        packets: 0,
        packets_unsupported: 0,
        packets_without_endpoints: 0,
        synced_after: Duration::ZERO,
        elapsed: start.elapsed(),
        failures: vec![failure],
    }
}

/// A scenario with the binary running and synced in its node namespace.
struct Run<'a> {
    mode: ProxyMode,
    scenario: &'a Scenario,
    caps: Capabilities,
    // Dropped before the topology: a live process holds the namespace.
    process: KubeProxyProcess,
    files: ScenarioFiles,
    topology: NodeTopology,
    synced_after: Duration,
}

impl<'a> Run<'a> {
    fn new(mode: ProxyMode, scenario: &'a Scenario, caps: Capabilities) -> Result<Self, String> {
        let mut topology = NodeTopology::new(scenario.context())
            .map_err(|e| format!("building the topology: {e}"))?;
        topology
            .grow(scenario.view())
            .map_err(|e| format!("growing the topology: {e}"))?;
        let files = ScenarioFiles::write(mode, scenario)
            .map_err(|e| format!("writing the scenario's files: {e}"))?;
        let config = files.config();
        let manifests = files.manifests();
        let args = [
            "--config",
            path_str(&config)?,
            "--manifests",
            path_str(&manifests)?,
        ];
        let mut process = KubeProxyProcess::start(topology.node(), &args, &files.log("run"))?;
        let synced_after = process.wait_synced(topology.node(), scenario.family(), SYNC_TIMEOUT)?;
        Ok(Run {
            mode,
            scenario,
            caps,
            process,
            files,
            topology,
            synced_after,
        })
    }

    /// Sends the packets, stops the binary, cleans up, and tells what
    /// differed.
    fn finish(mut self, start: Instant, supported: &[bool]) -> ScenarioStatus {
        let mut failures = Vec::new();
        let mut packets = 0;
        for (p, _) in self
            .scenario
            .packets()
            .iter()
            .zip(supported)
            .filter(|(_, ok)| **ok)
        {
            packets += 1;
            let expected = p.expected_in(self.mode);
            // With ClientIP affinity every connection from the one client
            // must reach the same one of the expected endpoints (as
            // `proxy_core::conformance::run` checks it).
            let accepts = if self.scenario.has_affinity(&p.packet) {
                Outcome::accepts_sticky
            } else {
                Outcome::accepts
            };
            match self.topology.send(&p.packet, SendOptions::default()) {
                Ok(actual) if accepts(expected, &actual, self.caps.preserves_client_ip) => {}
                Ok(actual) => {
                    failures.push(format!("{}: expected {expected}, got {actual}", p.packet))
                }
                Err(e) => failures.push(format!("{}: cannot send: {}", p.packet, chain(&e))),
            }
        }
        let edited = match self.remove_endpoints(supported, &mut failures) {
            Ok(sent) => sent,
            Err(e) => {
                failures.push(e);
                0
            }
        };
        if let Err(e) = self.stop_and_clean_up() {
            failures.push(e);
        }
        if !failures.is_empty() {
            failures.push(format!(
                "(the binary's log:\n{})",
                self.process.log().trim_end()
            ));
        }
        ScenarioStatus::Ran {
            packets,
            packets_unsupported: supported.iter().filter(|ok| !**ok).count(),
            packets_without_endpoints: edited,
            synced_after: self.synced_after,
            elapsed: start.elapsed(),
            failures,
        }
    }

    /// Follows an edit of the manifest directory: deletes every
    /// EndpointSlice file, waits for the binary's next sync, and sends again
    /// the packets that were forwarded and that the reference interpreter
    /// now expects rejected (services without endpoints); the topology keeps
    /// the old endpoints' echo servers, so a stale rule is caught. Returns
    /// how many packets it sent; mismatches go to `failures`.
    fn remove_endpoints(
        &mut self,
        supported: &[bool],
        failures: &mut Vec<String>,
    ) -> Result<usize, String> {
        if !self.caps.reject {
            return Ok(0);
        }
        let family = self.scenario.family();
        let before = last_sync_in(self.topology.node(), family)?.unwrap_or_default();
        let removed = self
            .files
            .remove_endpoint_slices()
            .map_err(|e| format!("removing the EndpointSlice files: {e}"))?;
        if removed.is_empty() {
            return Ok(0);
        }
        let mut world = self.scenario.topology().clone();
        for (namespace, name) in &removed {
            world.delete_endpoint_slice(namespace, name);
        }
        let view = NodeView::build(&world, self.scenario.node().clone(), family);
        self.process
            .wait_synced_after(self.topology.node(), family, before, SYNC_TIMEOUT)
            .map_err(|e| format!("after deleting the EndpointSlice files: {e}"))?;
        let mut sent = 0;
        for (p, _) in self
            .scenario
            .packets()
            .iter()
            .zip(supported)
            .filter(|(p, ok)| **ok && matches!(p.expected_in(self.mode), Outcome::Forwarded { .. }))
        {
            let expected = oracle::expected(&view, self.scenario.context(), &p.packet);
            if expected != Outcome::Rejected || rejected_on_send(&p.packet) {
                continue;
            }
            sent += 1;
            match self.topology.send(&p.packet, SendOptions::default()) {
                Ok(actual) if actual == expected => {}
                Ok(actual) => failures.push(format!(
                    "{} after deleting the EndpointSlice files: expected {expected}, got {actual}",
                    p.packet
                )),
                Err(e) => failures.push(format!("{}: cannot send: {}", p.packet, chain(&e))),
            }
        }
        Ok(sent)
    }

    /// Checks that the mode's rules are in place, stops the binary with
    /// SIGTERM (exit 0, rules left in place for iptables and nftables, as
    /// upstream), then `kube-proxy --cleanup` must leave no table or chain
    /// of any mode.
    fn stop_and_clean_up(&mut self) -> Result<(), String> {
        let ns = self.topology.node();
        let running = KubeRules::read(ns)?;
        if !running.has_rules_of(self.mode) {
            return Err(format!(
                "while running, the {} rules are missing: {running}",
                self.mode
            ));
        }
        let status = self.process.terminate(STOP_TIMEOUT)?;
        if !status.success() {
            return Err(format!("kube-proxy exited with {status} after SIGTERM"));
        }
        let stopped = KubeRules::read(ns)?;
        if self.mode != ProxyMode::Userspace && !stopped.has_rules_of(self.mode) {
            return Err(format!(
                "SIGTERM removed the {} rules (upstream leaves them in place): {stopped}",
                self.mode
            ));
        }
        let config = self.files.config();
        let cleanup = run_to_completion(ns, &["--config", path_str(&config)?, "--cleanup"])?;
        let cleanup_log = String::from_utf8_lossy(&cleanup.stderr);
        if !cleanup.status.success() {
            return Err(format!(
                "kube-proxy --cleanup failed ({}): {cleanup_log}",
                cleanup.status
            ));
        }
        let cleaned = KubeRules::read(ns)?;
        if !cleaned.is_empty() {
            return Err(format!("kube-proxy --cleanup left {cleaned}"));
        }
        Ok(())
    }
}

/// Whether a REJECT of `packet` fails the client's `send` itself: a UDP
/// datagram the node sends is rejected in the OUTPUT path, so `sendmsg`
/// returns `EPERM` before any ICMP error, which the kernel-tier probe
/// reports as an error rather than as `rejected`. (No scenario expects
/// such a packet rejected, so the library-level runs never meet this.)
fn rejected_on_send(packet: &Packet) -> bool {
    packet.origin == Origin::Host && packet.protocol == Protocol::Udp
}

/// An error with its sources: `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

fn path_str(path: &std::path::Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}
