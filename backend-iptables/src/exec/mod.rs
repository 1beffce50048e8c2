//! Running commands: a small trait so unit tests use a fake and the real
//! executor spawns processes.

mod system;

pub use system::SystemExecutor;

/// One command line, with optional input on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program (`iptables-nft-restore`), looked up in `PATH`.
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

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {}", crate::tables::quote(arg))?;
        }
        Ok(())
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
}
