//! Where transactions go: the real `nft` binary, or a fake.

use proxy_core::IpFamily;
use proxy_core::exec::{
    Command as ExecCommand, CommandLimits, Executor as _, Output, SystemExecutor,
};

use crate::error::NftError;
use crate::ir::{TABLE, Transaction, family_word};

/// Applies transactions to one dataplane.
#[async_trait::async_trait]
pub trait Executor: Send {
    /// Applies `tx` atomically: all of it or nothing.
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError>;

    /// Whether our table of `family` exists (lists tables only, never
    /// their contents).
    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError>;
}

/// The real dataplane: transactions go to `nft -f -` as nft's own syntax
/// (as upstream's knftables does); the table list is read with `nft -j
/// list tables`. `nft` inherits the calling thread's network namespace, and
/// is killed when it outlives the [`CommandLimits`] (the context's).
///
/// Text, not JSON: the load-balancing map is declared with `typeof … numgen
/// …`, which nft 1.0.6's JSON parser cannot read (see the crate README).
#[derive(Debug, Clone)]
pub struct NftCli {
    program: String,
    exec: SystemExecutor,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli {
            program: "nft".to_string(),
            exec: SystemExecutor::default(),
        }
    }
}

impl NftCli {
    /// Runs `program` instead of `nft` from `PATH`.
    pub fn with_program(program: impl Into<String>) -> Self {
        NftCli {
            program: program.into(),
            ..Self::default()
        }
    }

    /// The same executor, killing `nft` when it outlives `limits`.
    pub fn with_limits(mut self, limits: CommandLimits) -> Self {
        self.exec = SystemExecutor::new(limits);
        self
    }

    /// The `nft` program this executor runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Runs `nft args…` (with `stdin`); a timeout or a failure to start is
    /// [`NftError::Spawn`].
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, NftError> {
        let mut command = ExecCommand::new(&self.program, args.iter().copied());
        if let Some(input) = stdin {
            command = command.with_stdin(input.to_string());
        }
        self.exec
            .run(&command)
            .await
            .map_err(|source| NftError::Spawn {
                program: self.program.clone(),
                source,
            })
    }
}

#[async_trait::async_trait]
impl Executor for NftCli {
    /// Runs `nft -f -` with the transaction's script on its standard input;
    /// a non-zero exit is the transaction being rejected (nothing applied:
    /// nft transactions are atomic), with nft's error message.
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        let output = self.run(&["-f", "-"], Some(&tx.to_script())).await?;
        if !output.success() {
            return Err(NftError::Rejected {
                status: exit_status(&output),
                stderr: output.stderr.trim().to_string(),
            });
        }
        Ok(())
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        let output = self
            .run(&["-j", "list", "tables", family_word(family)], None)
            .await?;
        if !output.success() {
            return Err(NftError::Listing {
                status: exit_status(&output),
                stderr: output.stderr.trim().to_string(),
            });
        }
        lists_table(&output.stdout)
    }
}

/// Whether `json`, the output of `nft -j list tables <family>`, lists our
/// table ([`TABLE`]); output that is not JSON is an error.
pub fn lists_table(json: &str) -> Result<bool, NftError> {
    let doc: serde_json::Value = serde_json::from_str(json)?;
    let tables = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(tables.iter().any(|o| {
        o.get("table")
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str())
            == Some(TABLE)
    }))
}

/// `exit status: 1`, as `std::process::ExitStatus` prints it.
fn exit_status(output: &Output) -> String {
    match output.code {
        Some(code) => format!("exit status: {code}"),
        None => "killed by a signal".to_string(),
    }
}
