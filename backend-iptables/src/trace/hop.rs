//! The path a traced packet takes: chains entered, rules matched, DNAT
//! choices. What `kube-proxy trace` prints.

use proxy_core::conformance::Outcome;
pub use proxy_core::trace::{Choice, Hop};

use super::rule::Action;

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
