use proxy_core::BackendError;
use proxy_core::exec::ToolError;

/// Errors of the nftables backend.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` did not apply a transaction: it could not be run, timed out,
    /// or rejected it (nothing was applied).
    #[error("nft transaction not applied: {0}")]
    Apply(#[source] ToolError),
    /// `nft -j list tables` could not be run, failed, or printed what is
    /// not the JSON expected.
    #[error("nft cannot list tables: {0}")]
    List(#[source] ToolError),
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
            NftError::Apply(e) | NftError::List(e) if e.timed_out() => {
                BackendError::transient(format!("{what}: nft timed out"))
            }
            NftError::Apply(ToolError::Spawn { .. })
            | NftError::List(ToolError::Spawn { .. } | ToolError::Failed { .. }) => {
                BackendError::unsupported(format!("{what}: cannot run nft"))
            }
            _ => BackendError::dataplane(what.to_string()),
        };
        base.with_source(self)
    }
}
