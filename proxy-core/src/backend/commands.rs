//! [`CommandLimits`]: how long an external program a backend runs (`nft`,
//! `iptables-restore`, `ipset`, `ipvsadm`, `conntrack`, `ip`) may take
//! before it is killed, and who hears about it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Hears about every external command killed for running too long.
///
/// The runtime's metrics implement it
/// (`kubeproxy_command_timeouts_total{program}`); a backend only calls
/// [`CommandLimits::record_timeout`], so it never depends on the runtime.
pub trait TimeoutRecorder: Send + Sync {
    /// `program` (its file name, e.g. `nft`) ran longer than the timeout
    /// and was killed.
    fn command_timed_out(&self, program: &str);
}

/// The time limit of external commands, carried by every
/// [`BackendContext`](super::BackendContext) and used by the command
/// runners of every backend (`proxy_core::exec`, feature `exec`), of the
/// userspace redirect rules and of the conntrack cleanup.
///
/// One limit for every command: a restore of 10,000 Services takes a few
/// seconds and a listing or a probe milliseconds, so
/// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT) (30 s) is an order of magnitude
/// above the slowest healthy command and still below the default health
/// window (2 × `syncPeriod` = 60 s): a hung tool is killed, the sync fails
/// and is retried before `/healthz` would report the family stuck. Without
/// a limit a hung tool (a stuck `nft` on a wedged kernel lock, an
/// `iptables-restore` waiting on a lock holder that never lets go) would
/// stop the sync loop for good.
#[derive(Clone)]
pub struct CommandLimits {
    timeout: Duration,
    recorder: Option<Arc<dyn TimeoutRecorder>>,
}

impl CommandLimits {
    /// The default time limit of one command.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Limits of `timeout` per command, recorded nowhere.
    pub fn new(timeout: Duration) -> Self {
        CommandLimits {
            timeout,
            recorder: None,
        }
    }

    /// The same limits, telling `recorder` about every timeout.
    pub fn with_recorder(mut self, recorder: Arc<dyn TimeoutRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// How long one command may run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reports that `program` was killed after the timeout (counted under
    /// its file name: `/usr/sbin/nft` counts as `nft`).
    pub fn record_timeout(&self, program: &str) {
        let name = program.rsplit('/').next().unwrap_or(program);
        tracing::warn!(program = name, timeout = ?self.timeout, "command timed out and was killed");
        if let Some(recorder) = &self.recorder {
            recorder.command_timed_out(name);
        }
    }

    /// The error of a command killed after the timeout, of kind
    /// [`std::io::ErrorKind::TimedOut`] (see [`is_timeout`](Self::is_timeout)).
    pub fn timeout_error(&self, command: &str) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "`{command}` did not finish within {:?} and was killed",
                self.timeout
            ),
        )
    }

    /// Whether `error` is a command killed after the timeout.
    pub fn is_timeout(error: &std::io::Error) -> bool {
        error.kind() == std::io::ErrorKind::TimedOut
    }
}

impl Default for CommandLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_TIMEOUT)
    }
}

impl fmt::Debug for CommandLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandLimits")
            .field("timeout", &self.timeout)
            .field("recorded", &self.recorder.is_some())
            .finish()
    }
}

/// A [`TimeoutRecorder`] keeping the names it hears, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Names(pub(crate) std::sync::Mutex<Vec<String>>);

#[cfg(test)]
impl TimeoutRecorder for Names {
    fn command_timed_out(&self, program: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(program.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_recorded_under_the_programs_file_name() {
        let names = Arc::new(Names::default());
        let limits = CommandLimits::new(Duration::from_secs(2)).with_recorder(names.clone());
        limits.record_timeout("/usr/sbin/nft");
        limits.record_timeout("iptables-nft-restore");
        let recorded = names.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(recorded, ["nft", "iptables-nft-restore"]);
        let error = limits.timeout_error("nft -f -");
        assert!(CommandLimits::is_timeout(&error));
        assert!(error.to_string().contains("within 2s"), "{error}");
        assert_eq!(CommandLimits::default().timeout(), Duration::from_secs(30));
    }
}
