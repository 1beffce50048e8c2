//! The path a traced packet takes: chains entered, rules matched, DNAT
//! choices. What `kube-proxy trace` prints.

use std::net::SocketAddr;

use proxy_core::conformance::Outcome;

use super::rule::Action;

/// One step of a packet's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// How deep in jumps (the built-in chain is 1).
    pub depth: usize,
    /// `nat`, `filter`, ….
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rule that matched, as `iptables-save` prints it; `None` when the
    /// hop is the chain being entered.
    pub rule: Option<String>,
    /// What the match means: DNAT target and probability, affinity, marks.
    pub notes: Vec<String>,
}

impl Hop {
    pub(super) fn enter(depth: usize, table: &str, chain: &str) -> Self {
        Hop {
            depth,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: None,
            notes: Vec::new(),
        }
    }

    pub(super) fn rule(
        depth: usize,
        table: &str,
        chain: &str,
        rule: String,
        notes: Vec<String>,
    ) -> Self {
        Hop {
            depth,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: Some(rule),
            notes,
        }
    }
}

/// One endpoint a DNAT may send the packet to.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// The chance that a new client (no affinity entry) lands here.
    pub probability: f64,
    /// Whether this DNAT is reached through a session-affinity check
    /// (`recent --rcheck`): a client seen recently goes here.
    pub affinity: bool,
}

/// A traced packet: its path and where it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Every chain entered and rule matched, in order.
    pub hops: Vec<Hop>,
    /// Every DNAT on the way, in order.
    pub choices: Vec<Choice>,
    /// The packet mark at the end (the masquerade bit, if set, was cleared
    /// by `KUBE-POSTROUTING` when it masqueraded).
    pub mark: u32,
    /// What happens to the packet.
    pub outcome: Outcome,
}

fn value_after<'a>(args: &'a [String], option: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == option)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The `statistic --probability` of a rule.
pub(super) fn probability(args: &[String]) -> Option<f64> {
    value_after(args, "--probability").and_then(|p| p.parse().ok())
}

/// Whether a rule checks the session-affinity list (`recent --rcheck`).
pub(super) fn is_affinity_check(args: &[String]) -> bool {
    args.iter().any(|a| a == "--rcheck")
}

/// What a matched rule means, in words.
pub(super) fn notes(
    args: &[String],
    action: &Action,
    probability: Option<f64>,
    affinity: bool,
    mark: u32,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(p) = probability {
        notes.push(format!("taken with probability {p}"));
    }
    if affinity {
        let seconds = value_after(args, "--seconds").unwrap_or("?");
        let list = value_after(args, "--name").unwrap_or("?");
        notes.push(format!(
            "session affinity: taken when the client is in list {list} (seen in the last {seconds}s)"
        ));
    }
    if args.iter().any(|a| a == "--set") && value_after(args, "--name").is_some() {
        notes.push(format!(
            "session affinity: remembers the client in list {}",
            value_after(args, "--name").unwrap_or("?")
        ));
    }
    match action {
        Action::Dnat(to) => notes.push(format!("DNAT to {to}")),
        Action::Mark { or, xor, and_not } => {
            let after = ((mark | or) & !and_not) ^ xor;
            notes.push(format!("mark {mark:#x} -> {after:#x}"));
        }
        Action::Masquerade => notes.push("source rewritten to a node address".to_string()),
        Action::Verdict(v) => notes.push(format!("verdict {v}")),
        Action::None | Action::Jump(_) => {}
    }
    notes
}
