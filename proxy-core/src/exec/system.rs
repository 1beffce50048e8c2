//! The executor that spawns real processes.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::{Command, Executor, Output};

/// Spawns processes with `tokio::process`. The fork happens synchronously
/// in [`Executor::run`]'s first poll, on the calling thread: the child
/// inherits that thread's network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemExecutor;

#[async_trait::async_trait]
impl Executor for SystemExecutor {
    async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
        let mut child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        super::record_child(child.id());
        if let (Some(input), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
            // Write concurrently with reading the output, so a child that
            // answers before it has read everything cannot deadlock us.
            let write = async move {
                let result = stdin.write_all(input.as_bytes()).await;
                drop(stdin);
                result
            };
            let (_written, out) = tokio::join!(write, child.wait_with_output());
            // A child that exits early closes the pipe: its exit code says why.
            let out = out?;
            return Ok(convert(out));
        }
        Ok(convert(child.wait_with_output().await?))
    }

    fn has_program(&self, program: &str) -> bool {
        if program.contains('/') {
            return Path::new(program).is_file();
        }
        let path = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
    }
}

fn convert(out: std::process::Output) -> Output {
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
