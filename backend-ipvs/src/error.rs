//! The crate's error type.

use std::io;

use proxy_core::BackendError;

use crate::host::{Command, Output};

/// Errors of the IPVS leftover cleanup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpvsError {
    /// A program could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },

    /// A command failed for another reason than "not found".
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// `exit code N`, or `killed by a signal`.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },

    /// A `/proc/net` file could not be read.
    #[error("cannot read /proc/net/{name}: {source}")]
    ReadProc {
        /// The file name under `/proc/net`.
        name: String,
        /// The read error.
        #[source]
        source: io::Error,
    },

    /// State is known to be left behind because a tool to remove it is not
    /// installed.
    #[error("{what} left in place: `{program}` is not installed")]
    MissingTool {
        /// What remains, e.g. `3 IPVS virtual servers`.
        what: String,
        /// The program that would remove it.
        program: String,
    },

    /// The kernel has no IPVS: the generic-netlink family `IPVS` is
    /// unknown.
    #[error(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found; is the ip_vs module loaded?)"
    )]
    NoIpvs,

    /// An IPVS netlink request failed.
    #[error("IPVS netlink: {operation}: {source}")]
    Netlink {
        /// What was asked, e.g. `add service TCP 10.96.0.10:80`.
        operation: String,
        /// The kernel's answer (an OS error) or why the answer was unusable.
        #[source]
        source: io::Error,
    },

    /// A sysctl the mode needs could not be set.
    #[error("cannot set sysctl {key}: {source}")]
    Sysctl {
        /// The key, dotted (`net.ipv4.vs.conntrack`).
        key: String,
        /// The write error.
        #[source]
        source: io::Error,
    },

    /// A listing (`ipvsadm -Sn`, `ipset save`, `iptables-save`, a trace
    /// dump) could not be read, or a trace could not be walked.
    #[error("{0}")]
    Listing(String),
    /// `iptables-restore` or the jump rules failed.
    #[error("iptables: {0}")]
    Iptables(#[from] proxy_core::exec::ToolError),

    /// Several steps failed; each is listed. The cleanup went on after
    /// each failure, as upstream's does.
    #[error("{} cleanup steps failed: {}", .0.len(), join(.0))]
    Several(Vec<IpvsError>),
}

fn join(errors: &[IpvsError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl IpvsError {
    /// The error of `command`, which failed with `output`.
    pub(crate) fn command(command: &Command, output: &Output) -> Self {
        IpvsError::Command {
            command: command.to_string(),
            status: output.code.map_or_else(
                || "killed by a signal".to_string(),
                |c| format!("exit code {c}"),
            ),
            stderr: output.stderr.trim().to_string(),
        }
    }

    /// The OS error number of a failed netlink request (`ESRCH`: no such
    /// service, `ENOENT`: no such real server, `EEXIST`: already there).
    pub fn os_error(&self) -> Option<i32> {
        match self {
            IpvsError::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the host lacks a tool, as opposed to a tool failing.
    fn is_missing_tool(&self) -> bool {
        match self {
            IpvsError::MissingTool { .. } => true,
            IpvsError::Spawn { source, .. } => source.kind() == io::ErrorKind::NotFound,
            IpvsError::Several(errors) => errors.iter().all(IpvsError::is_missing_tool),
            IpvsError::NoIpvs => true,
            IpvsError::Command { .. }
            | IpvsError::ReadProc { .. }
            | IpvsError::Netlink { .. }
            | IpvsError::Sysctl { .. }
            | IpvsError::Listing(_) => false,
            IpvsError::Iptables(error) => error.not_installed(),
        }
    }
}

impl From<IpvsError> for BackendError {
    /// A missing tool is [`Unsupported`](proxy_core::BackendErrorKind::Unsupported);
    /// anything else is a [`Dataplane`](proxy_core::BackendErrorKind::Dataplane) error.
    fn from(error: IpvsError) -> Self {
        let message = format!("cleaning up IPVS leftovers: {error}");
        let backend_error = if error.is_missing_tool() {
            BackendError::unsupported(message)
        } else {
            BackendError::dataplane(message)
        };
        backend_error.with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::BackendErrorKind;

    use super::*;

    fn failed() -> IpvsError {
        IpvsError::command(
            &Command::new("ipset", ["destroy", "KUBE-CLUSTER-IP"]),
            &Output {
                code: Some(1),
                stdout: String::new(),
                stderr: "in use\n".into(),
            },
        )
    }

    fn missing() -> IpvsError {
        IpvsError::MissingTool {
            what: "2 IPVS virtual servers".into(),
            program: "ipvsadm".into(),
        }
    }

    #[test]
    fn command_errors_name_the_command_status_and_stderr() {
        assert_eq!(
            failed().to_string(),
            "`ipset destroy KUBE-CLUSTER-IP` failed (exit code 1): in use"
        );
    }

    #[test]
    fn a_missing_tool_is_unsupported_and_a_failing_one_a_dataplane_error() {
        let unsupported = BackendError::from(missing());
        assert_eq!(unsupported.kind(), BackendErrorKind::Unsupported);
        assert_eq!(
            unsupported.message(),
            "cleaning up IPVS leftovers: 2 IPVS virtual servers left in place: `ipvsadm` is not installed"
        );
        let both = BackendError::from(IpvsError::Several(vec![missing(), failed()]));
        assert_eq!(both.kind(), BackendErrorKind::Dataplane);
        assert!(
            both.message()
                .starts_with("cleaning up IPVS leftovers: 2 cleanup steps failed: ")
        );
    }
}
