//! [`RedirectRules`]: our table of one family, as last written, and the
//! writes that bring it to what a sync wants.

use nftables::schema::Nftables;
use proxy_core::IpFamily;
use proxy_core::exec::CommandLimits;
use proxy_core::exec::nft::Nft;

use super::json;
use super::table::{Elements, diff};
use crate::error::UserspaceError;

/// The redirect table of one family.
#[derive(Debug)]
pub(crate) struct RedirectRules {
    family: IpFamily,
    /// Whether writes reach the kernel (`false`: dry run, state kept only).
    live: bool,
    /// Runs `nft`, killing it when it outlives its limits.
    nft: Nft,
    /// The elements the table holds; `None` when unknown (never written,
    /// or a write failed): the next write re-creates the table.
    applied: Option<Elements>,
}

impl RedirectRules {
    /// Rules for `family`; `live` ones run `nft` under `limits`.
    pub fn new(family: IpFamily, live: bool, limits: CommandLimits) -> Self {
        RedirectRules {
            family,
            live,
            nft: Nft::new(limits),
            applied: None,
        }
    }

    /// Makes the table hold `wanted`: the whole table when `full` or when its
    /// state is unknown, otherwise only the elements that differ. Returns
    /// the number of objects written (elements, plus one for a table).
    pub async fn write(&mut self, wanted: Elements, full: bool) -> Result<usize, UserspaceError> {
        let (transaction, written) = match (&self.applied, full) {
            (Some(applied), false) => {
                let (deleted, added) = diff(applied, &wanted);
                let written = deleted.len() + added.len();
                (json::update(self.family, &deleted, &added), written)
            }
            _ => (Some(json::full(self.family, &wanted)), wanted.len() + 1),
        };
        if let Some(transaction) = transaction {
            // Until the write is known to have landed, the state is unknown.
            self.applied = None;
            if self.live {
                apply(&self.nft, &transaction).await?;
            }
        }
        self.applied = Some(wanted);
        Ok(written)
    }

    /// Deletes the table (if it exists) and forgets its state.
    pub async fn delete(&mut self) -> Result<(), UserspaceError> {
        self.applied = None;
        if self.live {
            delete_table(&self.nft, self.family).await?;
        }
        Ok(())
    }
}

/// Deletes our table of `family`, if it exists.
pub(crate) async fn delete_table(nft: &Nft, family: IpFamily) -> Result<(), UserspaceError> {
    apply(nft, &json::delete(family)).await
}

/// Runs `nft -j -f -` with `transaction` (atomic: all of it or nothing).
async fn apply(nft: &Nft, transaction: &Nftables<'_>) -> Result<(), UserspaceError> {
    let text = serde_json::to_string(transaction).map_err(UserspaceError::Encode)?;
    nft.apply_json(&text).await.map_err(UserspaceError::Nft)
}
