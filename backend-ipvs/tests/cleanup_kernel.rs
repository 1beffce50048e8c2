//! `IpvsFactory::cleanup_leftovers` against the real kernel, inside
//! throw-away network namespaces (ipsets, links and iptables tables are all
//! per namespace; the root namespace is never touched).
//!
//! The namespace gets what upstream's IPVS mode leaves behind — the
//! `kube-ipvs0` link (a veth: this kernel has no dummy links), its ipsets,
//! its chains and jumps in iptables-nft and iptables-legacy (IPv4) and
//! ip6tables-nft (IPv6), with rules that reference the sets — plus
//! unrelated state that must survive. This kernel has no IPVS, so the
//! virtual-server flush is covered by the unit tests only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::collections::BTreeSet;

use backend_ipvs::IpvsFactory;
use proxy_core::backend::{BackendContext, BackendError, BackendFactory};
use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
use proxy_core::{IpFamily, NodeInfo};

/// Upstream's IPVS chains, as `(table, chain)`.
const IPVS_CHAINS: [(&str, &str); 11] = [
    ("nat", "KUBE-SERVICES"),
    ("nat", "KUBE-POSTROUTING"),
    ("nat", "KUBE-NODE-PORT"),
    ("nat", "KUBE-LOAD-BALANCER"),
    ("nat", "KUBE-MARK-MASQ"),
    ("filter", "KUBE-FORWARD"),
    ("filter", "KUBE-NODE-PORT"),
    ("filter", "KUBE-PROXY-FIREWALL"),
    ("filter", "KUBE-SOURCE-RANGES-FIREWALL"),
    ("filter", "KUBE-IPVS-FILTER"),
    ("filter", "KUBE-IPVS-OUT-FILTER"),
];

/// Unrelated chains, one with a name of the iptables mode: they stay.
const KEPT_CHAINS: [(&str, &str); 2] = [("nat", "KEEP-NAT"), ("filter", "KUBE-EXTERNAL-SERVICES")];

/// Unrelated sets: they stay.
const KEPT_SETS: [&str; 2] = ["KEEP-SET", "KUBE-KEEP"];

/// Unrelated links: they stay.
const KEPT_LINKS: [&str; 3] = ["keep0", "keep1", "lo"];

/// The IPv4 rules upstream's IPVS mode installs (a representative subset
/// of the per-service rules; every jump and chain of the cleanup list),
/// plus unrelated chains. The PREROUTING jump is there twice, as a crashed
/// run can leave it.
const IPV4_RULES: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KEEP-NAT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -j KEEP-NAT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p tcp -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A KUBE-PROXY-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-IPVS-FILTER -m set --match-set KUBE-IPVS-IPS dst -j ACCEPT
-A KUBE-NODE-PORT -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"#;

/// The IPv6 counterpart, referencing `KUBE-6-` sets.
const IPV6_RULES: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KEEP-NAT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -j KEEP-NAT
-A KUBE-SERVICES -m set --match-set KUBE-6-CLUSTER-IP src,dst -j KUBE-MARK-MASQ
COMMIT
*filter
:KUBE-IPVS-FILTER - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -j KUBE-EXTERNAL-SERVICES
-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-NODE-PORT-LOCAL-SCTP-HAS dst,dst -j ACCEPT
COMMIT
"#;

/// Every `iptables-save` of the test, and the family it belongs to.
const SAVES: [(&str, IpFamily); 3] = [
    ("iptables-nft-save", IpFamily::V4),
    ("iptables-legacy-save", IpFamily::V4),
    ("ip6tables-nft-save", IpFamily::V6),
];

fn gate(test: &str) -> bool {
    privileged_or_skip_with(test, || {
        check_tool("ipset", &["--version"], "ipset")?;
        check_tool("iptables-nft-restore", &["--version"], "iptables")?;
        check_tool("iptables-legacy-restore", &["--version"], "iptables")?;
        check_tool("ip6tables-nft-restore", &["--version"], "iptables")
    })
}

/// Runs `script` with `sh -e` inside `ns`.
fn sh(ns: &Netns, script: &str) {
    let out = ns.command("sh").args(["-ec", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads `rules` with `tool --noflush` inside `ns`.
fn restore(ns: &Netns, tool: &str, rules: &str) {
    let out = ns
        .command(tool)
        .arg("--noflush")
        .output_with_input(rules.as_bytes())
        .unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = ns.command(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Unrelated state every namespace gets.
fn add_unrelated_state(ns: &Netns) {
    sh(
        ns,
        "ip link add keep0 type veth peer name keep1
         ipset create KEEP-SET hash:ip
         ipset create KUBE-KEEP hash:ip family inet6",
    );
    restore(
        ns,
        "iptables-nft-restore",
        "*nat\n:KEEP-NAT - [0:0]\n-A POSTROUTING -j KEEP-NAT\nCOMMIT\n\
         *filter\n:KUBE-EXTERNAL-SERVICES - [0:0]\n-A INPUT -j KUBE-EXTERNAL-SERVICES\nCOMMIT\n",
    );
}

/// What upstream's IPVS mode leaves behind, and unrelated state.
fn add_ipvs_leftovers(ns: &Netns) {
    sh(
        ns,
        "ip link add kube-ipvs0 type veth peer name kube-ipvs0-p
         ip addr add 10.96.0.10/32 dev kube-ipvs0
         ip link add keep0 type veth peer name keep1
         ipset create KUBE-LOOP-BACK hash:ip,port,ip
         ipset create KUBE-CLUSTER-IP hash:ip,port
         ipset create KUBE-LOAD-BALANCER hash:ip,port
         ipset create KUBE-LOAD-BALANCER-FW hash:ip,port
         ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net
         ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
         ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
         ipset create KUBE-IPVS-IPS hash:ip
         ipset create KUBE-6-CLUSTER-IP hash:ip,port family inet6
         ipset create KUBE-6-NODE-PORT-LOCAL-SCTP-HAS hash:ip,port family inet6
         ipset create KEEP-SET hash:ip
         ipset create KUBE-KEEP hash:ip family inet6",
    );
    restore(ns, "iptables-nft-restore", IPV4_RULES);
    restore(ns, "iptables-legacy-restore", IPV4_RULES);
    restore(ns, "ip6tables-nft-restore", IPV6_RULES);
}

/// `IpvsFactory::new().cleanup_leftovers` for `family`, on a thread inside
/// `ns` (its commands inherit the thread's namespace).
fn cleanup_in(ns: &Netns, family: IpFamily) -> Result<(), BackendError> {
    ns.block_on(move || async move {
        let ctx = BackendContext::for_tests(family, NodeInfo::named("node").shared());
        IpvsFactory::new().cleanup_leftovers(&ctx).await
    })
    .unwrap()
}

fn cleanup_both_families(ns: &Netns) {
    for family in [IpFamily::V4, IpFamily::V6] {
        if let Err(error) = cleanup_in(ns, family) {
            panic!(
                "{family} cleanup failed: {error} ({:?})",
                std::error::Error::source(&error)
            );
        }
    }
}

/// The `(table, chain)` pairs of an `iptables-save` output.
fn chains(saved: &str) -> BTreeSet<(String, String)> {
    let mut table = String::new();
    let mut chains = BTreeSet::new();
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_string();
        } else if let Some(declaration) = line.strip_prefix(':') {
            let chain = declaration.split_whitespace().next().unwrap();
            chains.insert((table.clone(), chain.to_string()));
        }
    }
    chains
}

fn ipsets(ns: &Netns) -> BTreeSet<String> {
    stdout(ns, "ipset", &["list", "-n"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn links(ns: &Netns) -> BTreeSet<String> {
    stdout(ns, "ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_string())
        .collect()
}

/// Everything the cleanup could change, without the save timestamps.
fn snapshot(ns: &Netns) -> String {
    let mut text = String::new();
    for (save, _) in SAVES {
        text.push_str(&format!("== {save}\n"));
        for line in stdout(ns, save, &[])
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "== ipsets {:?}\n== links {:?}\n",
        ipsets(ns),
        links(ns)
    ));
    text
}

#[test]
fn cleanup_removes_upstream_ipvs_state_and_keeps_the_rest() {
    if !gate("cleanup_removes_upstream_ipvs_state_and_keeps_the_rest") {
        return;
    }
    let ns = Netns::new().unwrap();
    add_ipvs_leftovers(&ns);
    assert!(links(&ns).contains("kube-ipvs0"));

    cleanup_both_families(&ns);

    for (save, family) in SAVES {
        let saved = stdout(&ns, save, &[]);
        let present = chains(&saved);
        for (table, chain) in IPVS_CHAINS {
            assert!(
                !present.contains(&(table.to_string(), chain.to_string())),
                "{save}: {table}/{chain} is left:\n{saved}"
            );
        }
        for (table, chain) in KEPT_CHAINS {
            assert!(
                present.contains(&(table.to_string(), chain.to_string())),
                "{save}: unrelated {table}/{chain} was removed:\n{saved}"
            );
        }
        assert!(
            saved.contains("-A POSTROUTING -j KEEP-NAT"),
            "{save} ({family}):\n{saved}"
        );
        assert!(
            saved.contains("-A INPUT -j KUBE-EXTERNAL-SERVICES"),
            "{save}:\n{saved}"
        );
        assert!(
            !saved.contains("kubernetes"),
            "{save}: a jump is left:\n{saved}"
        );
    }
    assert_eq!(ipsets(&ns), KEPT_SETS.map(String::from).into());
    assert_eq!(links(&ns), KEPT_LINKS.map(String::from).into());

    // Idempotent: a second run succeeds and changes nothing.
    let before = snapshot(&ns);
    cleanup_both_families(&ns);
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn cleanup_on_a_namespace_that_never_ran_ipvs_changes_nothing() {
    if !gate("cleanup_on_a_namespace_that_never_ran_ipvs_changes_nothing") {
        return;
    }
    let ns = Netns::new().unwrap();
    add_unrelated_state(&ns);
    let before = snapshot(&ns);
    cleanup_both_families(&ns);
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn cleanup_of_one_family_leaves_the_other_familys_chains_and_sets() {
    if !gate("cleanup_of_one_family_leaves_the_other_familys_chains_and_sets") {
        return;
    }
    let ns = Netns::new().unwrap();
    add_ipvs_leftovers(&ns);
    cleanup_in(&ns, IpFamily::V4).unwrap();
    let v6 = chains(&stdout(&ns, "ip6tables-nft-save", &[]));
    assert!(v6.contains(&("nat".to_string(), "KUBE-SERVICES".to_string())));
    assert!(ipsets(&ns).contains("KUBE-6-CLUSTER-IP"));
    assert!(!ipsets(&ns).contains("KUBE-CLUSTER-IP"));
}
