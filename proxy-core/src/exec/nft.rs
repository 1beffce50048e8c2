//! [`Nft`]: the one driver of the `nft` program, shared by every backend
//! that programs nf_tables (the nftables mode, the userspace mode's
//! redirect rules).
//!
//! - transactions: [`Nft::apply`] (`nft -f -`, nft's own syntax) and
//!   [`Nft::apply_json`] (`nft -j -f -`); atomic, all of the input or
//!   nothing;
//! - listing: [`Nft::list`] (`nft -j list …`, parsed as JSON);
//! - table existence: [`Nft::has_table`], one netlink request
//!   ([`super::nft_netlink`]) whose cost does not depend on the ruleset,
//!   `nft -j list tables` only where netlink cannot answer;
//! - errors: [`ToolError`] (not started, timed out, refused, unreadable);
//! - timeouts and own-writes recording: those of the [`Executor`] it runs
//!   through ([`SystemExecutor`] under the context's [`CommandLimits`]
//!   kills a hung `nft` and records every child in the current
//!   [`OwnWrites`](super::OwnWrites) scope).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Command, CommandLimits, Executor, Output, SystemExecutor, ToolError};
use crate::IpFamily;

/// Runs `nft` (from `PATH` unless told otherwise) through an [`Executor`].
/// Cheap to clone.
#[derive(Clone)]
pub struct Nft {
    program: String,
    exec: Arc<dyn Executor>,
    lookup: TableLookup,
    /// Whether the fallback from netlink to `nft` was logged already.
    fell_back: Arc<AtomicBool>,
}

/// How [`Nft::has_table`] finds out whether a table exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableLookup {
    /// One `NFT_MSG_GETTABLE` netlink request in the calling thread's
    /// network namespace; `nft -j list tables` only when netlink fails
    /// (no socket, refused). The default.
    Netlink,
    /// `nft -j list tables <family>` only (a fake `nft` in tests). With
    /// nft 1.0.6 that loads the whole ruleset.
    Cli,
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft")
            .field("program", &self.program)
            .field("lookup", &self.lookup)
            .finish()
    }
}

impl Default for Nft {
    /// `nft` from `PATH`, killed after [`CommandLimits::DEFAULT_TIMEOUT`].
    fn default() -> Self {
        Nft::new(CommandLimits::default())
    }
}

/// `ip` or `ip6`: nft's address family of `family`.
pub fn family_word(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

impl Nft {
    /// `nft` from `PATH`, run by a [`SystemExecutor`] enforcing `limits`.
    pub fn new(limits: CommandLimits) -> Self {
        Nft::with_executor(Arc::new(SystemExecutor::new(limits)))
    }

    /// `nft` run by `exec` (a fake in unit tests).
    pub fn with_executor(exec: Arc<dyn Executor>) -> Self {
        Nft {
            program: "nft".to_string(),
            exec,
            lookup: TableLookup::Netlink,
            fell_back: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The same driver, answering [`Nft::has_table`] by `lookup`.
    pub fn with_table_lookup(mut self, lookup: TableLookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// The same driver running `program` instead of `nft`.
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// The same program, run by a [`SystemExecutor`] enforcing `limits`.
    pub fn with_limits(mut self, limits: CommandLimits) -> Self {
        self.exec = Arc::new(SystemExecutor::new(limits));
        self
    }

    /// The program it runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Whether the program is installed (an executable file, on `PATH`
    /// unless it is a path).
    pub fn is_installed(&self) -> bool {
        self.exec.has_program(&self.program)
    }

    /// Runs `nft args…` with `stdin`; an error when it cannot be started or
    /// times out.
    async fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(Command, Output), ToolError> {
        let mut command = Command::new(&self.program, args.iter().copied());
        if let Some(input) = stdin {
            command = command.with_stdin(input.to_string());
        }
        tracing::trace!(%command, "running");
        match self.exec.run(&command).await {
            Ok(output) => Ok((command, output)),
            Err(source) => Err(ToolError::Spawn {
                program: self.program.clone(),
                source,
            }),
        }
    }

    /// Runs `nft args…` with `stdin`, which must succeed; returns stdout.
    async fn checked(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ToolError> {
        let (command, output) = self.run(args, stdin).await?;
        if output.success() {
            return Ok(output.stdout);
        }
        Err(ToolError::Failed {
            command: command.to_string(),
            code: output.code,
            stderr: output.stderr.trim().to_string(),
            context: String::new(),
        })
    }

    /// Applies `script`, in nft's own syntax, with `nft -f -`: all of it or
    /// nothing (nft transactions are atomic). An empty script runs nothing.
    /// A refusal is [`ToolError::Failed`] with nft's message.
    pub async fn apply(&self, script: &str) -> Result<(), ToolError> {
        if script.trim().is_empty() {
            return Ok(());
        }
        self.checked(&["-f", "-"], Some(script)).await.map(drop)
    }

    /// Applies `json`, a document of nft's JSON schema (`{"nftables": […]}`),
    /// with `nft -j -f -`: all of it or nothing.
    pub async fn apply_json(&self, json: &str) -> Result<(), ToolError> {
        self.checked(&["-j", "-f", "-"], Some(json)).await.map(drop)
    }

    /// `nft -j list <what…>`, parsed: the objects of the top-level
    /// `nftables` array (`{"metainfo": …}`, `{"table": …}`, …).
    pub async fn list(&self, what: &[&str]) -> Result<Vec<serde_json::Value>, ToolError> {
        let mut args = vec!["-j", "list"];
        args.extend_from_slice(what);
        let stdout = self.checked(&args, None).await?;
        parse_listing(&stdout).map_err(|reason| ToolError::Output {
            command: Command::new(&self.program, args).to_string(),
            reason,
        })
    }

    /// Whether table `name` of `family` exists, in the network namespace of
    /// the calling thread. By default one netlink request
    /// ([`super::nft_netlink::table_exists`]), which spawns nothing and
    /// costs the same beside any ruleset; when netlink cannot answer (no
    /// socket, `EPERM`, …) it says so once and asks `nft -j list tables
    /// <family>` (which, with nft 1.0.6, loads the whole ruleset).
    pub async fn has_table(&self, family: IpFamily, name: &str) -> Result<bool, ToolError> {
        if self.lookup == TableLookup::Netlink {
            match super::nft_netlink::table_exists(family, name) {
                Ok(exists) => return Ok(exists),
                Err(error) => {
                    if !self.fell_back.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, table = name, "cannot ask the kernel over netlink whether an nf_tables table exists; asking `nft list tables` instead (slow beside a large ruleset)");
                    } else {
                        tracing::debug!(%error, table = name, "netlink table lookup failed; asking nft");
                    }
                }
            }
        }
        self.list_has_table(family, name).await
    }

    /// Whether table `name` of `family` exists, by `nft -j list tables
    /// <family>`.
    async fn list_has_table(&self, family: IpFamily, name: &str) -> Result<bool, ToolError> {
        let objects = self.list(&["tables", family_word(family)]).await?;
        Ok(lists_table(&objects, name))
    }
}

/// The objects of `nft -j list …` output (`{"nftables": [ … ]}`, none
/// without that key); output that is not JSON is an error.
pub fn parse_listing(json: &str) -> Result<Vec<serde_json::Value>, String> {
    let doc: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    match doc.get("nftables") {
        Some(serde_json::Value::Array(objects)) => Ok(objects.clone()),
        Some(_) => Err("`nftables` is not an array".to_string()),
        None => Ok(Vec::new()),
    }
}

/// Whether `objects` (of [`parse_listing`]) hold a table called `name`.
pub fn lists_table(objects: &[serde_json::Value], name: &str) -> bool {
    objects.iter().any(|o| {
        o.get("table")
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str())
            == Some(name)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::backend::Names;

    /// Answers every command with one output, recording the command lines
    /// and inputs.
    struct Scripted {
        output: std::io::Result<Output>,
        seen: Mutex<Vec<(String, Option<String>)>>,
    }

    impl Scripted {
        fn new(output: std::io::Result<Output>) -> Arc<Self> {
            Arc::new(Scripted {
                output,
                seen: Mutex::new(Vec::new()),
            })
        }

        fn answering(code: i32, stdout: &str, stderr: &str) -> Arc<Self> {
            Scripted::new(Ok(Output {
                code: Some(code),
                stdout: stdout.into(),
                stderr: stderr.into(),
            }))
        }

        fn seen(&self) -> Vec<(String, Option<String>)> {
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    #[async_trait::async_trait]
    impl Executor for Scripted {
        async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((cmd.to_string(), cmd.stdin.clone()));
            match &self.output {
                Ok(output) => Ok(output.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        }

        fn has_program(&self, _: &str) -> bool {
            true
        }
    }

    const TABLES: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 3}}]}"#;

    #[tokio::test]
    async fn transactions_go_to_nft_on_stdin_and_empty_ones_run_nothing() {
        let exec = Scripted::answering(0, "", "");
        let nft = Nft::with_executor(exec.clone());
        nft.apply("add table ip t\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        nft.apply(" \n").await.unwrap_or_else(|e| panic!("{e}"));
        nft.apply_json("{\"nftables\": []}")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            exec.seen(),
            [
                ("nft -f -".to_string(), Some("add table ip t\n".to_string())),
                (
                    "nft -j -f -".to_string(),
                    Some("{\"nftables\": []}".to_string())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_transaction_is_a_failure_with_nfts_message() {
        let exec = Scripted::answering(1, "", "Error: No such file or directory\n");
        let error = Nft::with_executor(exec)
            .apply("delete table ip nope\n")
            .await
            .err();
        let Some(error) = error else {
            panic!("a refused transaction succeeded")
        };
        assert_eq!(error.code(), Some(1));
        assert_eq!(
            error.to_string(),
            "`nft -f -` failed (exit code 1): Error: No such file or directory"
        );
        assert_eq!(
            error.into_backend_error().kind(),
            crate::BackendErrorKind::Dataplane
        );
    }

    #[tokio::test]
    async fn listing_parses_json_and_finds_tables() {
        let nft = Nft::with_executor(Scripted::answering(0, TABLES, ""))
            .with_table_lookup(TableLookup::Cli);
        assert!(
            nft.has_table(IpFamily::V4, "kube-proxy")
                .await
                .unwrap_or(false)
        );
        assert!(!nft.has_table(IpFamily::V4, "other").await.unwrap_or(true));

        let garbage = Nft::with_executor(Scripted::answering(0, "table ip x {}", ""));
        let error = garbage.list(&["tables"]).await.err();
        assert!(
            matches!(&error, Some(ToolError::Output { command, .. }) if command == "nft -j list tables"),
            "{error:?}"
        );

        let denied = Nft::with_executor(Scripted::answering(1, "", "Operation not permitted"))
            .with_table_lookup(TableLookup::Cli);
        let error = denied.has_table(IpFamily::V6, "kube-proxy").await.err();
        assert!(
            matches!(&error, Some(ToolError::Failed { command, .. }) if command == "nft -j list tables ip6"),
            "{error:?}"
        );
    }

    #[test]
    fn listings_without_objects_are_empty_and_others_are_errors() {
        assert_eq!(parse_listing("{}"), Ok(Vec::new()));
        assert!(parse_listing("").is_err());
        assert!(parse_listing("{\"nftables\": 1}").is_err());
        assert!(parse_listing("not json").is_err());
    }

    #[tokio::test]
    async fn a_hung_nft_is_killed_counted_and_transient() {
        let dir = std::env::temp_dir().join(format!("nft-driver-hung-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let program = dir.join("nft");
        std::fs::write(&program, "#!/bin/sh\nexec sleep 3600\n").unwrap_or_else(|e| panic!("{e}"));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let count = Arc::new(Names::default());
        let limits = CommandLimits::new(Duration::from_millis(200)).with_recorder(count.clone());
        let nft = Nft::new(limits).with_program(program.to_string_lossy());
        let started = std::time::Instant::now();
        let error = nft.list(&["tables"]).await.err();
        let _ = std::fs::remove_dir_all(&dir);
        let Some(error) = error else {
            panic!("a hung nft answered")
        };
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(error.timed_out(), "{error}");
        assert_eq!(
            error.into_backend_error().kind(),
            crate::BackendErrorKind::Transient
        );
        assert_eq!(*count.0.lock().unwrap_or_else(|e| e.into_inner()), ["nft"]);
    }

    #[tokio::test]
    async fn a_missing_nft_is_not_installed() {
        let nft = Nft::default().with_program("/nonexistent/nft");
        let error = nft.apply("add table ip t\n").await.err();
        assert!(
            error.as_ref().is_some_and(ToolError::not_installed),
            "{error:?}"
        );
    }
}
