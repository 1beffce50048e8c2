//! [`SystemHost`]: real processes and the real `/proc`.

use std::io;
use std::path::PathBuf;

use proxy_core::exec::{CommandLimits, Executor, SystemExecutor};

use super::{Command, Host, Output};

/// Runs real processes ([`SystemExecutor`]) and reads the real `/proc`.
///
/// Both happen on the calling thread (the fork in the first poll of
/// [`Host::run`], the read in [`Host::read_proc_net`]), so they see that
/// thread's network namespace: a test that runs the cleanup on a thread
/// inside a throw-away namespace never touches the host's. Commands are
/// killed when they outlive the [`CommandLimits`].
#[derive(Debug, Clone, Default)]
pub struct SystemHost {
    exec: SystemExecutor,
}

impl SystemHost {
    /// The host, running commands under `limits`.
    pub fn new(limits: CommandLimits) -> Self {
        SystemHost {
            exec: SystemExecutor::new(limits),
        }
    }
}

#[async_trait::async_trait]
impl Host for SystemHost {
    async fn run(&self, command: &Command) -> io::Result<Output> {
        self.exec.run(command).await
    }

    fn has_program(&self, program: &str) -> bool {
        self.exec.has_program(program)
    }

    fn reads_kernel(&self) -> bool {
        self.exec.reads_kernel()
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
