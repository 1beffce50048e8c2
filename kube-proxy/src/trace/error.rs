//! What `kube-proxy trace` and `kube-proxy diff` report when they cannot
//! answer.

use std::path::PathBuf;

/// Why the live rules (or a dump) could not be read or traced.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The tool needs privileges this process lacks.
    #[error(
        "cannot read the {what}: permission denied (reading rules needs root or CAP_NET_ADMIN; try sudo)"
    )]
    Permission {
        /// What was being read (`iptables rules`, `nftables ruleset`).
        what: String,
    },
    /// A tool failed for another reason.
    #[error("cannot read the {what}: {detail}")]
    Read {
        /// What was being read.
        what: String,
        /// The tool's message.
        detail: String,
    },
    /// A dump file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Rules were found, but not of a mode this command understands.
    #[error("{0}")]
    Mode(String),
    /// The rules could not be parsed or walked.
    #[error("{0}")]
    Rules(String),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

impl InspectError {
    /// A tool's failure: permission problems get their own plain message.
    pub fn from_tool(what: &str, detail: &str) -> Self {
        let lower = detail.to_lowercase();
        if lower.contains("permission denied")
            || lower.contains("operation not permitted")
            || lower.contains("you must be root")
        {
            InspectError::Permission {
                what: what.to_string(),
            }
        } else {
            InspectError::Read {
                what: what.to_string(),
                detail: detail.trim().to_string(),
            }
        }
    }
}
