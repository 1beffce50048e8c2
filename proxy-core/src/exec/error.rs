//! [`ToolError`]: what can go wrong running a kernel tool (`nft`,
//! `iptables`, `iptables-restore`, `iptables-save`) through the drivers.

use std::io;

use crate::backend::BackendError;

/// iptables' exit code for "resource problem", e.g. the xtables lock is held.
pub const RESOURCE_PROBLEM: i32 = 4;

/// A kernel tool could not be run, failed, or printed what we cannot read.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started, its input could not be written,
    /// or it was killed after the [`CommandLimits`](super::CommandLimits)
    /// timeout (a source of kind [`io::ErrorKind::TimedOut`]).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// None of the programs that would do was found.
    #[error("no {program} binary found in PATH (install the {package} package)")]
    Missing {
        /// The program looked for (the unsuffixed one when several would do).
        program: String,
        /// The package that brings it.
        package: &'static str,
    },
    /// The program exited with an error.
    #[error("`{command}` failed ({}): {stderr}{context}", status(*.code))]
    Failed {
        /// The command line (its input, if any, is not shown).
        command: String,
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// What it printed on stderr, trimmed.
        stderr: String,
        /// The input lines around the one it named as failing, if any
        /// (`iptables-restore: line 12 failed`), one per line.
        context: String,
    },
    /// Its output is not what the driver expects.
    #[error("cannot parse the output of `{command}`: {reason}")]
    Output {
        /// The command line.
        command: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `exit code 1`, or `killed by a signal`.
pub fn status(code: Option<i32>) -> String {
    code.map_or_else(
        || "killed by a signal".to_string(),
        |c| format!("exit code {c}"),
    )
}

impl ToolError {
    /// Whether the program was killed after the command timeout.
    pub fn timed_out(&self) -> bool {
        matches!(self, ToolError::Spawn { source, .. } if source.kind() == io::ErrorKind::TimedOut)
    }

    /// Whether the program is not installed.
    pub fn not_installed(&self) -> bool {
        match self {
            ToolError::Missing { .. } => true,
            ToolError::Spawn { source, .. } => source.kind() == io::ErrorKind::NotFound,
            ToolError::Failed { .. } | ToolError::Output { .. } => false,
        }
    }

    /// The exit code of a program that failed.
    pub fn code(&self) -> Option<i32> {
        match self {
            ToolError::Failed { code, .. } => *code,
            _ => None,
        }
    }

    /// The kind the runtime acts on: a missing program is
    /// [`Unsupported`](crate::BackendErrorKind::Unsupported); a program that
    /// could not be started, timed out, or found the xtables lock held
    /// (exit code [`RESOURCE_PROBLEM`]) is
    /// [`Transient`](crate::BackendErrorKind::Transient); any other failure
    /// is a [`Dataplane`](crate::BackendErrorKind::Dataplane) error.
    pub fn into_backend_error(self) -> BackendError {
        let message = self.to_string();
        let error = if self.not_installed() {
            BackendError::unsupported(message)
        } else if matches!(self, ToolError::Spawn { .. }) || self.code() == Some(RESOURCE_PROBLEM) {
            BackendError::transient(message)
        } else {
            BackendError::dataplane(message)
        };
        error.with_source(self)
    }
}

impl From<ToolError> for BackendError {
    fn from(error: ToolError) -> Self {
        error.into_backend_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendErrorKind;

    fn failed(code: Option<i32>) -> ToolError {
        ToolError::Failed {
            command: "iptables -w 5 -t nat -X KUBE-A".into(),
            code,
            stderr: "iptables: Too many links.".into(),
            context: String::new(),
        }
    }

    #[test]
    fn failures_name_the_command_the_status_and_stderr() {
        assert_eq!(
            failed(Some(1)).to_string(),
            "`iptables -w 5 -t nat -X KUBE-A` failed (exit code 1): iptables: Too many links."
        );
        assert!(failed(None).to_string().contains("(killed by a signal)"));
    }

    #[test]
    fn errors_map_to_the_kind_the_runtime_acts_on() {
        let kind = |e: ToolError| e.into_backend_error().kind();
        let spawn = |kind: io::ErrorKind| ToolError::Spawn {
            program: "nft".into(),
            source: io::Error::new(kind, "x"),
        };
        assert_eq!(
            kind(spawn(io::ErrorKind::NotFound)),
            BackendErrorKind::Unsupported
        );
        assert_eq!(
            kind(ToolError::Missing {
                program: "iptables-restore".into(),
                package: "iptables"
            }),
            BackendErrorKind::Unsupported
        );
        assert_eq!(
            kind(spawn(io::ErrorKind::TimedOut)),
            BackendErrorKind::Transient
        );
        assert_eq!(
            kind(spawn(io::ErrorKind::BrokenPipe)),
            BackendErrorKind::Transient
        );
        assert_eq!(
            kind(failed(Some(RESOURCE_PROBLEM))),
            BackendErrorKind::Transient
        );
        assert_eq!(kind(failed(Some(1))), BackendErrorKind::Dataplane);
        assert!(spawn(io::ErrorKind::TimedOut).timed_out());
        assert!(!failed(Some(1)).timed_out());
    }
}
