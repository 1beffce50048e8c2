//! An [`Executor`] that interprets iptables commands against in-memory
//! [`Tables`] (one per family), as `iptables-nft` on a fresh host would.

use std::sync::{Arc, Mutex, MutexGuard};

use proxy_core::IpFamily;

use crate::exec::{Command, Executor, Output};
use crate::tables::Tables;

/// The fake's state.
#[derive(Debug, Default)]
pub struct FakeState {
    /// IPv4 tables.
    pub v4: Tables,
    /// IPv6 tables.
    pub v6: Tables,
    /// Every command run, in order.
    pub log: Vec<Command>,
    /// Make the next this many `*-restore` runs fail (exit 1).
    pub fail_restores: usize,
}

impl FakeState {
    /// The tables of `family`.
    pub fn tables(&self, family: IpFamily) -> &Tables {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }

    fn tables_mut(&mut self, family: IpFamily) -> &mut Tables {
        match family {
            IpFamily::V4 => &mut self.v4,
            IpFamily::V6 => &mut self.v6,
        }
    }
}

/// A fake `iptables-nft` installation.
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor {
    state: Arc<Mutex<FakeState>>,
}

fn out(code: i32, stdout: String, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout,
        stderr: stderr.to_string(),
    }
}

impl FakeExecutor {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state (poison-tolerant: a panicking test must not hide others).
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Canonical dump of `family`: `iptables-save` of every table that
    /// holds something (see [`Tables::dump`]).
    pub fn dump(&self, family: IpFamily) -> String {
        self.state().tables(family).dump()
    }

    /// Forgets the command log, returning it.
    pub fn take_log(&self) -> Vec<Command> {
        std::mem::take(&mut self.state().log)
    }

    /// Simulates `iptables -F; iptables -X` of every table (a firewall
    /// reload): all rules and user chains vanish.
    pub fn flush_everything(&self, family: IpFamily) {
        *self.state().tables_mut(family) = Tables::new();
    }

    fn interpret(&self, cmd: &Command) -> Output {
        let program = cmd.program.rsplit('/').next().unwrap_or(&cmd.program);
        let family = if program.starts_with("ip6tables") {
            IpFamily::V6
        } else {
            IpFamily::V4
        };
        let mut state = self.state();
        state.log.push(cmd.clone());
        if program.contains("-legacy") {
            // The fake host is an nft one: legacy tables are empty.
            return out(0, String::new(), "");
        }
        let mut table = "filter".to_string();
        let mut noflush = false;
        let mut rest: Vec<String> = Vec::new();
        let mut args = cmd.args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-w" | "--wait" | "-W" | "--wait-interval" => {
                    args.next();
                }
                "-t" | "--table" => table = args.next().cloned().unwrap_or_default(),
                "--noflush" | "-n" if program.ends_with("-restore") => noflush = true,
                "--counters" | "-c" => {}
                "--version" => return out(0, format!("{program} v1.8.9 (nf_tables)\n"), ""),
                _ => rest.push(arg.clone()),
            }
        }
        if program.ends_with("-restore") {
            if state.fail_restores > 0 {
                state.fail_restores -= 1;
                return out(
                    1,
                    String::new(),
                    "iptables-restore: line 1 failed (injected)",
                );
            }
            let input = cmd.stdin.clone().unwrap_or_default();
            return match state.tables_mut(family).restore(&input, noflush) {
                Ok(()) => out(0, String::new(), ""),
                Err(e) => out(
                    1,
                    String::new(),
                    &format!("{program}: line {} failed: {}", e.line, e.reason),
                ),
            };
        }
        if program.ends_with("-save") {
            let tables = state.tables_mut(family);
            let only = cmd
                .args
                .iter()
                .position(|a| a == "-t")
                .map(|_| table.as_str());
            if let Some(t) = only {
                tables.table_mut(t);
            }
            return out(0, tables.save(only), "");
        }
        let tables = state.tables_mut(family);
        if rest.first().map(String::as_str) == Some("-S") {
            let chain = rest.get(1).cloned().unwrap_or_default();
            return match tables.chain(&table, &chain) {
                Some(c) => {
                    let mut text = format!("-N {chain}\n");
                    for r in &c.rules {
                        text.push_str(&format!("-A {chain} {}\n", r.text()));
                    }
                    out(0, text, "")
                }
                None => out(
                    1,
                    String::new(),
                    "iptables: No chain/target/match by that name.",
                ),
            };
        }
        match tables.command(&table, &rest) {
            Ok(true) => out(0, String::new(), ""),
            Ok(false) => out(
                1,
                String::new(),
                "iptables: Bad rule (does a matching rule exist in that chain?).",
            ),
            Err(e) => out(1, String::new(), &format!("iptables: {e}.")),
        }
    }
}

#[async_trait::async_trait]
impl Executor for FakeExecutor {
    async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
        Ok(self.interpret(cmd))
    }

    fn has_program(&self, _program: &str) -> bool {
        true
    }
}
