//! What the cleanup needs from the host, behind the [`Host`] trait: running
//! a command, finding a program, and reading a file of the network
//! namespace's `/proc/net`. Unit tests use a fake that records commands;
//! [`SystemHost`] is the real one.

#[cfg(test)]
pub(crate) mod fake;
mod system;

pub use system::SystemHost;

use std::io;

pub use proxy_core::exec::{Command, Output};

use crate::error::IpvsError;

/// The host the cleanup runs on, seen from the calling thread's network
/// namespace.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Runs `command` to completion. `Err` only when it could not be
    /// started; a non-zero exit is an `Ok` [`Output`].
    async fn run(&self, command: &Command) -> io::Result<Output>;

    /// Whether `program` can be found in `PATH`.
    fn has_program(&self, program: &str) -> bool;

    /// The contents of `/proc/net/<name>` for the calling thread's network
    /// namespace (`ip_vs`, `dev`), or `None` when the file does not exist
    /// (for `ip_vs`: the kernel has no IPVS loaded).
    fn read_proc_net(&self, name: &str) -> io::Result<Option<String>>;

    /// Whether commands act on the calling thread's kernel, so the kernel
    /// may be asked directly instead ([`Executor::reads_kernel`]); fakes
    /// keep `false`.
    ///
    /// [`Executor::reads_kernel`]: proxy_core::exec::Executor::reads_kernel
    fn reads_kernel(&self) -> bool {
        false
    }
}

/// Whether an idempotent command changed something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It succeeded.
    Done,
    /// What it acts on was not there (its stderr held one of the "not
    /// found" messages it was given).
    NotFound,
}

/// Runs `command`; a failure whose stderr contains one of `not_found` is
/// [`Applied::NotFound`], any other failure an error.
pub(crate) async fn run_idempotent(
    host: &dyn Host,
    command: Command,
    not_found: &[&str],
) -> Result<Applied, IpvsError> {
    tracing::debug!(%command, "running");
    let output = host
        .run(&command)
        .await
        .map_err(|source| IpvsError::Spawn {
            program: command.program.clone(),
            source,
        })?;
    if output.success() {
        return Ok(Applied::Done);
    }
    if not_found.iter().any(|m| output.stderr.contains(m)) {
        tracing::debug!(%command, stderr = output.stderr.trim(), "nothing to remove");
        return Ok(Applied::NotFound);
    }
    Err(IpvsError::command(&command, &output))
}

/// Runs `command`, which must succeed; returns its standard output.
pub(crate) async fn run_checked(host: &dyn Host, command: Command) -> Result<String, IpvsError> {
    tracing::debug!(%command, "running");
    stdout_of(&command, host.run(&command).await)
}

/// The standard output of `command`, which `ran` says how it went: an error
/// when it could not be started or exited non-zero.
pub(crate) fn stdout_of(command: &Command, ran: io::Result<Output>) -> Result<String, IpvsError> {
    let output = ran.map_err(|source| IpvsError::Spawn {
        program: command.program.clone(),
        source,
    })?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(IpvsError::command(command, &output))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    #[test]
    fn display_quotes_arguments_with_blanks() {
        let command = Command::new(
            "iptables",
            ["-D", "OUTPUT", "--comment", "kubernetes service portals"],
        );
        assert_eq!(
            command.to_string(),
            "iptables -D OUTPUT --comment \"kubernetes service portals\""
        );
    }

    #[tokio::test]
    async fn a_not_found_failure_is_not_an_error_but_another_failure_is() {
        let host = FakeHost::new()
            .with_programs(&["ipset"])
            .respond(
                "ipset destroy A",
                FakeHost::fail(1, "The set with the given name does not exist"),
            )
            .respond(
                "ipset destroy B",
                FakeHost::fail(
                    1,
                    "Set cannot be destroyed: it is in use by a kernel component",
                ),
            );
        let not_found = ["does not exist"];
        let a = run_idempotent(&host, Command::new("ipset", ["destroy", "A"]), &not_found).await;
        assert_eq!(a.unwrap(), Applied::NotFound);
        let b = run_idempotent(&host, Command::new("ipset", ["destroy", "B"]), &not_found).await;
        let error = b.unwrap_err().to_string();
        assert!(error.contains("ipset destroy B"), "{error}");
        assert!(error.contains("in use by a kernel component"), "{error}");
        let c = run_idempotent(&host, Command::new("ipset", ["destroy", "C"]), &not_found).await;
        assert_eq!(c.unwrap(), Applied::Done);
    }
}
