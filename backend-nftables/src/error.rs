use proxy_core::BackendError;

/// Errors of the nftables backend.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` failed listing tables.
    #[error("nft failed: {0}")]
    Nft(#[from] nftables::helper::NftablesError),
    /// `nft`'s table listing was not the JSON expected.
    #[error("cannot parse nft's output: {0}")]
    Json(#[from] serde_json::Error),
    /// `nft` could not be run, or its input could not be written.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `nft` rejected the transaction (nothing was applied).
    #[error("nft rejected the transaction ({status}): {stderr}")]
    Rejected {
        /// The exit status.
        status: String,
        /// nft's error output.
        stderr: String,
    },
    /// `nft list tables` failed.
    #[error("nft failed listing tables ({status}): {stderr}")]
    Listing {
        /// The exit status.
        status: String,
        /// nft's error output.
        stderr: String,
    },
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
            // A hung nft, killed after the timeout: try again later.
            NftError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
                BackendError::transient(format!("{what}: nft timed out"))
            }
            NftError::Nft(nftables::helper::NftablesError::NftExecution { .. })
            | NftError::Spawn { .. }
            | NftError::Listing { .. } => {
                BackendError::unsupported(format!("{what}: cannot run nft"))
            }
            _ => BackendError::dataplane(what.to_string()),
        };
        base.with_source(self)
    }
}
