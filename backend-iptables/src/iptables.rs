//! The iptables tools of one family and variant, behind an [`Executor`].

use std::sync::Arc;

use proxy_core::IpFamily;

use crate::error::{IptablesError, lines_around};
use crate::exec::{Command, Executor, Output};

/// Which iptables implementation the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy` (x_tables kernel API).
    Legacy,
    /// Only unsuffixed `iptables` binaries exist; whatever they are.
    Unsuffixed,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Nft => "-nft",
            Variant::Legacy => "-legacy",
            Variant::Unsuffixed => "",
        }
    }
}

/// Wait up to 5 s for the xtables lock, polling every 100 ms (upstream's flags).
const WAIT: [&str; 4] = ["-w", "5", "-W", "100000"];

/// Chains kubelet creates to tell which variant it uses.
const HINT_CHAINS: [&str; 2] = [":KUBE-IPTABLES-HINT", ":KUBE-KUBELET-CANARY"];

/// The `iptables`, `iptables-save` and `iptables-restore` of one family.
#[derive(Clone)]
pub struct Iptables {
    exec: Arc<dyn Executor>,
    family: IpFamily,
    variant: Variant,
}

impl std::fmt::Debug for Iptables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iptables")
            .field("family", &self.family)
            .field("variant", &self.variant)
            .finish()
    }
}

fn base(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "iptables",
        IpFamily::V6 => "ip6tables",
    }
}

fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

impl Iptables {
    /// The tools of `variant` for `family`.
    pub fn new(exec: Arc<dyn Executor>, family: IpFamily, variant: Variant) -> Self {
        Iptables {
            exec,
            family,
            variant,
        }
    }

    /// Picks the variant like kubelet's iptables wrapper: a kubelet hint
    /// chain decides; otherwise the variant holding more rules (over both
    /// families) wins; `nft` when tied (e.g. both empty).
    pub async fn detect(exec: Arc<dyn Executor>, family: IpFamily) -> Result<Self, IptablesError> {
        let restore = |v: Variant| format!("{}{}-restore", base(family), v.suffix());
        let has_nft = exec.has_program(&restore(Variant::Nft));
        let has_legacy = exec.has_program(&restore(Variant::Legacy));
        let variant = match (has_nft, has_legacy) {
            (true, false) => Variant::Nft,
            (false, true) => Variant::Legacy,
            (false, false) if exec.has_program(&restore(Variant::Unsuffixed)) => {
                Variant::Unsuffixed
            }
            (false, false) => return Err(IptablesError::MissingTool(restore(Variant::Unsuffixed))),
            (true, true) => {
                let nft = Self::save_all(&exec, Variant::Nft).await;
                let legacy = Self::save_all(&exec, Variant::Legacy).await;
                let hinted = |s: &str| {
                    HINT_CHAINS
                        .iter()
                        .any(|h| s.lines().any(|l| l.starts_with(h)))
                };
                if hinted(&nft) {
                    Variant::Nft
                } else if hinted(&legacy) || count_rules(&legacy) > count_rules(&nft) {
                    Variant::Legacy
                } else {
                    Variant::Nft
                }
            }
        };
        tracing::debug!(?family, ?variant, "detected iptables variant");
        Ok(Iptables::new(exec, family, variant))
    }

    /// `iptables-save` output of both families for `variant` (errors count as empty).
    async fn save_all(exec: &Arc<dyn Executor>, variant: Variant) -> String {
        let mut out = String::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            let cmd = Command::new(
                format!("{}{}-save", base(family), variant.suffix()),
                Vec::<String>::new(),
            );
            if let Ok(o) = exec.run(&cmd).await
                && o.success()
            {
                out.push_str(&o.stdout);
            }
        }
        out
    }

    /// The family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    fn tool(&self, suffix: &str) -> String {
        format!("{}{}{suffix}", base(self.family), self.variant.suffix())
    }

    async fn run(&self, cmd: Command) -> Result<Output, IptablesError> {
        tracing::trace!(%cmd, "running");
        self.exec
            .run(&cmd)
            .await
            .map_err(|source| IptablesError::Spawn {
                program: cmd.program.clone(),
                source,
            })
    }

    /// Runs `iptables -w … -t table <args>`; "not found" (exit code 1: rule
    /// or chain not found, or chain exists; or, like upstream's
    /// `IsNotFoundError`, a message that a chain or rule does not exist,
    /// which iptables-nft reports with exit code 2) is returned as
    /// `Ok(false)`; anything else is an error.
    async fn iptables(&self, table: &str, args: &[&str]) -> Result<bool, IptablesError> {
        let mut all: Vec<&str> = WAIT.to_vec();
        all.extend(["-t", table]);
        all.extend_from_slice(args);
        let cmd = Command::new(self.tool(""), all);
        let out = self.run(cmd.clone()).await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ if is_not_found(&out.stderr) => Ok(false),
            code => Err(IptablesError::Command {
                command: cmd.to_string(),
                code,
                stderr: out.stderr.trim().to_string(),
            }),
        }
    }

    /// Whether the installed iptables supports `MASQUERADE --random-fully` (≥ 1.6.2).
    pub async fn has_random_fully(&self) -> bool {
        let Ok(out) = self.run(Command::new(self.tool(""), ["--version"])).await else {
            return false;
        };
        // "iptables v1.8.9 (nf_tables)"
        let version: Vec<u32> = out
            .stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix('v'))
            .map(|v| v.split('.').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        version.as_slice() >= [1, 6, 2].as_slice()
    }

    /// `iptables-restore --noflush --counters` of `input`.
    pub async fn restore(&self, input: &str) -> Result<(), IptablesError> {
        let tool = self.tool("-restore");
        let mut args: Vec<&str> = WAIT.to_vec();
        args.extend(["--noflush", "--counters"]);
        let out = self
            .run(Command::new(&tool, args).with_stdin(input.to_string()))
            .await?;
        if out.success() {
            return Ok(());
        }
        // "iptables-restore: line 12 failed"
        let context = out
            .stderr
            .split("line ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| lines_around(input, n))
            .unwrap_or_default();
        Err(IptablesError::Restore {
            tool,
            code: out.code,
            stderr: out.stderr.trim().to_string(),
            context,
        })
    }

    /// `iptables-save -t table`.
    pub async fn save(&self, table: &str) -> Result<String, IptablesError> {
        let cmd = Command::new(self.tool("-save"), ["-t", table]);
        let out = self.run(cmd.clone()).await?;
        if !out.success() {
            return Err(IptablesError::Command {
                command: cmd.to_string(),
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// The chains of `table` (from `iptables-save`).
    pub async fn chains(&self, table: &str) -> Result<Vec<String>, IptablesError> {
        let saved = self.save(table).await?;
        Ok(saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect())
    }

    /// Creates `chain` unless it exists; returns whether it existed.
    pub async fn ensure_chain(&self, table: &str, chain: &str) -> Result<bool, IptablesError> {
        Ok(!self.iptables(table, &["-N", chain]).await?)
    }

    /// Whether `chain` exists.
    pub async fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, IptablesError> {
        self.iptables(table, &["-S", chain]).await
    }

    /// Prepends the rule `args` to `chain` unless present (`-C`, then `-I`);
    /// returns whether it was present.
    pub async fn ensure_rule(
        &self,
        table: &str,
        chain: &str,
        args: &[String],
    ) -> Result<bool, IptablesError> {
        let mut check: Vec<&str> = vec!["-C", chain];
        check.extend(args.iter().map(String::as_str));
        if self.iptables(table, &check).await? {
            return Ok(true);
        }
        check[0] = "-I";
        if !self.iptables(table, &check).await? {
            return Err(IptablesError::Command {
                command: format!("{} -t {table} {}", self.tool(""), check.join(" ")),
                code: Some(1),
                stderr: "insert failed".into(),
            });
        }
        Ok(false)
    }

    /// Deletes the rule `args` from `chain`; returns whether it was there.
    pub async fn delete_rule(
        &self,
        table: &str,
        chain: &str,
        args: &[String],
    ) -> Result<bool, IptablesError> {
        let mut del: Vec<&str> = vec!["-D", chain];
        del.extend(args.iter().map(String::as_str));
        self.iptables(table, &del).await
    }

    /// Flushes and deletes `chain`; returns whether it existed.
    pub async fn delete_chain(&self, table: &str, chain: &str) -> Result<bool, IptablesError> {
        if !self.iptables(table, &["-F", chain]).await? {
            return Ok(false);
        }
        self.iptables(table, &["-X", chain]).await
    }
}

/// Upstream's `IsNotFoundError`: the messages iptables (legacy and nft)
/// prints when a chain, rule or target does not exist.
fn is_not_found(stderr: &str) -> bool {
    stderr.contains("does not exist")
        || stderr.contains("No chain/target/match by that name")
        || stderr.contains("Bad rule (does a matching rule exist in that chain?)")
}

#[cfg(test)]
mod not_found_tests {
    use super::is_not_found;

    #[test]
    fn missing_chains_and_rules_are_not_found_in_both_variants() {
        // iptables-nft 1.8.9, exit code 2.
        assert!(is_not_found(
            "iptables v1.8.9 (nf_tables): Chain 'KUBE-EXTERNAL-SERVICES' does not exist"
        ));
        // iptables-legacy.
        assert!(is_not_found(
            "iptables: No chain/target/match by that name."
        ));
        assert!(is_not_found(
            "iptables: Bad rule (does a matching rule exist in that chain?)."
        ));
        assert!(!is_not_found(
            "iptables: Permission denied (you must be root)."
        ));
    }
}
