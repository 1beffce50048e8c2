//! The crate's error type.

use proxy_core::{BackendError, ServicePortName};

use crate::plan::ListenerKey;

/// What can go wrong in the userspace backend.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    /// A listener could not be opened (port in use, address not local).
    #[error("{port}: cannot listen on {listener}: {source}")]
    Bind {
        /// The service port the listener serves.
        port: Box<ServicePortName>,
        /// The listener.
        listener: ListenerKey,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Another service port already listens on the same address.
    #[error("{port}: {listener} is already served by {owner}")]
    Conflict {
        /// The service port that did not get the listener.
        port: Box<ServicePortName>,
        /// The listener.
        listener: ListenerKey,
        /// The service port that holds it.
        owner: Box<ServicePortName>,
    },
    /// The host's addresses could not be listed.
    #[error("cannot list the host's addresses: {0}")]
    LocalAddresses(#[source] std::io::Error),
    /// `nft` could not be run, or was killed after the command timeout;
    /// nothing of that transaction was applied.
    #[error("cannot run nft: {0}")]
    NftRun(#[source] std::io::Error),
    /// `nft` refused a redirect table transaction; nothing of it was applied.
    #[error("nft rejected the transaction (exit code {code:?}): {stderr}")]
    NftRejected {
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A transaction could not be encoded as JSON.
    #[error("cannot encode an nft transaction: {0}")]
    Encode(#[source] serde_json::Error),
    /// `sync` ran outside a Tokio runtime, which the listeners need.
    #[error("the userspace backend must run inside a Tokio runtime")]
    NoRuntime,
    /// A listing (the redirect table as `nft -j` lists it, a listener
    /// table) could not be read.
    #[error("cannot read the listing: {0}")]
    Listing(String),
}

impl From<UserspaceError> for BackendError {
    fn from(e: UserspaceError) -> Self {
        let error = match &e {
            UserspaceError::Bind { .. } | UserspaceError::Conflict { .. } => {
                BackendError::dataplane(e.to_string())
            }
            UserspaceError::LocalAddresses(_) => BackendError::transient(e.to_string()),
            UserspaceError::NftRun(source) if source.kind() == std::io::ErrorKind::TimedOut => {
                BackendError::transient(e.to_string())
            }
            UserspaceError::NftRun(_)
            | UserspaceError::NftRejected { .. }
            | UserspaceError::Encode(_) => BackendError::dataplane(e.to_string()),
            UserspaceError::NoRuntime => BackendError::unsupported(e.to_string()),
            UserspaceError::Listing(_) => BackendError::dataplane(e.to_string()),
        };
        error.with_source(e)
    }
}
