//! Chaos: the real binary restarted under load, and its rules wiped from
//! outside, in iptables and nftables modes.
//!
//! The `nodeport-cluster` scenario's topology (node, pods with echo
//! servers, `lan`) and the binary in its node namespace (`syncPeriod: 2s`).
//! Two loads of new TCP connections run throughout: from `lan` to the
//! NodePort and from a local pod to the ClusterIP, [`RATE`] per second
//! each. Meanwhile the binary is stopped with SIGTERM, SIGKILL, SIGTERM,
//! SIGKILL, each time started again and waited for until synced: not one
//! connection of this phase may fail (the rules stay in the kernel while
//! no proxy runs). Then the rules are wiped from outside (`iptables -F`
//! and `-X` of every table, or `nft flush ruleset`): connections fail
//! until the binary repairs them. From [`repair_bound`] after the wipe on,
//! new clients (new source addresses) open connections for
//! [`AFTER_REPAIR`]: not one may fail. The first clients keep running; their
//! failures after the repair are printed, not asserted: a connection that
//! failed during the wipe leaves a conntrack entry without DNAT (in
//! `SYN_SENT` for the ClusterIP, for up to 2 minutes), and a later
//! connection reusing its source port matches that entry instead of the
//! repaired rules, as with upstream kube-proxy. Every figure is printed.
//!
//! A connection succeeds when an endpoint's echo server answers (a host
//! echo server on the node port, which answers when no rule matches, does
//! not count). Needs root, iproute2, iptables and nftables; skips with the
//! reason otherwise, fails instead when
//! `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[allow(dead_code)] // the helpers e2e_netns.rs uses and this test does not
mod e2e;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proxy_core::config::Duration as ConfigDuration;
use proxy_core::conformance::netns::{
    ClientPlace, Netns, NodeTopology, check_tool, privileged_or_skip_with,
};
use proxy_core::conformance::{Origin, Outcome, Packet, Scenario, load_scenarios};
use proxy_core::{Protocol, ProxyMode};

use e2e::files::ScenarioFiles;
use e2e::load::{Attempt, Load};
use e2e::process::KubeProxyProcess;
use e2e::rules::KubeRules;

/// New connections per second of each load (two loads run).
const RATE: u32 = 150;
/// The binary's `syncPeriod` (the drift check runs at least this often).
const SYNC_PERIOD: Duration = Duration::from_secs(2);
/// Time between restarts (and before the first).
const BETWEEN_RESTARTS: Duration = Duration::from_secs(2);
/// How long the binary may take to sync after a start.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// Load kept running after the repair bound.
const AFTER_REPAIR: Duration = Duration::from_secs(3);

/// Wiped rules must carry traffic again within this: the next drift check
/// plus time for the full sync.
fn repair_bound() -> Duration {
    SYNC_PERIOD + Duration::from_secs(3)
}

fn tools_present() -> Result<(), String> {
    check_tool("iptables-restore", &["--version"], "iptables")?;
    check_tool("iptables-save", &["--version"], "iptables")?;
    check_tool("ip6tables-save", &["--version"], "iptables")?;
    check_tool("nft", &["--version"], "nftables")
}

/// One load's target: the client namespace's place, source, destination
/// and the endpoints that may answer.
struct Target {
    name: &'static str,
    place: ClientPlace,
    source: IpAddr,
    destination: SocketAddr,
    endpoints: BTreeSet<SocketAddr>,
}

/// The scenario's forwarded TCP packet of `origin` to `port`.
fn target(scenario: &Scenario, name: &'static str, origin: Origin, port: u16) -> Target {
    let p = scenario
        .packets()
        .iter()
        .find(|p| p.packet.origin == origin && p.packet.port == port)
        .unwrap_or_else(|| panic!("{}: no {origin} packet to port {port}", scenario.name()));
    let Packet {
        source,
        destination,
        protocol,
        ..
    } = p.packet;
    assert_eq!(protocol, Protocol::Tcp);
    let Outcome::Forwarded { endpoints, .. } = p.expected_in(ProxyMode::Iptables) else {
        panic!("{}: the {origin} packet is not forwarded", scenario.name());
    };
    Target {
        name,
        place: match origin {
            Origin::External => ClientPlace::Lan,
            Origin::LocalPod => ClientPlace::Pod(source),
            Origin::Host => ClientPlace::Node,
        },
        source,
        destination: SocketAddr::new(destination, port),
        endpoints: endpoints.clone(),
    }
}

/// The same target from a new client address (the next one up).
fn fresh(t: &Target) -> Target {
    let next = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + 1).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + 1).into()),
    };
    let source = next(t.source);
    Target {
        name: t.name,
        place: match t.place {
            ClientPlace::Pod(_) => ClientPlace::Pod(source),
            other => other,
        },
        source,
        destination: t.destination,
        endpoints: t.endpoints.clone(),
    }
}

/// Wipes the mode's rules from outside, as a firewall reload does.
fn wipe(ns: &Netns, mode: ProxyMode) {
    let commands: Vec<Vec<&str>> = match mode {
        ProxyMode::Nftables => vec![vec!["nft", "flush", "ruleset"]],
        _ => ["mangle", "nat", "filter"]
            .into_iter()
            .flat_map(|table| {
                [
                    vec!["iptables", "-t", table, "-F"],
                    vec!["iptables", "-t", table, "-X"],
                ]
            })
            .collect(),
    };
    for c in commands {
        let out = ns.command(c[0]).args(&c[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            c.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Polls until the mode's rules are back; returns when (from `start`).
fn wait_rules(ns: &Netns, mode: ProxyMode, start: Instant, limit: Duration) -> Option<Duration> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if KubeRules::read(ns).is_ok_and(|r| r.has_rules_of(mode)) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn failures<'a>(attempts: impl Iterator<Item = &'a Attempt>) -> (usize, Vec<String>) {
    let mut total = 0;
    let mut failed = Vec::new();
    for a in attempts {
        total += 1;
        if let Some(e) = &a.error {
            failed.push(format!("{:.3}s: {e}", a.started.as_secs_f64()));
        }
    }
    (total, failed)
}

fn chaos(test: &str, mode: ProxyMode) {
    if !privileged_or_skip_with(test, tools_present) {
        return;
    }
    let scenario = load_scenarios()
        .into_iter()
        .find(|s| s.name() == "nodeport-cluster")
        .unwrap();
    let mut topology = NodeTopology::new(scenario.context()).unwrap();
    topology.grow(scenario.view()).unwrap();
    let targets = [
        target(&scenario, "NodePort from the lan", Origin::External, 30080),
        target(&scenario, "ClusterIP from a pod", Origin::LocalPod, 80),
    ];
    for t in &targets {
        topology
            .prepare_send(t.place, t.source, Protocol::Tcp, t.destination)
            .unwrap();
    }
    let files = ScenarioFiles::write_with(mode, &scenario, |c| {
        let period = ConfigDuration::from_millis(SYNC_PERIOD.as_millis() as i64);
        c.iptables.sync_period = period;
        c.nftables.sync_period = period;
    })
    .unwrap();
    let config = files.config().to_str().unwrap().to_string();
    let manifests = files.manifests().to_str().unwrap().to_string();
    let args = [
        "--config",
        config.as_str(),
        "--manifests",
        manifests.as_str(),
    ];
    let node = topology.node().try_clone().unwrap();
    let mut process = KubeProxyProcess::start(&node, &args, &files.log("run-0")).unwrap();
    process
        .wait_synced(&node, scenario.family(), SYNC_TIMEOUT)
        .unwrap();

    let start = Instant::now();
    let loads: Vec<Load> = targets
        .iter()
        .map(|t| {
            let ns = topology.place(t.place).unwrap();
            Load::start(
                ns,
                t.source,
                t.destination,
                RATE,
                t.endpoints.clone(),
                start,
            )
            .unwrap()
        })
        .collect();

    // Restarts.
    let mut restarts = Vec::new();
    for (i, signal) in ["SIGTERM", "SIGKILL", "SIGTERM", "SIGKILL"]
        .into_iter()
        .enumerate()
    {
        std::thread::sleep(BETWEEN_RESTARTS);
        let stopped_at = Instant::now();
        match signal {
            "SIGTERM" => {
                let status = process.terminate(Duration::from_secs(10)).unwrap();
                assert!(status.success(), "exit after SIGTERM: {status}");
            }
            _ => {
                process.kill().unwrap();
            }
        }
        process =
            KubeProxyProcess::start(&node, &args, &files.log(&format!("run-{}", i + 1))).unwrap();
        process
            .wait_synced(&node, scenario.family(), SYNC_TIMEOUT)
            .unwrap();
        restarts.push((signal, stopped_at.elapsed()));
    }
    std::thread::sleep(BETWEEN_RESTARTS);

    // The wipe.
    let wiped_at = start.elapsed();
    wipe(&node, mode);
    let rules_back = wait_rules(&node, mode, start, repair_bound() + AFTER_REPAIR);
    std::thread::sleep((wiped_at + repair_bound()).saturating_sub(start.elapsed()));
    // Fresh clients (new source addresses): no conntrack entry of theirs
    // predates the repair.
    let fresh_targets: Vec<Target> = targets.iter().map(fresh).collect();
    let fresh_loads: Vec<Load> = fresh_targets
        .iter()
        .map(|t| {
            topology
                .prepare_send(t.place, t.source, Protocol::Tcp, t.destination)
                .unwrap();
            let ns = topology.place(t.place).unwrap();
            Load::start(
                ns,
                t.source,
                t.destination,
                RATE,
                t.endpoints.clone(),
                start,
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(AFTER_REPAIR);
    let attempts: Vec<Vec<Attempt>> = loads.into_iter().map(|l| l.finish().unwrap()).collect();
    let fresh_attempts: Vec<Vec<Attempt>> = fresh_loads
        .into_iter()
        .map(|l| l.finish().unwrap())
        .collect();
    let log = process.log();
    let status = process.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");

    // The figures.
    println!(
        "kube-proxy --proxy-mode={mode}: {RATE} new connections/s per load, syncPeriod {SYNC_PERIOD:?}"
    );
    for (signal, took) in &restarts {
        println!(
            "  {signal}: stopped, restarted and synced again in {} ms",
            took.as_millis()
        );
    }
    let wipe_window = |a: &&Attempt| a.started >= wiped_at && a.started < wiped_at + repair_bound();
    let mut problems = Vec::new();
    for (t, attempts) in targets.iter().zip(&attempts) {
        let (restart_total, restart_failed) =
            failures(attempts.iter().filter(|a| a.started < wiped_at));
        let (window_total, window_failed) = failures(attempts.iter().filter(wipe_window));
        let (after_total, after_failed) = failures(
            attempts
                .iter()
                .filter(|a| a.started >= wiped_at + repair_bound()),
        );
        // Traffic repaired: the first answered connection after the last
        // failed one of the wipe window.
        let last_failure = attempts
            .iter()
            .filter(|a| a.started >= wiped_at && a.error.is_some())
            .map(|a| a.started)
            .max();
        let repaired = last_failure.map_or(Duration::ZERO, |at| at.saturating_sub(wiped_at));
        println!(
            "  {}: {} connections; restarts: {}/{} failed; wipe: {}/{} failed, the last failure {} ms after the wipe; after: {}/{} failed",
            t.name,
            attempts.len(),
            restart_failed.len(),
            restart_total,
            window_failed.len(),
            window_total,
            repaired.as_millis(),
            after_failed.len(),
            after_total
        );
        if !restart_failed.is_empty() {
            problems.push(format!(
                "{}: {} of {restart_total} connections failed during the restarts: {:?}",
                t.name,
                restart_failed.len(),
                &restart_failed[..restart_failed.len().min(10)]
            ));
        }
        if after_total == 0 {
            problems.push(format!("{}: no connection after the repair", t.name));
        }
        if restart_total < 4 * BETWEEN_RESTARTS.as_secs() as usize * RATE as usize / 2 {
            problems.push(format!(
                "{}: only {restart_total} connections during the restarts (load too slow?)",
                t.name
            ));
        }
    }
    for (t, attempts) in fresh_targets.iter().zip(&fresh_attempts) {
        let (total, failed) = failures(attempts.iter());
        println!(
            "  {} (new client {}, from {:?} after the wipe): {}/{total} failed",
            t.name,
            t.source,
            repair_bound(),
            failed.len()
        );
        if total == 0 || !failed.is_empty() {
            problems.push(format!(
                "{} from the new client {}: {} of {total} connections failed after the repair: {:?}",
                t.name,
                t.source,
                failed.len(),
                &failed[..failed.len().min(10)]
            ));
        }
    }
    match rules_back {
        Some(at) => println!(
            "  rules back {} ms after the wipe",
            at.saturating_sub(wiped_at).as_millis()
        ),
        None => problems.push(format!(
            "the rules were not back within {:?} of the wipe",
            repair_bound() + AFTER_REPAIR
        )),
    }
    assert!(
        problems.is_empty(),
        "{}\n(the last run's log:\n{log})",
        problems.join("\n")
    );
}

#[test]
fn iptables_mode_survives_restarts_and_wipes_under_load() {
    chaos(
        "iptables_mode_survives_restarts_and_wipes_under_load",
        ProxyMode::Iptables,
    );
}

#[test]
fn nftables_mode_survives_restarts_and_wipes_under_load() {
    chaos(
        "nftables_mode_survives_restarts_and_wipes_under_load",
        ProxyMode::Nftables,
    );
}
