//! Step 3: remove upstream IPVS mode's iptables jumps and chains.

use std::collections::BTreeSet;

use proxy_core::IpFamily;
use tracing::{debug, info};

use crate::error::IpvsError;
use crate::host::{Applied, Command, Host, run_checked, run_idempotent};
use crate::layout::{CHAINS, JUMPS, Jump};

/// What iptables (legacy and nft) prints when a chain or rule does not
/// exist (upstream's `IsNotFoundError`). Exit codes alone cannot tell:
/// legacy `-X` of a chain still referenced also exits 1 ("Too many links").
const NOT_FOUND: [&str; 3] = [
    "does not exist",
    "No chain/target/match by that name",
    "Bad rule (does a matching rule exist in that chain?)",
];

/// How many copies of one jump rule are deleted at most: upstream inserts
/// each once, but a crashed run can leave a duplicate, and one left behind
/// keeps its chain alive.
const MAX_JUMP_COPIES: usize = 16;

/// Wait up to 5 s for the xtables lock.
const WAIT: [&str; 2] = ["-w", "5"];

/// One installed iptables variant: `iptables-nft` and `iptables-nft-save`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tools {
    iptables: String,
    save: String,
}

impl Tools {
    /// The variants of `family` whose rules could hold leftovers: `-nft`
    /// and `-legacy` when installed (a host may have switched), otherwise
    /// the unsuffixed tools.
    fn installed(host: &dyn Host, family: IpFamily) -> Vec<Tools> {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let tools = |suffix: &str| Tools {
            iptables: format!("{base}{suffix}"),
            save: format!("{base}{suffix}-save"),
        };
        let present = |t: &Tools| host.has_program(&t.iptables) && host.has_program(&t.save);
        let suffixed: Vec<Tools> = ["-nft", "-legacy"]
            .into_iter()
            .map(tools)
            .filter(present)
            .collect();
        if !suffixed.is_empty() {
            return suffixed;
        }
        Some(tools("")).filter(present).into_iter().collect()
    }

    fn command(&self, table: &str, args: &[&str]) -> Command {
        let mut all: Vec<&str> = WAIT.to_vec();
        all.extend(["-t", table]);
        all.extend_from_slice(args);
        Command::new(&self.iptables, all)
    }
}

/// Removes, in every installed iptables variant of `family`, the jump rules
/// upstream's IPVS mode puts in the built-in chains, then flushes all its
/// chains, then deletes them (flushing first drops the jumps between them).
///
/// `iptables-save` tells which chains exist, so only those are touched and
/// a host that never ran the IPVS mode sees nothing but the `-save` calls.
/// Failures are collected and the cleanup goes on, as upstream's does.
pub(crate) async fn remove_chains(host: &dyn Host, family: IpFamily) -> Vec<IpvsError> {
    let installed = Tools::installed(host, family);
    if installed.is_empty() {
        debug!(%family, "no iptables tools, no IPVS chains to remove");
    }
    let mut failures = Vec::new();
    for tools in &installed {
        failures.extend(remove_with(host, tools).await);
    }
    failures
}

async fn remove_with(host: &dyn Host, tools: &Tools) -> Vec<IpvsError> {
    let saved = match run_checked(host, Command::new(&tools.save, [] as [&str; 0])).await {
        Ok(saved) => saved,
        Err(error) => return vec![error],
    };
    let existing = chains_by_table(&saved);
    let ours: Vec<(&str, &str)> = CHAINS
        .into_iter()
        .filter(|&(table, chain)| existing.contains(&(table, chain)))
        .collect();
    if ours.is_empty() {
        debug!(tool = tools.iptables, "no IPVS chains");
        return Vec::new();
    }
    let mut failures = Vec::new();
    for jump in JUMPS.iter().filter(|j| existing.contains(&(j.table, j.to))) {
        if let Err(error) = delete_jump(host, tools, jump).await {
            failures.push(error);
        }
    }
    let mut flushed = Vec::new();
    for &(table, chain) in &ours {
        match run_idempotent(host, tools.command(table, &["-F", chain]), &NOT_FOUND).await {
            Ok(_) => flushed.push((table, chain)),
            Err(error) => failures.push(error),
        }
    }
    for (table, chain) in flushed {
        if let Err(error) =
            run_idempotent(host, tools.command(table, &["-X", chain]), &NOT_FOUND).await
        {
            failures.push(error);
        }
    }
    info!(
        tool = tools.iptables,
        chains = ours.len(),
        failures = failures.len(),
        "removed the IPVS iptables chains"
    );
    failures
}

/// Deletes every copy of `jump`.
async fn delete_jump(host: &dyn Host, tools: &Tools, jump: &Jump) -> Result<(), IpvsError> {
    let mut args = vec!["-D", jump.from];
    args.extend(jump.rule());
    for _ in 0..MAX_JUMP_COPIES {
        let command = tools.command(jump.table, &args);
        if run_idempotent(host, command, &NOT_FOUND).await? == Applied::NotFound {
            break;
        }
    }
    Ok(())
}

/// The `(table, chain)` pairs declared in `iptables-save` output
/// (`*nat` … `:KUBE-SERVICES - [0:0]` … `COMMIT`).
fn chains_by_table(saved: &str) -> BTreeSet<(&str, &str)> {
    let mut chains = BTreeSet::new();
    let mut table = None;
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.trim());
        } else if line.trim() == "COMMIT" {
            table = None;
        } else if let (Some(table), Some(declaration)) = (table, line.strip_prefix(':'))
            && let Some(chain) = declaration.split_whitespace().next()
        {
            chains.insert((table, chain));
        }
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const NFT: [&str; 2] = ["iptables-nft", "iptables-nft-save"];
    const LEGACY: [&str; 2] = ["iptables-legacy", "iptables-legacy-save"];

    /// What `iptables-save` prints after upstream's IPVS mode ran, with
    /// an unrelated chain in each table.
    const IPVS_SAVE: &str = "\
# Generated by iptables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:OTHER-NAT - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
COMMIT
";

    const CLEAN_SAVE: &str = "*filter\n:INPUT ACCEPT [0:0]\n:OTHER - [0:0]\nCOMMIT\n";

    fn not_found_rule() -> crate::host::Output {
        FakeHost::fail(
            1,
            "iptables: Bad rule (does a matching rule exist in that chain?).",
        )
    }

    #[test]
    fn save_output_gives_the_chains_of_each_table() {
        let chains = chains_by_table(IPVS_SAVE);
        assert!(chains.contains(&("nat", "KUBE-NODE-PORT")));
        assert!(chains.contains(&("filter", "KUBE-NODE-PORT")));
        assert!(chains.contains(&("nat", "OTHER-NAT")));
        assert!(!chains.contains(&("filter", "KUBE-SERVICES")));
        assert_eq!(chains.len(), 6 + 4 + 6 + 3);
    }

    #[tokio::test]
    async fn both_installed_variants_are_cleaned_and_the_unsuffixed_one_is_not() {
        let host = FakeHost::new()
            .with_programs(&NFT)
            .with_programs(&LEGACY)
            .with_programs(&["iptables", "iptables-save"])
            .respond("iptables-nft-save", FakeHost::ok(CLEAN_SAVE))
            .respond("iptables-legacy-save", FakeHost::ok(CLEAN_SAVE));
        assert!(remove_chains(&host, IpFamily::V4).await.is_empty());
        assert_eq!(
            host.commands(),
            ["iptables-nft-save", "iptables-legacy-save"]
        );
    }

    #[tokio::test]
    async fn ipv6_uses_ip6tables_and_falls_back_to_the_unsuffixed_tools() {
        let host = FakeHost::new()
            .with_programs(&[
                "ip6tables",
                "ip6tables-save",
                "iptables-nft",
                "iptables-nft-save",
            ])
            .respond("ip6tables-save", FakeHost::ok(CLEAN_SAVE));
        assert!(remove_chains(&host, IpFamily::V6).await.is_empty());
        assert_eq!(host.commands(), ["ip6tables-save"]);
    }

    #[tokio::test]
    async fn without_iptables_nothing_runs() {
        let host = FakeHost::new();
        assert!(remove_chains(&host, IpFamily::V4).await.is_empty());
        assert!(host.commands().is_empty());
    }

    #[tokio::test]
    async fn jumps_are_deleted_then_chains_flushed_then_deleted_in_upstream_order() {
        let host = FakeHost::new()
            .with_programs(&NFT)
            .respond("iptables-nft-save", FakeHost::ok(IPVS_SAVE))
            .default_for("iptables-nft -w 5 -t nat -D", not_found_rule())
            .default_for("iptables-nft -w 5 -t filter -D", not_found_rule())
            // The three nat jumps exist once each; the filter ones do not.
            .respond(
                "iptables-nft -w 5 -t nat -D OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
                FakeHost::ok(""),
            )
            .respond(
                "iptables-nft -w 5 -t nat -D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
                FakeHost::ok(""),
            )
            .respond(
                "iptables-nft -w 5 -t nat -D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
                FakeHost::ok(""),
            );
        let failures = remove_chains(&host, IpFamily::V4).await;
        assert!(failures.is_empty(), "{failures:?}");
        let nat_jump = |from: &str, comment: &str, to: &str| {
            format!("iptables-nft -w 5 -t nat -D {from} -m comment --comment \"{comment}\" -j {to}")
        };
        let filter_jump = |from: &str, comment: &str, to: &str| {
            format!(
                "iptables-nft -w 5 -t filter -D {from} -m comment --comment \"{comment}\" -j {to}"
            )
        };
        let mut expected = vec!["iptables-nft-save".to_string()];
        for (from, comment, to) in [
            ("OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
            ("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
            (
                "POSTROUTING",
                "kubernetes postrouting rules",
                "KUBE-POSTROUTING",
            ),
        ] {
            // Deleted, then tried again until "not found".
            expected.push(nat_jump(from, comment, to));
            expected.push(nat_jump(from, comment, to));
        }
        for (from, comment, to) in [
            ("FORWARD", "kubernetes forwarding rules", "KUBE-FORWARD"),
            ("INPUT", "kubernetes health check rules", "KUBE-NODE-PORT"),
            ("INPUT", "kube-proxy firewall rules", "KUBE-PROXY-FIREWALL"),
            (
                "FORWARD",
                "kube-proxy firewall rules",
                "KUBE-PROXY-FIREWALL",
            ),
            ("INPUT", "kubernetes ipvs access filter", "KUBE-IPVS-FILTER"),
            (
                "OUTPUT",
                "kubernetes ipvs access filter",
                "KUBE-IPVS-OUT-FILTER",
            ),
        ] {
            expected.push(filter_jump(from, comment, to));
        }
        let chains = [
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
        for op in ["-F", "-X"] {
            for (table, chain) in chains {
                expected.push(format!("iptables-nft -w 5 -t {table} {op} {chain}"));
            }
        }
        assert_eq!(host.commands(), expected);
    }

    #[tokio::test]
    async fn only_existing_chains_and_their_jumps_are_touched() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-IPVS-FILTER - [0:0]\nCOMMIT\n";
        let host = FakeHost::new()
            .with_programs(&NFT)
            .respond("iptables-nft-save", FakeHost::ok(save))
            .default_for("iptables-nft -w 5 -t filter -D", not_found_rule());
        assert!(remove_chains(&host, IpFamily::V4).await.is_empty());
        assert_eq!(
            host.commands(),
            [
                "iptables-nft-save",
                "iptables-nft -w 5 -t filter -D INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER",
                "iptables-nft -w 5 -t filter -F KUBE-IPVS-FILTER",
                "iptables-nft -w 5 -t filter -X KUBE-IPVS-FILTER",
            ]
        );
    }

    #[tokio::test]
    async fn a_chain_gone_meanwhile_is_not_an_error_but_a_busy_one_is() {
        let save = "*filter\n:KUBE-IPVS-FILTER - [0:0]\n:KUBE-FORWARD - [0:0]\nCOMMIT\n";
        let host = FakeHost::new()
            .with_programs(&LEGACY)
            .respond("iptables-legacy-save", FakeHost::ok(save))
            .default_for("iptables-legacy -w 5 -t filter -D", not_found_rule())
            .respond(
                "iptables-legacy -w 5 -t filter -X KUBE-FORWARD",
                FakeHost::fail(1, "iptables: Too many links."),
            )
            .respond(
                "iptables-legacy -w 5 -t filter -F KUBE-IPVS-FILTER",
                FakeHost::fail(1, "iptables: No chain/target/match by that name."),
            )
            .respond(
                "iptables-legacy -w 5 -t filter -X KUBE-IPVS-FILTER",
                FakeHost::fail(1, "iptables: No chain/target/match by that name."),
            );
        let failures = remove_chains(&host, IpFamily::V4).await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(
            failures[0].to_string(),
            "`iptables-legacy -w 5 -t filter -X KUBE-FORWARD` failed (exit code 1): iptables: Too many links."
        );
    }

    #[tokio::test]
    async fn a_failing_save_is_reported_and_the_other_variant_still_cleaned() {
        let host = FakeHost::new()
            .with_programs(&NFT)
            .with_programs(&LEGACY)
            .respond("iptables-nft-save", FakeHost::fail(1, "Permission denied"))
            .respond("iptables-legacy-save", FakeHost::ok(CLEAN_SAVE));
        let failures = remove_chains(&host, IpFamily::V4).await;
        assert_eq!(failures.len(), 1);
        assert_eq!(
            host.commands(),
            ["iptables-nft-save", "iptables-legacy-save"]
        );
    }
}
