//! Where transactions go: the real `nft` binary, or a fake.

use proxy_core::IpFamily;
use proxy_core::exec::CommandLimits;
use proxy_core::exec::ToolError;
use proxy_core::exec::nft::{Nft, TableLookup, lists_table as lists, parse_listing};
use proxy_core::exec::nft_netlink;

use crate::error::NftError;
use crate::ir::{TABLE, Transaction};

/// Applies transactions to one dataplane.
#[async_trait::async_trait]
pub trait Executor: Send {
    /// Applies `tx` atomically: all of it or nothing.
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError>;

    /// Whether our table of `family` exists (never reads the tables'
    /// contents).
    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError>;
}

/// The real dataplane through the `nft` program, via the shared nft driver
/// ([`proxy_core::exec::nft::Nft`]): transactions go to `nft -f -` as nft's
/// own syntax (as upstream's knftables does). The default executor is
/// [`NetlinkExecutor`](crate::NetlinkExecutor), which keeps this one for
/// what it does not encode and for table lookups; the factory uses this
/// one directly when `nft` is a wrapper. Whether our table exists is
/// one netlink request ([`Nft::has_table`]; `nft -j list tables` only when
/// netlink cannot answer). Both use the calling thread's network namespace;
/// `nft` inherits the calling thread's network
/// namespace, and is killed when it outlives the [`CommandLimits`] (the
/// context's).
///
/// Text, not JSON: the load-balancing map is declared with `typeof … numgen
/// …`, which nft 1.0.6's JSON parser cannot read (see the crate README).
#[derive(Debug, Clone, Default)]
pub struct NftCli {
    nft: Nft,
}

impl NftCli {
    /// Runs `program` instead of `nft` from `PATH`.
    pub fn with_program(program: impl Into<String>) -> Self {
        NftCli {
            nft: Nft::default().with_program(program),
        }
    }

    /// The same executor, finding our table by `lookup` (netlink by
    /// default).
    pub fn with_table_lookup(mut self, lookup: TableLookup) -> Self {
        self.nft = self.nft.with_table_lookup(lookup);
        self
    }

    /// Whether the `nft` program is installed.
    pub fn is_installed(&self) -> bool {
        self.nft.is_installed()
    }

    /// The same executor, killing `nft` when it outlives `limits`.
    pub fn with_limits(mut self, limits: CommandLimits) -> Self {
        self.nft = self.nft.with_limits(limits);
        self
    }

    /// The `nft` program this executor runs.
    pub fn program(&self) -> &str {
        self.nft.program()
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
        self.nft
            .apply(&tx.to_script())
            .await
            .map_err(NftError::Apply)
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        if self
            .nft
            .has_table(family, TABLE)
            .await
            .map_err(NftError::List)?
        {
            return Ok(true);
        }
        // "Absent" leads to a cold start (the skeleton first, then the
        // ports in chunks): a second, independent answer confirms it, so
        // that a wrong answer can never leave node ports unmatched for the
        // cold start's milliseconds on a node whose rules are in place. A
        // netlink dump of the family's table headers: `nft list tables`
        // (nft 1.0.6) loads every table's contents, a ruleset-sized child
        // (261 MiB beside a 10k-Service table of the other family). nft's
        // listing only when netlink cannot answer.
        match nft_netlink::table_listed(family, TABLE) {
            Ok(listed) => return Ok(listed),
            Err(error) => {
                tracing::debug!(%error, "cannot dump the nf_tables tables over netlink; asking nft");
            }
        }
        self.nft
            .clone()
            .with_table_lookup(TableLookup::Cli)
            .has_table(family, TABLE)
            .await
            .map_err(NftError::List)
    }
}

/// Whether `json`, the output of `nft -j list tables <family>`, lists our
/// table ([`TABLE`]); output that is not JSON is an error.
pub fn lists_table(json: &str) -> Result<bool, NftError> {
    let objects = parse_listing(json).map_err(|reason| {
        NftError::List(ToolError::Output {
            command: "nft -j list tables".to_string(),
            reason,
        })
    })?;
    Ok(lists(&objects, TABLE))
}
