//! How a sync writes the top-level chains: each one rewritten, or changed
//! rule by rule from what the previous sync left in the kernel.
//!
//! `KUBE-SERVICES` holds a rule per Service IP and port, 30,000+ rules at
//! 30k Services. Rewriting it for one added Service made
//! `iptables-nft-restore` parse and commit all of them: 8 s at 30k, where
//! a one-endpoint change (one Service's own chains) takes 0.8 s. A chain
//! whose rules all differ from the previous rendering only by some rules
//! added or removed is changed instead: `-D` with each rule that went
//! (by its text, not its number: if the kernel does not hold it, the
//! restore fails and the next sync is full, rather than deleting another
//! rule) and `-I CHAIN n` with each new rule at its place, in order. The
//! chain ends exactly as a rewrite would leave it, rule order included.
//! Anything else (a rule twice, rules reordered, more changed than kept)
//! rewrites the chain.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The rules of `rules` (restore lines `-A CHAIN …`) by chain, each in
/// order, in one pass.
fn rules_by_chain(rules: &str) -> HashMap<&str, Vec<&str>> {
    let mut chains: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in rules.lines() {
        if let Some(chain) = line
            .strip_prefix("-A ")
            .and_then(|rest| rest.split(' ').next())
        {
            chains.entry(chain).or_default().push(line);
        }
    }
    chains
}

/// What turns a chain's previous rules into its new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChainWrite<'a> {
    /// Same rules, same order: nothing to write.
    Unchanged,
    /// Flush the chain and append every new rule.
    Rewrite,
    /// Delete `deleted`, then insert each of `inserted` at its index
    /// (0-based, in the new rules), lowest first.
    Edit {
        deleted: Vec<&'a str>,
        inserted: Vec<(usize, &'a str)>,
    },
}

/// How to go from `old` to `new`, the `-A` lines of one chain.
fn chain_write<'a>(old: &[&'a str], new: &[&'a str]) -> ChainWrite<'a> {
    if old == new {
        return ChainWrite::Unchanged;
    }
    let old_set: HashSet<&str> = old.iter().copied().collect();
    let new_set: HashSet<&str> = new.iter().copied().collect();
    if old_set.len() != old.len() || new_set.len() != new.len() {
        // A rule twice: `-D` would pick one of them, keep it simple.
        return ChainWrite::Rewrite;
    }
    let deleted: Vec<&str> = old
        .iter()
        .copied()
        .filter(|l| !new_set.contains(l))
        .collect();
    let inserted: Vec<(usize, &str)> = new
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, l)| !old_set.contains(l))
        .collect();
    // The rules both hold must keep their order for the inserts' indices
    // to be right.
    let kept_old = old.iter().filter(|l| new_set.contains(*l));
    let kept_new = new.iter().filter(|l| old_set.contains(*l));
    // A rewrite writes the declaration and every new rule.
    if !kept_old.eq(kept_new) || deleted.len() + inserted.len() > new.len() {
        return ChainWrite::Rewrite;
    }
    ChainWrite::Edit { deleted, inserted }
}

/// The part of one table's restore input that writes its top-level
/// chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopLevelWrite {
    /// `:CHAIN - [0:0]` of each chain rewritten (flushes it).
    pub declarations: String,
    /// The rules of the rewritten chains, then the deletions and
    /// insertions of the edited ones.
    pub rules: String,
    /// Chains declared plus rules written, deleted and inserted.
    pub objects: usize,
}

impl TopLevelWrite {
    /// Writes nothing.
    pub fn is_empty(&self) -> bool {
        self.declarations.is_empty() && self.rules.is_empty()
    }

    /// Every chain of `chains` rewritten with its rules from `new` (the
    /// table's top-level rules).
    pub fn rewrite(chains: &[&str], new: &str) -> Self {
        let mut write = TopLevelWrite::default();
        for chain in chains {
            write.declare(chain);
        }
        write.rules.push_str(new);
        write.objects += new.lines().count();
        write
    }

    /// The chains of `chains` changed from the rules `previous` (what the
    /// kernel holds) to the rules `new`, each rewritten or edited (see the
    /// module documentation), unchanged ones left out.
    pub fn since(chains: &[&str], previous: &str, new: &str) -> Self {
        let mut write = TopLevelWrite::default();
        // Most partial syncs (endpoint changes) change no top-level rule.
        if previous == new {
            return write;
        }
        let (mut old_by_chain, mut new_by_chain) = (rules_by_chain(previous), rules_by_chain(new));
        for chain in chains {
            let old_rules = old_by_chain.remove(chain).unwrap_or_default();
            let new_rules = new_by_chain.remove(chain).unwrap_or_default();
            match chain_write(&old_rules, &new_rules) {
                ChainWrite::Unchanged => {}
                ChainWrite::Rewrite => {
                    write.declare(chain);
                    for rule in &new_rules {
                        write.rules.push_str(rule);
                        write.rules.push('\n');
                    }
                    write.objects += new_rules.len();
                }
                ChainWrite::Edit { deleted, inserted } => {
                    // Every rule starts with `-A {chain} ` (see `rules_by_chain`).
                    for rule in &deleted {
                        // `-A CHAIN spec` → `-D CHAIN spec`.
                        let _ = writeln!(write.rules, "-D {}", &rule[3..]);
                    }
                    // Each insert finds the rules before its index in place
                    // (kept ones and earlier inserts); at the end, `-A`.
                    let kept = old_rules.len() - deleted.len();
                    for (len, (index, rule)) in (kept..).zip(&inserted) {
                        if *index >= len {
                            let _ = writeln!(write.rules, "{rule}");
                        } else {
                            let spec = &rule[3 + chain.len() + 1..];
                            let _ = writeln!(write.rules, "-I {chain} {} {spec}", index + 1);
                        }
                    }
                    write.objects += deleted.len() + inserted.len();
                }
            }
        }
        write
    }

    fn declare(&mut self, chain: &str) {
        let _ = writeln!(self.declarations, ":{chain} - [0:0]");
        self.objects += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Tables;

    const CHAINS: &[&str] = &["KUBE-SERVICES", "KUBE-NODEPORTS"];

    fn rules(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// The nat table after `write` is applied to a kernel holding
    /// `previous`, and after `new` is written from scratch.
    fn applied(previous: &str, new: &str, write: &TopLevelWrite) -> (String, String) {
        let table = |rules: &str| {
            let mut t = Tables::default();
            let text = format!(
                "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SVC-B - [0:0]\n:KUBE-SVC-C - [0:0]\n{rules}COMMIT\n"
            );
            t.restore(&text, false).unwrap();
            t
        };
        let mut edited = table(previous);
        edited
            .restore(
                &format!("*nat\n{}{}COMMIT\n", write.declarations, write.rules),
                true,
            )
            .unwrap();
        (edited.save(Some("nat")), table(new).save(Some("nat")))
    }

    const A: &str = "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp --dport 80 -j KUBE-SVC-A";
    const B: &str = "-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp --dport 80 -j KUBE-SVC-B";
    const C: &str = "-A KUBE-SERVICES -d 10.96.0.3/32 -p tcp --dport 80 -j KUBE-SVC-C";
    const LAST: &str = "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS";
    const NP: &str = "-A KUBE-NODEPORTS -p tcp --dport 30080 -j KUBE-SVC-A";

    #[test]
    fn added_and_removed_rules_are_edited_in_place_and_end_as_a_rewrite() {
        for (old, new) in [
            (vec![A, C, LAST], vec![A, B, C, LAST]),
            (vec![A, B, C, LAST], vec![A, C, LAST]),
            (vec![B, C, LAST, NP], vec![A, B, LAST, NP]),
            (vec![A, LAST, NP], vec![A, B, C, LAST, NP]),
            (vec![A, B, LAST], vec![C, A, B, LAST]),
            (vec![A, B, C, LAST], vec![B, LAST]),
        ] {
            let (old, new) = (rules(&old), rules(&new));
            let write = TopLevelWrite::since(CHAINS, &old, &new);
            assert!(
                write.declarations.is_empty(),
                "edited, not rewritten:\n{write:?}"
            );
            let (edited, rewritten) = applied(&old, &new, &write);
            assert_eq!(edited, rewritten, "{old}→\n{new}\nwith\n{}", write.rules);
        }
    }

    #[test]
    fn one_added_rule_writes_one_insert() {
        let (old, new) = (rules(&[A, C, LAST]), rules(&[A, B, C, LAST]));
        let write = TopLevelWrite::since(CHAINS, &old, &new);
        assert_eq!(
            write.rules,
            "-I KUBE-SERVICES 2 -d 10.96.0.2/32 -p tcp --dport 80 -j KUBE-SVC-B\n"
        );
        assert_eq!(write.objects, 1);
        let removed = TopLevelWrite::since(CHAINS, &new, &old);
        assert_eq!(
            removed.rules,
            "-D KUBE-SERVICES -d 10.96.0.2/32 -p tcp --dport 80 -j KUBE-SVC-B\n"
        );
    }

    #[test]
    fn unchanged_chains_write_nothing() {
        let old = rules(&[A, LAST, NP]);
        assert!(TopLevelWrite::since(CHAINS, &old, &old).is_empty());
        let write = TopLevelWrite::since(CHAINS, &old, &rules(&[A, B, LAST, NP]));
        assert!(
            !write.rules.contains("KUBE-NODEPORTS -p"),
            "{}",
            write.rules
        );
    }

    #[test]
    fn reordered_doubled_or_mostly_changed_chains_are_rewritten() {
        for (old, new) in [
            (vec![A, B, LAST], vec![B, A, LAST]),
            (vec![A, LAST], vec![A, A, LAST]),
            (vec![A, B, LAST], vec![C, LAST]),
        ] {
            let (old, new) = (rules(&old), rules(&new));
            let write = TopLevelWrite::since(CHAINS, &old, &new);
            assert_eq!(
                write.declarations, ":KUBE-SERVICES - [0:0]\n",
                "{old}→\n{new}"
            );
            let (edited, rewritten) = applied(&old, &new, &write);
            assert_eq!(edited, rewritten);
        }
    }

    #[test]
    fn a_chain_name_prefix_of_another_is_not_mixed_up() {
        let text = rules(&[A, "-A KUBE-SERVICES-X -j RETURN"]);
        assert_eq!(rules_by_chain(&text)["KUBE-SERVICES"], [A]);
    }
}
