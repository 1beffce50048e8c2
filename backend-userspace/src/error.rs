//! The crate's error type.

use proxy_core::exec::ToolError;
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
    /// `nft` could not be run, was killed after the command timeout, or
    /// refused a redirect table transaction; nothing of it was applied.
    #[error("redirect rules not applied: {0}")]
    Nft(#[source] ToolError),
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
            UserspaceError::Nft(source) if source.timed_out() => {
                BackendError::transient(e.to_string())
            }
            UserspaceError::Nft(_) | UserspaceError::Encode(_) => {
                BackendError::dataplane(e.to_string())
            }
            UserspaceError::NoRuntime => BackendError::unsupported(e.to_string()),
            UserspaceError::Listing(_) => BackendError::dataplane(e.to_string()),
        };
        error.with_source(e)
    }
}
