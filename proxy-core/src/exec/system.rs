//! The executor that spawns real processes, each killed when it outlives
//! its [`CommandLimits`].

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{Command, Executor, Output};
use crate::backend::CommandLimits;

/// Spawns processes with `tokio::process`. The fork happens synchronously
/// in [`Executor::run`]'s first poll, on the calling thread: the child
/// inherits that thread's network namespace.
///
/// A command still running after [`CommandLimits::timeout`] is killed
/// (`SIGKILL`), counted ([`CommandLimits::record_timeout`]) and reported as
/// an error of kind [`io::ErrorKind::TimedOut`].
#[derive(Debug, Clone, Default)]
pub struct SystemExecutor {
    limits: CommandLimits,
}

impl SystemExecutor {
    /// An executor enforcing `limits`.
    pub fn new(limits: CommandLimits) -> Self {
        SystemExecutor { limits }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &CommandLimits {
        &self.limits
    }
}

#[async_trait::async_trait]
impl Executor for SystemExecutor {
    async fn run(&self, cmd: &Command) -> io::Result<Output> {
        let mut child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the child on timeout kills it.
            .kill_on_drop(true)
            .spawn()?;
        // Our commit, not an external change (see `OwnWrites`).
        super::record_child(child.id());
        let stdin = child.stdin.take();
        let finished = async move {
            if let (Some(input), Some(mut stdin)) = (&cmd.stdin, stdin) {
                // Write concurrently with reading the output, so a child that
                // answers before it has read everything cannot deadlock us.
                let write = async move {
                    let result = stdin.write_all(input.as_bytes()).await;
                    drop(stdin);
                    result
                };
                let (_written, out) = tokio::join!(write, child.wait_with_output());
                // A child that exits early closes the pipe: its exit code says why.
                return out;
            }
            child.wait_with_output().await
        };
        match tokio::time::timeout(self.limits.timeout(), finished).await {
            Ok(out) => Ok(convert(out?)),
            Err(_elapsed) => {
                self.limits.record_timeout(&cmd.program);
                Err(self.limits.timeout_error(&cmd.to_string()))
            }
        }
    }

    fn has_program(&self, program: &str) -> bool {
        has_program(program)
    }

    fn reads_kernel(&self) -> bool {
        true
    }
}

/// Whether `program` is an executable file, or one in one of `PATH`'s
/// directories.
pub(super) fn has_program(program: &str) -> bool {
    if program.contains('/') {
        return is_executable(Path::new(program));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn convert(out: std::process::Output) -> Output {
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The longest pause between two looks at a running child in [`run_blocking`].
const MAX_POLL: Duration = Duration::from_millis(20);

/// Runs `cmd` to completion on the calling thread, without a Tokio
/// runtime (the conntrack cleanup runs on a blocking thread), under
/// `limits` as [`SystemExecutor`] does: a child still running after the
/// timeout is killed, counted and reported as [`io::ErrorKind::TimedOut`].
/// Output is read by helper threads, so a child filling its pipes cannot
/// block.
pub fn run_blocking(cmd: &Command, limits: &CommandLimits) -> io::Result<Output> {
    let mut child = std::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let writer = match (cmd.stdin.clone(), child.stdin.take()) {
        (Some(input), Some(mut stdin)) => Some(std::thread::spawn(move || {
            // A child that exits early closes the pipe: its exit code says why.
            let _ = stdin.write_all(input.as_bytes());
        })),
        _ => None,
    };
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + limits.timeout();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The reader threads end when the last holder of the pipes
            // exits; they are not waited for.
            limits.record_timeout(&cmd.program);
            return Err(limits.timeout_error(&cmd.to_string()));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL);
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(Output {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
    })
}

/// A thread reading `pipe` to its end.
fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}
