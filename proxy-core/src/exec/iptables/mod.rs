//! [`Iptables`]: the one driver of the iptables tools (`iptables`,
//! `iptables-save`, `iptables-restore` and their `ip6tables`, `-nft` and
//! `-legacy` forms), shared by the iptables mode, the IPVS mode and the
//! cleanup of both.
//!
//! - variant detection: [`Iptables::detect`] (the one variant to write
//!   with, as kubelet's wrapper picks it) and [`Iptables::installed`]
//!   (every variant that may hold leftovers);
//! - the xtables lock: every `iptables` and `iptables-restore` waits for it
//!   ([`WAIT`], upstream's flags); a lock still held after that is exit
//!   code [`RESOURCE_PROBLEM`](super::RESOURCE_PROBLEM), a transient error;
//! - restore: [`Iptables::restore`] (`--noflush --counters`, the failing
//!   line shown with its neighbours);
//! - save parsing: [`save`]; chain names of iptables-nft tables over
//!   netlink ([`nft_netlink::chain_names`]), never by saving the whole table;
//! - errors: [`ToolError`]; timeouts and own-writes recording are the
//!   [`Executor`]'s ([`SystemExecutor`](super::SystemExecutor) under the
//!   context's [`CommandLimits`](super::CommandLimits)).

#[cfg(all(test, feature = "netns"))]
mod kernel_tests;
pub mod save;
mod variant;

pub use variant::{HINT_CHAINS, OWN_HINT_CHAIN, Variant};

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use super::{Command, Executor, Output, ToolError, nft_netlink};
use crate::IpFamily;

/// Wait up to 5 s for the xtables lock, polling every 100 ms (upstream's flags).
pub const WAIT: [&str; 4] = ["-w", "5", "-W", "100000"];

/// The `iptables`, `iptables-save` and `iptables-restore` of one family and
/// variant, run through an executor `X`: an `Arc<dyn Executor>` by default,
/// or a borrowed one (`&dyn Executor`) for a one-off cleanup.
#[derive(Clone)]
pub struct Iptables<X = Arc<dyn Executor>> {
    exec: X,
    family: IpFamily,
    variant: Variant,
}

impl<X> std::fmt::Debug for Iptables<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iptables")
            .field("family", &self.family)
            .field("variant", &self.variant)
            .finish()
    }
}

/// Whether a failed command's exit code 1 means "no" (`-C` of an absent
/// rule, `-N` of an existing chain) or is an error like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitOne {
    No,
    Error,
}

impl<X: Executor> Iptables<X> {
    /// The tools of `variant` for `family`.
    pub fn new(exec: X, family: IpFamily, variant: Variant) -> Self {
        Iptables {
            exec,
            family,
            variant,
        }
    }

    /// The variant to write with, picked like kubelet's iptables wrapper:
    /// the only one whose `-restore` is installed; with both,
    /// [`Variant::hinted`] on nft's `mangle` chains and legacy's rules
    /// (kubelet's hint chains, then our own canary: where this proxy wrote
    /// before, e.g. the other family's backend a moment ago), else
    /// [`Variant::choose`] on the whole `iptables-save` output of each
    /// (both families; a failing save counts as empty). nft's whole-table
    /// saves, slow beside a large table, run only on a host where neither
    /// kubelet nor we have written yet; with neither variant installed,
    /// the unsuffixed tools, or [`ToolError::Missing`].
    pub async fn detect(exec: X, family: IpFamily) -> Result<Self, ToolError> {
        let restore = |v: Variant| v.program(family, "-restore");
        let has_nft = exec.has_program(&restore(Variant::Nft));
        let has_legacy = exec.has_program(&restore(Variant::Legacy));
        let variant = match (has_nft, has_legacy) {
            (true, false) => Variant::Nft,
            (false, true) => Variant::Legacy,
            (false, false) if exec.has_program(&restore(Variant::Unsuffixed)) => {
                Variant::Unsuffixed
            }
            (false, false) => {
                return Err(ToolError::Missing {
                    program: restore(Variant::Unsuffixed),
                    package: "iptables",
                });
            }
            (true, true) => {
                // As kubelet's wrapper: nft's `mangle` chains first,
                // legacy's whole saves (cheap, and `-t mangle` would create
                // that table), nft's whole saves only when neither holds a
                // hint.
                let nft_mangle = nft_mangle_chains(&exec).await;
                let legacy = save_both_families(&exec, Variant::Legacy).await;
                match Variant::hinted(&nft_mangle, &save::chains(&legacy)) {
                    Some(variant) => variant,
                    None => {
                        let nft = save_both_families(&exec, Variant::Nft).await;
                        Variant::choose(&nft, &legacy)
                    }
                }
            }
        };
        tracing::debug!(?family, ?variant, "detected iptables variant");
        Ok(Iptables::new(exec, family, variant))
    }

    /// Every variant of `family` whose rules could hold leftovers: `-nft`
    /// and `-legacy` when installed (a host may have switched), otherwise
    /// the unsuffixed tools; only variants with both `iptables` and
    /// `iptables-save` count.
    pub fn installed(exec: X, family: IpFamily) -> Vec<Self>
    where
        X: Clone,
    {
        let present = |v: Variant| {
            exec.has_program(&v.program(family, ""))
                && exec.has_program(&v.program(family, "-save"))
        };
        let mut variants: Vec<Variant> = Variant::SUFFIXED
            .into_iter()
            .filter(|&v| present(v))
            .collect();
        if variants.is_empty() && present(Variant::Unsuffixed) {
            variants.push(Variant::Unsuffixed);
        }
        variants
            .into_iter()
            .map(|v| Iptables::new(exec.clone(), family, v))
            .collect()
    }

    /// The family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The program of this family and variant followed by `tool` (`""`,
    /// `"-save"`, `"-restore"`).
    pub fn program(&self, tool: &str) -> String {
        self.variant.program(self.family, tool)
    }

    async fn run(&self, cmd: &Command) -> Result<Output, ToolError> {
        tracing::trace!(%cmd, "running");
        self.exec.run(cmd).await.map_err(|source| ToolError::Spawn {
            program: cmd.program.clone(),
            source,
        })
    }

    /// Runs `iptables -w … -t table <args>`: `Ok(true)` when it succeeded,
    /// `Ok(false)` when what it acts on is not there (upstream's
    /// `IsNotFoundError`: [`is_not_found`], which iptables-nft reports with
    /// exit code 2) or, with [`ExitOne::No`], when it exited with 1.
    async fn iptables(
        &self,
        table: &str,
        args: &[&str],
        exit_one: ExitOne,
    ) -> Result<bool, ToolError> {
        let mut all: Vec<&str> = WAIT.to_vec();
        all.extend(["-t", table]);
        all.extend_from_slice(args);
        let cmd = Command::new(self.program(""), all);
        let out = self.run(&cmd).await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) if exit_one == ExitOne::No => Ok(false),
            _ if is_not_found(&out.stderr) => {
                tracing::debug!(%cmd, stderr = out.stderr.trim(), "not found");
                Ok(false)
            }
            code => Err(ToolError::Failed {
                command: cmd.to_string(),
                code,
                stderr: out.stderr.trim().to_string(),
                context: String::new(),
            }),
        }
    }

    /// Whether the installed iptables supports `MASQUERADE --random-fully` (≥ 1.6.2).
    pub async fn has_random_fully(&self) -> bool {
        let Ok(out) = self
            .run(&Command::new(self.program(""), ["--version"]))
            .await
        else {
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

    /// `iptables-restore -w … --noflush --counters` of `input`; a refusal
    /// names the failing input line with its neighbours.
    pub async fn restore(&self, input: &str) -> Result<(), ToolError> {
        let mut args: Vec<&str> = WAIT.to_vec();
        args.extend(["--noflush", "--counters"]);
        let cmd = Command::new(self.program("-restore"), args).with_stdin(input.to_string());
        let out = self.run(&cmd).await?;
        if out.success() {
            return Ok(());
        }
        // "iptables-restore: line 12 failed"
        let context = save::failed_line(&out.stderr)
            .map(|n| save::lines_around(input, n))
            .unwrap_or_default();
        Err(ToolError::Failed {
            command: cmd.to_string(),
            code: out.code,
            stderr: out.stderr.trim().to_string(),
            context,
        })
    }

    /// `iptables-save [-t table]`: one table, or all with `None`.
    pub async fn save(&self, table: Option<&str>) -> Result<String, ToolError> {
        let args: Vec<&str> = table.map(|t| vec!["-t", t]).unwrap_or_default();
        let cmd = Command::new(self.program("-save"), args);
        let out = self.run(&cmd).await?;
        if !out.success() {
            return Err(ToolError::Failed {
                command: cmd.to_string(),
                code: out.code,
                stderr: out.stderr.trim().to_string(),
                context: String::new(),
            });
        }
        Ok(out.stdout)
    }

    /// The chains of `table`. With iptables-nft on the real kernel, one
    /// netlink dump of the chain names ([`nft_netlink::chain_names`]: `iptables-nft-save`
    /// decodes every rule of the table to print them, minutes beside a
    /// large table); otherwise, or when netlink cannot answer, from
    /// `iptables-save -t table`.
    pub async fn chains(&self, table: &str) -> Result<Vec<String>, ToolError> {
        if self.variant == Variant::Nft && self.exec.reads_kernel() {
            match nft_netlink::chain_names(self.family, table) {
                Ok(names) => return Ok(names),
                Err(error) => {
                    tracing::warn!(%error, table, "cannot list the chains over netlink; saving the table instead (slow beside a large table)");
                }
            }
        }
        Ok(save::chains(&self.save(Some(table)).await?))
    }

    /// The `(table, chain)` pairs of `tables`: one netlink dump per table
    /// as [`Iptables::chains`] does, or else one whole `iptables-save`
    /// (cheaper than one save per table where saving is the only way).
    pub async fn chains_of(
        &self,
        tables: &[&str],
    ) -> Result<BTreeSet<(String, String)>, ToolError> {
        if self.variant == Variant::Nft && self.exec.reads_kernel() {
            let mut out = BTreeSet::new();
            for &table in tables {
                for chain in self.chains(table).await? {
                    out.insert((table.to_string(), chain));
                }
            }
            return Ok(out);
        }
        let saved = self.save(None).await?;
        Ok(save::chains_by_table(&saved)
            .into_iter()
            .filter(|(table, _)| tables.contains(table))
            .map(|(table, chain)| (table.to_string(), chain.to_string()))
            .collect())
    }

    /// Creates `chain` unless it exists; returns whether it existed.
    pub async fn ensure_chain(&self, table: &str, chain: &str) -> Result<bool, ToolError> {
        Ok(!self.iptables(table, &["-N", chain], ExitOne::No).await?)
    }

    /// Whether `chain` exists.
    pub async fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, ToolError> {
        self.iptables(table, &["-S", chain], ExitOne::No).await
    }

    /// Prepends the rule `args` to `chain` unless present (`-C`, then `-I`);
    /// returns whether it was present.
    pub async fn ensure_rule(
        &self,
        table: &str,
        chain: &str,
        args: &[String],
    ) -> Result<bool, ToolError> {
        let mut check = rule("-C", chain, args);
        if self.iptables(table, &check, ExitOne::No).await? {
            return Ok(true);
        }
        check[0] = "-I";
        if !self.iptables(table, &check, ExitOne::No).await? {
            return Err(ToolError::Failed {
                command: format!("{} -t {table} {}", self.program(""), check.join(" ")),
                code: Some(1),
                stderr: "insert failed".into(),
                context: String::new(),
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
    ) -> Result<bool, ToolError> {
        self.iptables(table, &rule("-D", chain, args), ExitOne::No)
            .await
    }

    /// Flushes and deletes `chain`; returns whether it existed.
    pub async fn delete_chain(&self, table: &str, chain: &str) -> Result<bool, ToolError> {
        if !self.iptables(table, &["-F", chain], ExitOne::No).await? {
            return Ok(false);
        }
        self.iptables(table, &["-X", chain], ExitOne::No).await
    }

    /// Runs a removal (`-D chain rule…`, `-F chain`, `-X chain`) strictly:
    /// `Ok(true)` when it removed something, `Ok(false)` when stderr says
    /// it was not there ([`is_not_found`]), an error otherwise — also for
    /// exit code 1, which legacy `-X` of a chain still referenced returns
    /// ("Too many links").
    pub async fn remove(&self, table: &str, args: &[&str]) -> Result<bool, ToolError> {
        self.iptables(table, args, ExitOne::Error).await
    }
}

/// `op chain args…`: the arguments of a rule command (`-C`, `-I`, `-D`).
fn rule<'a>(op: &'a str, chain: &'a str, args: &'a [String]) -> Vec<&'a str> {
    let mut all = vec![op, chain];
    all.extend(args.iter().map(String::as_str));
    all
}

/// `iptables-save` output of both families for `variant` (errors count as
/// empty).
async fn save_both_families<X: Executor>(exec: &X, variant: Variant) -> String {
    let mut out = String::new();
    for family in IpFamily::ALL {
        let cmd = Command::new(variant.program(family, "-save"), Vec::<String>::new());
        if let Ok(o) = exec.run(&cmd).await
            && o.success()
        {
            out.push_str(&o.stdout);
        }
    }
    out
}

/// The hint chains ([`HINT_CHAINS`], [`OWN_HINT_CHAIN`]) in iptables-nft's
/// `mangle` tables, both families: each looked up by name over netlink on
/// the real kernel ([`nft_netlink::chain_exists`]: a dump of the chain
/// names would walk every chain of the family, 6 s of a second family's
/// first sync beside a 30k-Service IPv4 `nat` table), else from
/// `iptables-nft-save -t mangle` (which fetches every chain of the family
/// first: 235 MiB and ~25 s beside a 10k-Service nat table). Errors count
/// as no chains.
async fn nft_mangle_chains<X: Executor>(exec: &X) -> Vec<String> {
    let hints = || HINT_CHAINS.iter().chain([&OWN_HINT_CHAIN]);
    let mut out = Vec::new();
    for family in IpFamily::ALL {
        if exec.reads_kernel() {
            let found: io::Result<Vec<&str>> = hints()
                .filter_map(|name| {
                    nft_netlink::chain_exists(family, "mangle", name)
                        .map(|exists| exists.then_some(*name))
                        .transpose()
                })
                .collect();
            if let Ok(found) = found {
                out.extend(found.into_iter().map(String::from));
                continue;
            }
        }
        let cmd = Command::new(Variant::Nft.program(family, "-save"), ["-t", "mangle"]);
        if let Ok(o) = exec.run(&cmd).await
            && o.success()
        {
            out.extend(save::chains(&o.stdout));
        }
    }
    out
}

/// Upstream's `IsNotFoundError`: the messages iptables (legacy and nft)
/// prints when a chain, rule or target does not exist.
pub fn is_not_found(stderr: &str) -> bool {
    stderr.contains("does not exist")
        || stderr.contains("No chain/target/match by that name")
        || stderr.contains("Bad rule (does a matching rule exist in that chain?)")
}

#[cfg(test)]
mod tests;
