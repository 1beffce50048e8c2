//! An in-memory model of iptables state: tables of chains of rules, fed by
//! `iptables-restore` input or `iptables-save` output, applied with the
//! semantics of `iptables-restore [--noflush]`, and dumped canonically.
//!
//! The fake executor keeps one per family, and the packet tracer walks it.

mod parse;

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use parse::{quote, tokenize};

/// Why a restore input was refused (the whole input is then ignored, as an
/// `iptables-restore` transaction would be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RestoreError {
    /// 1-based line of the input.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Targets that are not chains.
const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "CONNMARK",
    "LOG",
    "REDIRECT",
    "NOTRACK",
    "CT",
];

/// The built-in chains of `table`.
pub fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

/// One rule: its arguments after `-A CHAIN`, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The arguments, e.g. `["-m", "comment", "--comment", "a b", "-j", "X"]`.
    pub args: Vec<String>,
}

impl Rule {
    /// The `-j` target, if any.
    pub fn target(&self) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == "-j" || a == "--jump")
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    /// The arguments as `iptables-save` prints them (quoted where needed).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&quote(arg));
        }
        out
    }
}

/// A chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Built-in chains have a policy and cannot be deleted.
    pub builtin: bool,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// One table: chains by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// The chains.
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    fn new(name: &str) -> Self {
        let chains = builtin_chains(name)
            .iter()
            .map(|c| {
                (
                    (*c).to_string(),
                    Chain {
                        builtin: true,
                        rules: Vec::new(),
                    },
                )
            })
            .collect();
        Table { chains }
    }

    fn references(&self, chain: &str) -> usize {
        self.chains
            .values()
            .flat_map(|c| &c.rules)
            .filter(|r| r.target() == Some(chain))
            .count()
    }

    fn check_targets(&self) -> Result<(), String> {
        for (name, chain) in &self.chains {
            for rule in &chain.rules {
                if let Some(t) = rule.target()
                    && !BUILTIN_TARGETS.contains(&t)
                    && !self.chains.contains_key(t)
                {
                    return Err(format!("rule in {name} jumps to missing chain {t}"));
                }
            }
        }
        Ok(())
    }
}

/// A whole family's iptables state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    tables: BTreeMap<String, Table>,
}

impl Tables {
    /// No table at all (what a fresh network namespace shows).
    pub fn new() -> Self {
        Self::default()
    }

    /// The state `text` (restore input or save output) describes, applied
    /// to an empty state.
    pub fn parse(text: &str) -> Result<Self, RestoreError> {
        let mut t = Tables::new();
        t.restore(text, false)?;
        Ok(t)
    }

    /// A table, if it was ever touched.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    /// A chain.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.tables.get(table)?.chains.get(chain)
    }

    /// The table `name`, created with its built-in chains if needed.
    pub fn table_mut(&mut self, name: &str) -> &mut Table {
        self.tables
            .entry(name.to_string())
            .or_insert_with(|| Table::new(name))
    }

    /// Number of rules over every table.
    pub fn rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.chains.values())
            .map(|c| c.rules.len())
            .sum()
    }

    /// Applies `iptables-restore` input atomically: on error nothing changes.
    /// With `noflush`, chains not named in the input are left alone (a
    /// `:CHAIN` line still flushes that chain); without it, each table named
    /// in the input is emptied first.
    pub fn restore(&mut self, text: &str, noflush: bool) -> Result<(), RestoreError> {
        let mut work = self.clone();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |reason: String| RestoreError {
                line: i + 1,
                reason,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if current.is_some() {
                    return Err(err("table started before COMMIT".into()));
                }
                let table = work.table_mut(name);
                if !noflush {
                    *table = Table::new(name);
                }
                current = Some(name.to_string());
                continue;
            }
            let Some(table_name) = current.clone() else {
                return Err(err(format!("{line:?} outside a table")));
            };
            let table = work.table_mut(&table_name);
            if line == "COMMIT" {
                table.check_targets().map_err(err)?;
                current = None;
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if name.is_empty() {
                    return Err(err("empty chain name".into()));
                }
                let chain = table.chains.entry(name.to_string()).or_default();
                if !chain.builtin || !noflush {
                    chain.rules.clear();
                }
                continue;
            }
            let tokens = tokenize(line).map_err(err)?;
            apply_command(table, &tokens).map_err(err)?;
        }
        if current.is_some() {
            return Err(RestoreError {
                line: text.lines().count(),
                reason: "missing COMMIT".into(),
            });
        }
        *self = work;
        Ok(())
    }

    /// Runs one `iptables` command (`-N`, `-X`, `-F`, `-A`, `-I`, `-D`, `-C`)
    /// on `table`. `-C` answers with `Ok(false)` when the rule is missing.
    pub fn command(&mut self, table: &str, args: &[String]) -> Result<bool, String> {
        let mut work = self.clone();
        let found = apply_command(work.table_mut(table), args)?;
        *self = work;
        Ok(found)
    }

    /// Like [`Tables::save`] of every table, leaving out tables that hold
    /// only empty built-in chains (so a cleaned-up state dumps like a
    /// fresh one).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (name, table) in &self.tables {
            if table
                .chains
                .values()
                .all(|c| c.builtin && c.rules.is_empty())
            {
                continue;
            }
            out.push_str(&self.save(Some(name)));
        }
        out
    }

    /// The tables in `iptables-save` form, tables and chains sorted by name
    /// (rules keep their order): a canonical dump two states can be
    /// compared by. Only tables in `only` when given.
    pub fn save(&self, only: Option<&str>) -> String {
        let mut out = String::new();
        for (name, table) in &self.tables {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let _ = writeln!(out, "*{name}");
            for (chain, c) in &table.chains {
                let policy = if c.builtin { "ACCEPT" } else { "-" };
                let _ = writeln!(out, ":{chain} {policy} [0:0]");
            }
            for (chain, c) in &table.chains {
                for rule in &c.rules {
                    let _ = writeln!(out, "-A {chain} {}", rule.text());
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// Applies one command (tokens starting with the flag) to `table`.
fn apply_command(table: &mut Table, tokens: &[String]) -> Result<bool, String> {
    let (flag, rest) = tokens.split_first().ok_or("empty command")?;
    let (chain, spec) = rest
        .split_first()
        .map(|(c, s)| (c.as_str(), s))
        .unwrap_or(("", &[]));
    let missing = || format!("chain {chain:?} does not exist");
    match flag.as_str() {
        "-A" | "--append" => {
            let c = table.chains.get_mut(chain).ok_or_else(missing)?;
            c.rules.push(Rule {
                args: spec.to_vec(),
            });
        }
        "-I" | "--insert" => {
            let c = table.chains.get_mut(chain).ok_or_else(missing)?;
            let (pos, spec) = match spec.first().and_then(|s| s.parse::<usize>().ok()) {
                Some(n) if n >= 1 => (n - 1, &spec[1..]),
                _ => (0, spec),
            };
            if pos > c.rules.len() {
                return Err(format!("index {} too big for {chain}", pos + 1));
            }
            c.rules.insert(
                pos,
                Rule {
                    args: spec.to_vec(),
                },
            );
        }
        "-D" | "--delete" => {
            let c = table.chains.get_mut(chain).ok_or_else(missing)?;
            let idx = c
                .rules
                .iter()
                .position(|r| r.args == spec)
                .ok_or_else(|| format!("rule not found in {chain}"))?;
            c.rules.remove(idx);
        }
        "-C" | "--check" => {
            let c = table.chains.get(chain).ok_or_else(missing)?;
            return Ok(c.rules.iter().any(|r| r.args == spec));
        }
        "-N" | "--new-chain" => {
            if table.chains.contains_key(chain) {
                return Err(format!("chain {chain} already exists"));
            }
            table.chains.insert(chain.to_string(), Chain::default());
        }
        "-F" | "--flush" => {
            if chain.is_empty() {
                table.chains.values_mut().for_each(|c| c.rules.clear());
            } else {
                table
                    .chains
                    .get_mut(chain)
                    .ok_or_else(missing)?
                    .rules
                    .clear();
            }
        }
        "-X" | "--delete-chain" => {
            let c = table.chains.get(chain).ok_or_else(missing)?;
            if c.builtin {
                return Err(format!("cannot delete built-in chain {chain}"));
            }
            if !c.rules.is_empty() {
                return Err(format!("chain {chain} is not empty"));
            }
            if table.references(chain) > 0 {
                return Err(format!("chain {chain} is still referenced"));
            }
            table.chains.remove(chain);
        }
        other => return Err(format!("unsupported command {other}")),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n-A KUBE-SERVICES -m comment --comment \"a b\" -j KUBE-SVC-A\n-A KUBE-SVC-A -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n";

    #[test]
    fn noflush_keeps_chains_not_named_in_the_input() {
        let mut t = Tables::parse(BASE).unwrap();
        t.restore(
            "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\nCOMMIT\n",
            true,
        )
        .unwrap();
        assert_eq!(t.chain("nat", "KUBE-SVC-A").unwrap().rules.len(), 1);
        assert_eq!(
            t.chain("nat", "KUBE-SERVICES").unwrap().rules[0].args,
            ["-j", "KUBE-SVC-A"]
        );
    }

    #[test]
    fn a_failing_restore_changes_nothing() {
        let mut t = Tables::parse(BASE).unwrap();
        let before = t.clone();
        let err = t
            .restore(
                "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-MISSING\nCOMMIT\n",
                true,
            )
            .unwrap_err();
        assert!(err.reason.contains("missing chain"), "{err}");
        assert_eq!(t, before);
    }

    #[test]
    fn deleting_a_referenced_chain_fails() {
        let mut t = Tables::parse(BASE).unwrap();
        let err = t
            .restore("*nat\n:KUBE-SVC-A - [0:0]\n-X KUBE-SVC-A\nCOMMIT\n", true)
            .unwrap_err();
        assert!(err.reason.contains("still referenced"), "{err}");
        t.restore(
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n-X KUBE-SVC-A\nCOMMIT\n",
            true,
        )
        .unwrap();
        assert!(t.chain("nat", "KUBE-SVC-A").is_none());
    }

    #[test]
    fn save_quotes_arguments_with_spaces_and_roundtrips() {
        let t = Tables::parse(BASE).unwrap();
        let saved = t.save(Some("nat"));
        assert!(
            saved.contains("-A KUBE-SERVICES -m comment --comment \"a b\" -j KUBE-SVC-A"),
            "{saved}"
        );
        assert_eq!(Tables::parse(&saved).unwrap(), t);
    }

    #[test]
    fn check_and_insert_commands() {
        let mut t = Tables::new();
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        t.command("filter", &args("-N KUBE-FORWARD")).unwrap();
        assert!(
            !t.command("filter", &args("-C FORWARD -j KUBE-FORWARD"))
                .unwrap()
        );
        t.command("filter", &args("-I FORWARD -j KUBE-FORWARD"))
            .unwrap();
        assert!(
            t.command("filter", &args("-C FORWARD -j KUBE-FORWARD"))
                .unwrap()
        );
        assert!(t.command("filter", &args("-N KUBE-FORWARD")).is_err());
    }
}
