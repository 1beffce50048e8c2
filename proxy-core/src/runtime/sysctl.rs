//! Conntrack sysctls set at start-up, upstream's `conntrack.SetSysctls`.
//!
//! | file | value |
//! |---|---|
//! | `net/netfilter/nf_conntrack_max` | `max(maxPerCore × CPUs, min)`, when `maxPerCore > 0` |
//! | `/sys/module/nf_conntrack/parameters/hashsize` | raised to `nf_conntrack_max / 4` when smaller |
//! | `net/netfilter/nf_conntrack_tcp_timeout_established` | `tcpEstablishedTimeout` in seconds, when > 0 |
//! | `net/netfilter/nf_conntrack_tcp_timeout_close_wait` | `tcpCloseWaitTimeout` in seconds, when > 0 |
//! | `net/netfilter/nf_conntrack_tcp_be_liberal` | 1, when `tcpBeLiberal` |
//! | `net/netfilter/nf_conntrack_udp_timeout` | `udpTimeout` in seconds, when > 0 |
//! | `net/netfilter/nf_conntrack_udp_timeout_stream` | `udpStreamTimeout` in seconds, when > 0 |
//!
//! A file is written only when its value differs. A read-only `/proc/sys`
//! or `/sys` (kube-proxy in a container without privileges) is a warning,
//! not an error: the setting is skipped, as upstream does for the
//! read-only sysfs case.
//!
//! ```no_run
//! # fn f(config: &proxy_core::config::KubeProxyConfiguration) -> Result<(), proxy_core::Error> {
//! for change in proxy_core::runtime::sysctl::apply_conntrack_sysctls(config)? {
//!     tracing::info!(%change, "set sysctl");
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{Duration, KubeProxyConfiguration};
use crate::error::Error;

/// `nf_conntrack_max`, relative to the sysctl root.
pub const NF_CONNTRACK_MAX: &str = "net/netfilter/nf_conntrack_max";
/// The conntrack hash table size, relative to the sysfs root.
pub const NF_CONNTRACK_HASHSIZE: &str = "module/nf_conntrack/parameters/hashsize";
/// `nf_conntrack_tcp_timeout_established`, relative to the sysctl root.
pub const NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED: &str =
    "net/netfilter/nf_conntrack_tcp_timeout_established";
/// `nf_conntrack_tcp_timeout_close_wait`, relative to the sysctl root.
pub const NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT: &str =
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait";
/// `nf_conntrack_tcp_be_liberal`, relative to the sysctl root.
pub const NF_CONNTRACK_TCP_BE_LIBERAL: &str = "net/netfilter/nf_conntrack_tcp_be_liberal";
/// `nf_conntrack_udp_timeout`, relative to the sysctl root.
pub const NF_CONNTRACK_UDP_TIMEOUT: &str = "net/netfilter/nf_conntrack_udp_timeout";
/// `nf_conntrack_udp_timeout_stream`, relative to the sysctl root.
pub const NF_CONNTRACK_UDP_TIMEOUT_STREAM: &str = "net/netfilter/nf_conntrack_udp_timeout_stream";

/// One value written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlChange {
    /// The file written.
    pub path: PathBuf,
    /// Its value before, when it could be read.
    pub previous: Option<u64>,
    /// The value written.
    pub value: u64,
}

impl fmt::Display for SysctlChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.previous {
            Some(previous) => write!(f, "{}: {previous} -> {}", self.path.display(), self.value),
            None => write!(f, "{}: {}", self.path.display(), self.value),
        }
    }
}

/// Where the sysctls live and how many CPUs the host has: the real host by
/// default, a temporary directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlRoots {
    /// The sysctl tree, `/proc/sys`.
    pub proc_sys: PathBuf,
    /// The sysfs tree, `/sys`.
    pub sys: PathBuf,
}

impl Default for SysctlRoots {
    fn default() -> Self {
        SysctlRoots {
            proc_sys: PathBuf::from("/proc/sys"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// Applies the conntrack sysctls of `config` to this host (see the module
/// documentation); returns what was written.
pub fn apply_conntrack_sysctls(
    config: &KubeProxyConfiguration,
) -> Result<Vec<SysctlChange>, Error> {
    SysctlRoots::default().apply_conntrack(config)
}

/// Whole seconds of a configured timeout, if it is set and positive.
fn seconds(timeout: Option<Duration>) -> Option<u64> {
    timeout
        .filter(|d| !d.is_negative() && !d.is_zero())
        .map(|d| d.to_std().as_secs())
}

impl SysctlRoots {
    /// Roots under `dir`: `dir/proc/sys` and `dir/sys`.
    pub fn under(dir: &Path) -> Self {
        SysctlRoots {
            proc_sys: dir.join("proc/sys"),
            sys: dir.join("sys"),
        }
    }

    /// The number of CPUs: the `online` list of sysfs (all CPUs of the host,
    /// as upstream reads them, whatever this process's affinity), or the
    /// available parallelism when it cannot be read.
    pub fn cpu_count(&self) -> u64 {
        std::fs::read_to_string(self.sys.join("devices/system/cpu/online"))
            .ok()
            .and_then(|list| count_cpu_list(&list))
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
    }

    /// Upstream's `getConntrackMax`: `max(maxPerCore × CPUs, min)` when
    /// `maxPerCore > 0`, else `None` (leave the limit alone).
    pub fn conntrack_max(&self, config: &KubeProxyConfiguration) -> Option<u64> {
        let per_core = u64::try_from(config.conntrack.max_per_core?)
            .ok()
            .filter(|n| *n > 0)?;
        let floor = config
            .conntrack
            .min
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(0);
        Some(per_core.saturating_mul(self.cpu_count()).max(floor))
    }

    /// Applies the conntrack sysctls of `config` under these roots.
    pub fn apply_conntrack(
        &self,
        config: &KubeProxyConfiguration,
    ) -> Result<Vec<SysctlChange>, Error> {
        let ct = &config.conntrack;
        let mut changes = Vec::new();
        if let Some(max) = self.conntrack_max(config) {
            let wrote = self.set(&self.proc_sys.join(NF_CONNTRACK_MAX), max, &mut changes)?;
            // Upstream sizes the hash table only after a successful write.
            if wrote {
                let hashsize = self.sys.join(NF_CONNTRACK_HASHSIZE);
                let current = read_u64(&hashsize)?;
                if current.is_none_or(|h| h < max / 4) {
                    self.set(&hashsize, max / 4, &mut changes)?;
                }
            }
        }
        let settings = [
            (
                NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED,
                seconds(ct.tcp_established_timeout),
            ),
            (
                NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT,
                seconds(ct.tcp_close_wait_timeout),
            ),
            (NF_CONNTRACK_TCP_BE_LIBERAL, ct.tcp_be_liberal.then_some(1)),
            (NF_CONNTRACK_UDP_TIMEOUT, seconds(Some(ct.udp_timeout))),
            (
                NF_CONNTRACK_UDP_TIMEOUT_STREAM,
                seconds(Some(ct.udp_stream_timeout)),
            ),
        ];
        for (name, value) in settings {
            if let Some(value) = value {
                self.set(&self.proc_sys.join(name), value, &mut changes)?;
            }
        }
        Ok(changes)
    }

    /// Writes `value` to `path` unless it already holds it. Returns whether
    /// the file holds `value` afterwards (false when it is read-only).
    fn set(&self, path: &Path, value: u64, changes: &mut Vec<SysctlChange>) -> Result<bool, Error> {
        let previous = read_u64(path)?;
        if previous == Some(value) {
            return Ok(true);
        }
        match std::fs::write(path, value.to_string()) {
            Ok(()) => {
                tracing::info!(path = %path.display(), ?previous, value, "set sysctl");
                changes.push(SysctlChange {
                    path: path.to_path_buf(),
                    previous,
                    value,
                });
                Ok(true)
            }
            Err(e) if is_read_only(&e) => {
                tracing::warn!(
                    path = %path.display(), value, error = %e,
                    "cannot set sysctl: the file system is read-only (run kube-proxy privileged, or set it on the host)"
                );
                Ok(false)
            }
            Err(source) => Err(Error::Io {
                context: format!("writing {value} to {}", path.display()),
                source,
            }),
        }
    }
}

/// Whether `e` means the file cannot be written here (read-only mount, or
/// no permission in an unprivileged container).
fn is_read_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
    )
}

/// The integer in `path`; `None` when the file is missing or not a number.
fn read_u64(path: &Path) -> Result<Option<u64>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            context: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// The number of CPUs in a sysfs CPU list such as `0-3,6,8-9`.
fn count_cpu_list(list: &str) -> Option<u64> {
    let mut n = 0u64;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("kp-sysctl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(file: &Path, value: &str) {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, value).unwrap();
    }

    fn host(dir: &TempDir, cpus: &str) -> SysctlRoots {
        let roots = SysctlRoots::under(&dir.0);
        write(&roots.sys.join("devices/system/cpu/online"), cpus);
        for name in [
            NF_CONNTRACK_MAX,
            NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED,
            NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT,
            NF_CONNTRACK_TCP_BE_LIBERAL,
            NF_CONNTRACK_UDP_TIMEOUT,
            NF_CONNTRACK_UDP_TIMEOUT_STREAM,
        ] {
            write(&roots.proc_sys.join(name), "0\n");
        }
        write(&roots.sys.join(NF_CONNTRACK_HASHSIZE), "1024\n");
        roots
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap().trim().to_string()
    }

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(count_cpu_list("0-3,6,8-9\n"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn defaults_write_max_hashsize_and_tcp_timeouts_only() {
        let dir = TempDir::new("defaults");
        let roots = host(&dir, "0-7");
        let config = KubeProxyConfiguration::default();
        let changes = roots.apply_conntrack(&config).unwrap();
        // 32768 × 8 = 262144 > min 131072
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_MAX)), "262144");
        assert_eq!(read(roots.sys.join(NF_CONNTRACK_HASHSIZE)), "65536");
        assert_eq!(
            read(roots.proc_sys.join(NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED)),
            "86400"
        );
        assert_eq!(
            read(roots.proc_sys.join(NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT)),
            "3600"
        );
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_TCP_BE_LIBERAL)), "0");
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_UDP_TIMEOUT)), "0");
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert_eq!(changes[0].previous, Some(0));

        // A second run finds every value in place and writes nothing.
        assert_eq!(roots.apply_conntrack(&config).unwrap(), vec![]);
    }

    #[test]
    fn min_wins_on_small_hosts_and_large_hashsize_is_kept() {
        let dir = TempDir::new("min");
        let roots = host(&dir, "0");
        write(&roots.sys.join(NF_CONNTRACK_HASHSIZE), "500000");
        roots
            .apply_conntrack(&KubeProxyConfiguration::default())
            .unwrap();
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_MAX)), "131072");
        assert_eq!(read(roots.sys.join(NF_CONNTRACK_HASHSIZE)), "500000");
    }

    #[test]
    fn zero_per_core_leaves_max_alone_and_options_are_written() {
        let dir = TempDir::new("options");
        let roots = host(&dir, "0-1");
        let mut config = KubeProxyConfiguration::default();
        config.conntrack.max_per_core = Some(0);
        config.conntrack.tcp_be_liberal = true;
        config.conntrack.udp_timeout = Duration::from_secs(30);
        config.conntrack.udp_stream_timeout = Duration::from_secs(120);
        config.conntrack.tcp_established_timeout = Some(Duration::ZERO);
        roots.apply_conntrack(&config).unwrap();
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_MAX)), "0");
        assert_eq!(read(roots.sys.join(NF_CONNTRACK_HASHSIZE)), "1024");
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_TCP_BE_LIBERAL)), "1");
        assert_eq!(read(roots.proc_sys.join(NF_CONNTRACK_UDP_TIMEOUT)), "30");
        assert_eq!(
            read(roots.proc_sys.join(NF_CONNTRACK_UDP_TIMEOUT_STREAM)),
            "120"
        );
        assert_eq!(
            read(roots.proc_sys.join(NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED)),
            "0"
        );
    }

    #[test]
    fn read_only_and_permission_errors_are_warnings() {
        for (errno, read_only) in [(30, true), (13, true), (1, true), (5, false), (28, false)] {
            // EROFS, EACCES, EPERM; EIO, ENOSPC
            assert_eq!(
                is_read_only(&io::Error::from_raw_os_error(errno)),
                read_only,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn read_only_files_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("readonly");
        let roots = host(&dir, "0-7");
        let max = roots.proc_sys.join(NF_CONNTRACK_MAX);
        std::fs::set_permissions(&max, std::fs::Permissions::from_mode(0o444)).unwrap();
        if std::fs::OpenOptions::new().write(true).open(&max).is_ok() {
            println!(
                "NOTE: read_only_files_are_skipped: running as root, file modes do not apply; covered by the errno test"
            );
            return;
        }
        let changes = roots
            .apply_conntrack(&KubeProxyConfiguration::default())
            .unwrap();
        assert_eq!(read(max), "0");
        assert_eq!(
            read(roots.sys.join(NF_CONNTRACK_HASHSIZE)),
            "1024",
            "hashsize follows a successful max only"
        );
        assert_eq!(changes.len(), 2, "only the TCP timeouts: {changes:?}");
    }
}
