//! Where transactions go: the real `nft` binary, or a fake.

use std::process::Stdio;

use proxy_core::IpFamily;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

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
/// (as upstream's knftables does); the table list is read through the
/// `nftables` crate (`nft -j list tables`). `nft` inherits the calling
/// thread's network namespace.
///
/// Text, not JSON: the load-balancing map is declared with `typeof … numgen
/// …`, which nft 1.0.6's JSON parser cannot read (see the crate README).
#[derive(Debug, Clone)]
pub struct NftCli {
    program: String,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli {
            program: "nft".to_string(),
        }
    }
}

impl NftCli {
    /// Runs `program` instead of `nft` from `PATH`.
    pub fn with_program(program: impl Into<String>) -> Self {
        NftCli {
            program: program.into(),
        }
    }

    /// The `nft` program this executor runs.
    pub fn program(&self) -> &str {
        &self.program
    }
}

#[async_trait::async_trait]
impl Executor for NftCli {
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        run_script(&self.program, &tx.to_script()).await
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        let args = ["list", "tables", family_word(family)];
        let out =
            nftables::helper::get_current_ruleset_raw_async(Some(self.program.as_str()), args)
                .await?;
        lists_table(&out)
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

/// Runs `program -f -` with `script` on its standard input; a non-zero exit
/// is the transaction being rejected (nothing applied: nft transactions are
/// atomic), with nft's error message.
async fn run_script(program: &str, script: &str) -> Result<(), NftError> {
    let spawn_error = |source| NftError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = Command::new(program)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    // Our commit, not an external change (see proxy_core::exec::OwnWrites).
    proxy_core::exec::record_child(child.id());
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()).await,
        None => Ok(()),
    };
    // The pipe is closed here (stdin dropped): nft sees the end of input.
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    if !output.status.success() {
        return Err(NftError::Rejected {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // nft exited 0 but did not read everything: treat as a failure.
    written.map_err(spawn_error)
}
