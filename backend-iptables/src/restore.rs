//! Assembles the `iptables-restore --noflush` input of one sync.

use std::fmt::Write as _;

use crate::render::{PortRules, Ruleset};

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

/// Which top-level parts a restore input rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopLevel {
    /// The filter table (all its chains are top-level).
    pub filter: bool,
    /// `KUBE-SERVICES`, `KUBE-NODEPORTS`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`.
    pub nat: bool,
}

impl TopLevel {
    /// Both.
    pub const ALL: TopLevel = TopLevel {
        filter: true,
        nat: true,
    };
}

/// The restore input writing `ruleset` (the top-level chains, and the own
/// chains of the ports it holds) and deleting the `stale` chains.
pub fn assemble(ruleset: &Ruleset, stale: &[String]) -> RestoreInput {
    assemble_with(ruleset, &ruleset.ports, stale, TopLevel::ALL)
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
/// ruleset's (an empty slice writes the top-level chains only), and only the
/// `top` parts of the top-level chains.
pub fn assemble_with(
    ruleset: &Ruleset,
    ports: &[PortRules],
    stale: &[String],
    top: TopLevel,
) -> RestoreInput {
    let port_chains: usize = ports.iter().map(|p| p.chains.len()).sum();
    let port_bytes: usize = ports.iter().map(|p| p.rules.as_str().len()).sum();
    let mut text = String::with_capacity(
        ruleset.filter_rules.as_str().len()
            + ruleset.nat_rules.as_str().len()
            + port_bytes
            + (port_chains + stale.len() * 2) * 32
            + 512,
    );
    let mut objects = 0;
    if top.filter {
        text.push_str("*filter\n");
        for chain in &ruleset.filter_chains {
            chain_line(&mut text, chain);
        }
        text.push_str(ruleset.filter_rules.as_str());
        text.push_str("COMMIT\n");
        objects += ruleset.filter_chains.len() + ruleset.filter_rules.len();
    }
    text.push_str("*nat\n");
    if top.nat {
        for chain in &ruleset.nat_chains {
            chain_line(&mut text, chain);
        }
        objects += ruleset.nat_chains.len() + ruleset.nat_rules.len();
    }
    for port in ports {
        for chain in &port.chains {
            chain_line(&mut text, chain);
        }
    }
    for chain in stale {
        chain_line(&mut text, chain);
    }
    if top.nat {
        text.push_str(ruleset.nat_rules.as_str());
    }
    for port in ports {
        text.push_str(port.rules.as_str());
    }
    for chain in stale {
        let _ = writeln!(text, "-X {chain}");
    }
    text.push_str("COMMIT\n");
    objects += port_chains + ports.iter().map(|p| p.rules.len()).sum::<usize>() + stale.len();
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
