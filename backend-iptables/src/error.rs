//! The crate's error type.

use proxy_core::BackendError;

/// What went wrong talking to iptables.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No usable `iptables-restore` was found.
    #[error("no {0} binary found in PATH (install the iptables package)")]
    MissingTool(String),
    /// A command exited with an error.
    #[error("`{command}` failed with exit code {code:?}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `iptables-restore` refused the input.
    #[error("{tool} failed with exit code {code:?}: {stderr}{context}")]
    Restore {
        /// The restore binary.
        tool: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it printed.
        stderr: String,
        /// The lines around the failing one, when it named one.
        context: String,
    },
    /// Text that should hold iptables rules could not be parsed.
    #[error("cannot parse iptables rules: {0}")]
    Parse(String),
}

/// iptables' exit code for "resource problem", e.g. the xtables lock is held.
const RESOURCE_PROBLEM: i32 = 4;

impl IptablesError {
    /// The kind the runtime acts on.
    pub fn into_backend_error(self) -> BackendError {
        let err = match &self {
            IptablesError::Spawn { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                BackendError::unsupported(self.to_string())
            }
            IptablesError::MissingTool(_) => BackendError::unsupported(self.to_string()),
            IptablesError::Spawn { .. } => BackendError::transient(self.to_string()),
            IptablesError::Command { code, .. } | IptablesError::Restore { code, .. }
                if *code == Some(RESOURCE_PROBLEM) =>
            {
                BackendError::transient(self.to_string())
            }
            IptablesError::Command { .. }
            | IptablesError::Restore { .. }
            | IptablesError::Parse(_) => BackendError::dataplane(self.to_string()),
        };
        err.with_source(self)
    }
}

impl From<IptablesError> for BackendError {
    fn from(err: IptablesError) -> Self {
        err.into_backend_error()
    }
}

/// The three lines around 1-based `line` of `text`, for error messages
/// (upstream logs the same when a restore fails).
pub(crate) fn lines_around(text: &str, line: usize) -> String {
    let start = line.saturating_sub(2).max(1);
    text.lines()
        .enumerate()
        .skip(start - 1)
        .take(3)
        .map(|(i, l)| format!("\n{:>6}: {l}", i + 1))
        .collect()
}
