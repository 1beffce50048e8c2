//! Running external programs (`iptables-restore`, `ipvsadm`, `ip`): a small
//! trait so unit tests use a fake, and [`SystemExecutor`], which spawns
//! processes from the calling thread (so they run in its network
//! namespace). Shared by the backends that drive command-line tools.
//!
//! Every command runs under the [`CommandLimits`] it is given (the
//! [`BackendContext`](crate::backend::BackendContext)'s): one still running
//! after the timeout is killed and counted. [`run_blocking`] does the same
//! for callers without a Tokio runtime.
//!
//! On top of it, one driver per kernel tool, shared by every crate that
//! needs it, with one error type, [`ToolError`]:
//! - [`nft`] (feature `nft`): transactions and listings of `nft`;
//! - [`iptables`] (feature `iptables`): variant detection, the xtables
//!   lock, `iptables-restore`, `iptables-save` parsing.

mod error;
#[cfg(feature = "iptables")]
pub mod iptables;
#[cfg(any(feature = "nft", feature = "iptables", feature = "runtime"))]
pub mod netlink_datagram;
#[cfg(feature = "nft")]
pub mod nft;
#[cfg(any(feature = "nft", feature = "iptables"))]
pub mod nft_netlink;
mod own_writes;
mod system;

pub use crate::backend::CommandLimits;
pub use error::{RESOURCE_PROBLEM, ToolError, status};
pub use own_writes::{OwnWrites, record_child};
pub use system::{SystemExecutor, run_blocking};

/// One command line, with optional input on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program (`iptables-nft-restore`, `ipvsadm`), looked up in `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// What to write to its stdin.
    pub stdin: Option<String>,
}

impl Command {
    /// `program` with `args` and no input.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    /// Sets the input.
    pub fn with_stdin(mut self, stdin: String) -> Self {
        self.stdin = Some(stdin);
        self
    }
}

/// Prints the command as a shell would read it: arguments holding blanks
/// or quotes are double-quoted (`--comment "kubernetes service portals"`).
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// `arg` as iptables-save and a shell write it: double-quoted when it is
/// empty or holds blanks or quotes.
pub fn quote(arg: &str) -> std::borrow::Cow<'_, str> {
    if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
        format!("\"{}\"", arg.replace('"', "\\\"")).into()
    } else {
        arg.into()
    }
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs commands. The real one spawns a process from the calling thread, so
/// the command runs in that thread's network namespace.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Runs `cmd` to completion. `Err` only when it could not be started;
    /// a non-zero exit is an `Ok` [`Output`].
    async fn run(&self, cmd: &Command) -> std::io::Result<Output>;

    /// Whether `program` can be found.
    fn has_program(&self, program: &str) -> bool;

    /// Whether the commands act on the kernel of the calling thread's
    /// network namespace, so that a driver may ask that kernel directly
    /// (over netlink) instead of running a tool to read it. Fakes keep the
    /// default `false`: everything they are asked goes through [`run`].
    ///
    /// [`run`]: Executor::run
    fn reads_kernel(&self) -> bool {
        false
    }
}

/// A shared executor runs commands as the one it points to.
#[async_trait::async_trait]
impl<T: Executor + ?Sized> Executor for std::sync::Arc<T> {
    async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
        (**self).run(cmd).await
    }

    fn has_program(&self, program: &str) -> bool {
        (**self).has_program(program)
    }

    fn reads_kernel(&self) -> bool {
        (**self).reads_kernel()
    }
}

/// A borrowed executor runs commands as the one it points to.
#[async_trait::async_trait]
impl<T: Executor + ?Sized> Executor for &T {
    async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
        (**self).run(cmd).await
    }

    fn has_program(&self, program: &str) -> bool {
        (**self).has_program(program)
    }

    fn reads_kernel(&self) -> bool {
        (**self).reads_kernel()
    }
}
