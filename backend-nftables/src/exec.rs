//! Where transactions go: the real `nft` binary, or a fake.

use proxy_core::IpFamily;

use crate::error::NftError;
use crate::ir::{TABLE, Transaction, family_word};
use crate::json::to_json;

/// Applies transactions to one dataplane.
#[async_trait::async_trait]
pub trait Executor: Send {
    /// Applies `tx` atomically: all of it or nothing.
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError>;

    /// Whether our table of `family` exists (lists tables only, never
    /// their contents).
    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError>;
}

/// The real dataplane: the `nftables` crate's helpers spawn `nft -j -f -`,
/// which inherits the calling thread's network namespace.
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
        let json = to_json(tx)?;
        let no_args: [&str; 0] = [];
        nftables::helper::apply_ruleset_raw_async(&json, Some(self.program.as_str()), no_args)
            .await?;
        Ok(())
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        let args = ["list", "tables", family_word(family)];
        let out =
            nftables::helper::get_current_ruleset_raw_async(Some(self.program.as_str()), args)
                .await?;
        let doc: serde_json::Value = serde_json::from_str(&out)?;
        let tables = doc
            .get("nftables")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        Ok(tables.iter().any(|o| {
            o.get("table")
                .and_then(|t| t.get("name"))
                .and_then(|n| n.as_str())
                == Some(TABLE)
        }))
    }
}
