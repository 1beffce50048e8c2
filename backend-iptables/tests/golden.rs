//! Golden-text tests of the renderer: upstream's own expected rules for
//! `TestOverallIPTablesRules`, and one golden file per conformance scenario
//! (each scenario exercises one feature). Run with `UPDATE_GOLDEN=1` to
//! rewrite the scenario files after an intended change, then review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use backend_iptables::render::{RenderConfig, render};
use backend_iptables::restore::assemble;
use proxy_core::conformance::{Scenario, load_scenarios};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Upstream's `sortIPTablesRules`: per table, `KUBE-NODEPORTS` and
/// `KUBE-SERVICES` first and the other chains sorted; rules grouped by
/// chain in that order, keeping their order inside a chain.
fn sort_rules(text: &str) -> String {
    let mut out = String::new();
    let mut chains: BTreeMap<(u8, String), Vec<String>> = BTreeMap::new();
    let key = |c: &str| {
        let rank = match c {
            "KUBE-NODEPORTS" => 0,
            "KUBE-SERVICES" => 1,
            _ => 2,
        };
        (rank, c.to_string())
    };
    for line in text.lines() {
        if line.starts_with('*') {
            out.push_str(line);
            out.push('\n');
        } else if line == "COMMIT" {
            for ((_, chain), rules) in std::mem::take(&mut chains) {
                out.push_str(&format!(":{chain} - [0:0]\n"));
                for r in rules {
                    out.push_str(&r);
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
        } else if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap();
            chains.entry(key(chain)).or_default();
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap();
            chains.entry(key(chain)).or_default().push(line.to_string());
        }
    }
    // Chain declarations first, as upstream prints them.
    let mut result = String::new();
    for block in out.split_inclusive("COMMIT\n") {
        let (decls, rest): (Vec<&str>, Vec<&str>) = block.lines().partition(|l| l.starts_with(':'));
        let mut lines = rest.into_iter();
        if let Some(table) = lines.next() {
            result.push_str(table);
            result.push('\n');
        }
        for d in decls {
            result.push_str(d);
            result.push('\n');
        }
        for l in lines {
            result.push_str(l);
            result.push('\n');
        }
    }
    result
}

fn rendered(scenario: &Scenario, cfg: &RenderConfig) -> String {
    assemble(&render(cfg, scenario.view(), |_| true), &[]).text
}

/// Our rules for upstream's `TestOverallIPTablesRules` services equal
/// upstream's golden output. Differences of the test set-up only: upstream's
/// fake proxier prints the mark as `0x4000` and has no `--random-fully`; its
/// nfacct-counted rules (localhost node-port accounting and the INVALID drop
/// counter) are left out of the golden, as this crate has no nfacct.
#[test]
fn renders_upstream_overall_iptables_rules() {
    let dir = golden_dir();
    let yaml = std::fs::read_to_string(dir.join("upstream_overall.yaml")).unwrap();
    let scenario = Scenario::from_yaml("upstream_overall.yaml", &yaml).unwrap();
    let mut cfg = RenderConfig::from_context(scenario.context());
    cfg.mark = "0x4000".into();
    cfg.random_fully = false;
    let want = std::fs::read_to_string(dir.join("upstream_overall.rules")).unwrap();
    let got = sort_rules(&rendered(&scenario, &cfg));
    if got != want {
        let missing: Vec<&str> = want
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .collect();
        let extra: Vec<&str> = got
            .lines()
            .filter(|l| !want.lines().any(|w| w == *l))
            .collect();
        panic!(
            "rules differ from upstream\nmissing:\n{}\nextra:\n{}\nfull:\n{got}",
            missing.join("\n"),
            extra.join("\n")
        );
    }
}

/// Every conformance scenario renders exactly its golden file.
#[test]
fn every_scenario_renders_its_golden_rules() {
    let dir = golden_dir().join("scenarios");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for scenario in load_scenarios() {
        let cfg = RenderConfig::from_context(scenario.context());
        let got = rendered(&scenario, &cfg);
        let path = dir.join(format!("{}.rules", scenario.name()));
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == got => {}
            Ok(_) => failures.push(format!(
                "{} differs from {}",
                scenario.name(),
                path.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with UPDATE_GOLDEN=1)",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Above 1000 endpoints, the `KUBE-SVC → KUBE-SEP` and `KUBE-SEP` rules
/// lose their comments; the others keep them.
#[test]
fn large_cluster_mode_drops_endpoint_comments() {
    let ctx = common::context();
    let cfg = RenderConfig::from_context(&ctx);
    let small = assemble(
        &render(&cfg, &common::view(&common::topology(100, 10)), |_| true),
        &[],
    )
    .text;
    assert!(
        small
            .lines()
            .any(|l| l.starts_with("-A KUBE-SEP-") && l.contains("--comment"))
    );
    let large = assemble(
        &render(&cfg, &common::view(&common::topology(101, 10)), |_| true),
        &[],
    )
    .text;
    for line in large.lines() {
        if line.starts_with("-A KUBE-SEP-")
            || (line.starts_with("-A KUBE-SVC-") && line.contains("KUBE-SEP-"))
        {
            assert!(!line.contains("--comment"), "{line}");
        }
    }
    assert!(
        large
            .lines()
            .any(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("cluster IP"))
    );
}

/// `nodePortAddresses` as networks: a host address is matched exactly, a
/// wider network as a local address inside it; loopback networks only with
/// localhost node ports.
#[test]
fn node_port_addresses_render_one_jump_per_network() {
    let mut ctx = common::context();
    ctx.node_port_cidrs = Some(vec![
        "10.0.0.1/32".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
    ]);
    let cfg = RenderConfig::from_context(&ctx);
    let text = assemble(
        &render(&cfg, &common::view(&common::topology(1, 1)), |_| true),
        &[],
    )
    .text;
    let jumps: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("-j KUBE-NODEPORTS"))
        .collect();
    assert_eq!(jumps.len(), 2, "{jumps:?}");
    assert!(
        jumps[0].contains("-d 10.0.0.1 -j KUBE-NODEPORTS"),
        "{}",
        jumps[0]
    );
    assert!(
        jumps[1].contains("-d 192.168.0.0/16 -m addrtype --dst-type LOCAL"),
        "{}",
        jumps[1]
    );
    // No loopback network: no localhost node ports, no KUBE-FIREWALL guard.
    assert!(!text.contains("KUBE-FIREWALL"));
}
