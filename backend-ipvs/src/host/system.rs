//! [`SystemHost`]: real processes and the real `/proc`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{Command, Host, Output};

/// Spawns real processes with `tokio::process` and reads the real `/proc`.
///
/// Both happen on the calling thread (the fork in the first poll of
/// [`Host::run`], the read in [`Host::read_proc_net`]), so they see that
/// thread's network namespace: a test that runs the cleanup on a thread
/// inside a throw-away namespace never touches the host's.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

#[async_trait::async_trait]
impl Host for SystemHost {
    async fn run(&self, command: &Command) -> io::Result<Output> {
        let output = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await?;
        Ok(Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
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

    /// Reads `/proc/thread-self/net/<name>`: `/proc/net` would show the
    /// namespace of the process's main thread instead. The files are a few
    /// lines of procfs, read synchronously on purpose (a blocking-pool
    /// thread may sit in another namespace).
    fn read_proc_net(&self, name: &str) -> io::Result<Option<String>> {
        let path = PathBuf::from("/proc/thread-self/net").join(name);
        match std::fs::read_to_string(&path) {
            Ok(contents) => Ok(Some(contents)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
}
