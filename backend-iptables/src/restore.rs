//! Assembles the `iptables-restore --noflush` input of one sync.

use std::fmt::Write as _;

use crate::render::{PortRules, Ruleset};
use crate::top_level::TopLevelWrite;

/// One sync's input for `iptables-restore --noflush --counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreInput {
    /// The text: `*filter` then `*nat`.
    pub text: String,
    /// Chains declared plus rules and deletions written: the objects this
    /// sync writes.
    pub objects: usize,
}

/// `:CHAIN - [0:0]`: creates the chain, or flushes it if it exists.
fn chain_line(out: &mut String, chain: &str) {
    let _ = writeln!(out, ":{chain} - [0:0]");
}

/// How a restore input writes the top-level chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopLevel<'a> {
    /// Every one flushed and written again.
    Rewrite,
    /// Changed from the top-level rules of the previous sync, which the
    /// kernel holds: unchanged chains left out, the others edited rule by
    /// rule or rewritten (see [`TopLevelWrite::since`]).
    Since {
        /// The previous filter rules.
        filter: &'a str,
        /// The previous rules of the top-level nat chains.
        nat: &'a str,
    },
}

/// The restore input writing `ruleset` (the top-level chains, and the own
/// chains of the ports it holds) and deleting the `stale` chains.
pub fn assemble(ruleset: &Ruleset, stale: &[String]) -> RestoreInput {
    assemble_with(ruleset, &ruleset.ports, stale, TopLevel::Rewrite)
}

/// The restore input writing only the own chains of `ports` (nat table):
/// one chunk of a cold start split over several restores.
pub fn assemble_ports(ports: &[PortRules]) -> RestoreInput {
    let mut text = String::from("*nat\n");
    let mut objects = 0;
    for port in ports {
        for chain in &port.chains {
            chain_line(&mut text, chain);
        }
        objects += port.chains.len() + port.rules.len();
    }
    for port in ports {
        text.push_str(port.rules.as_str());
    }
    text.push_str("COMMIT\n");
    RestoreInput { text, objects }
}

/// [`assemble`] with the own chains of `ports` instead of all of the
/// ruleset's (an empty slice writes the top-level chains only), and the
/// top-level chains written as `top` says. The filter table is left out
/// when nothing in it changes.
pub fn assemble_with(
    ruleset: &Ruleset,
    ports: &[PortRules],
    stale: &[String],
    top: TopLevel<'_>,
) -> RestoreInput {
    let (filter, nat) = match top {
        TopLevel::Rewrite => (
            TopLevelWrite::rewrite(&ruleset.filter_chains, ruleset.filter_rules.as_str()),
            TopLevelWrite::rewrite(&ruleset.nat_chains, ruleset.nat_rules.as_str()),
        ),
        TopLevel::Since { filter, nat } => (
            TopLevelWrite::since(
                &ruleset.filter_chains,
                filter,
                ruleset.filter_rules.as_str(),
            ),
            TopLevelWrite::since(&ruleset.nat_chains, nat, ruleset.nat_rules.as_str()),
        ),
    };
    let port_chains: usize = ports.iter().map(|p| p.chains.len()).sum();
    let port_bytes: usize = ports.iter().map(|p| p.rules.as_str().len()).sum();
    let mut text = String::with_capacity(
        filter.declarations.len()
            + filter.rules.len()
            + nat.declarations.len()
            + nat.rules.len()
            + port_bytes
            + (port_chains + stale.len() * 2) * 32
            + 512,
    );
    if !filter.is_empty() {
        text.push_str("*filter\n");
        text.push_str(&filter.declarations);
        text.push_str(&filter.rules);
        text.push_str("COMMIT\n");
    }
    text.push_str("*nat\n");
    text.push_str(&nat.declarations);
    for port in ports {
        for chain in &port.chains {
            chain_line(&mut text, chain);
        }
    }
    for chain in stale {
        chain_line(&mut text, chain);
    }
    // Top-level rules first: their deletions drop the references to
    // stale chains before those are deleted.
    text.push_str(&nat.rules);
    for port in ports {
        text.push_str(port.rules.as_str());
    }
    for chain in stale {
        let _ = writeln!(text, "-X {chain}");
    }
    text.push_str("COMMIT\n");
    let objects = filter.objects
        + nat.objects
        + port_chains
        + ports.iter().map(|p| p.rules.len()).sum::<usize>()
        + stale.len();
    RestoreInput { text, objects }
}

/// The input that flushes and deletes `chains` of `table` (cleanup).
pub fn delete_chains(table: &str, chains: &[String]) -> String {
    let mut text = format!("*{table}\n");
    for chain in chains {
        chain_line(&mut text, chain);
    }
    for chain in chains {
        let _ = writeln!(text, "-X {chain}");
    }
    text.push_str("COMMIT\n");
    text
}
