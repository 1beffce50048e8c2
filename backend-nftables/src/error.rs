use proxy_core::BackendError;

/// Errors of the nftables backend.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be run or rejected the transaction.
    #[error("nft failed: {0}")]
    Nft(#[from] nftables::helper::NftablesError),
    /// The transaction could not be serialised to JSON.
    #[error("cannot serialise the nft transaction: {0}")]
    Json(#[from] serde_json::Error),
    /// The in-memory fake rejected a command, as the kernel would.
    #[error("fake nft rejected `{command}`: {reason}")]
    Fake {
        /// The command, in nft syntax.
        command: String,
        /// Why it was rejected (`No such file or directory`, ...).
        reason: String,
    },
    /// The host cannot run nftables mode.
    #[error("{0}")]
    Unsupported(String),
}

impl NftError {
    /// Wraps this error into the runtime's [`BackendError`].
    pub fn into_backend(self, what: &str) -> BackendError {
        let base = match &self {
            NftError::Unsupported(m) => BackendError::unsupported(format!("{what}: {m}")),
            NftError::Nft(nftables::helper::NftablesError::NftExecution { .. }) => {
                BackendError::unsupported(format!("{what}: cannot run nft"))
            }
            _ => BackendError::dataplane(what.to_string()),
        };
        base.with_source(self)
    }
}
