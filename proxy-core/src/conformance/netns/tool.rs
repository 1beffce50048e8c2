//! [`run_tool`]: a command-line tool run by a kernel test from a thread
//! inside a namespace.

use crate::exec::{Command, CommandLimits, run_blocking};

/// Runs `program args…` with `stdin` (none when empty) in the calling
/// thread's namespace (call it from [`Netns::run`](super::Netns::run) or
/// [`Netns::block_on`](super::Netns::block_on)), through
/// [`run_blocking`] with the default limits. Not one of our own writes:
/// no [`OwnWrites`](crate::exec::OwnWrites) scope records it.
///
/// Returns its standard output; the error names the command line and
/// carries its standard error (or why it could not run).
pub fn run_tool(program: &str, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut cmd = Command::new(program, args.iter().copied());
    if !stdin.is_empty() {
        cmd = cmd.with_stdin(stdin.to_string());
    }
    let out = run_blocking(&cmd, &CommandLimits::default()).map_err(|e| format!("{cmd}: {e}"))?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{cmd}: {}", out.stderr))
    }
}
