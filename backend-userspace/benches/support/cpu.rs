//! CPU time of the benchmark process, split by role, from the scheduler's
//! own per-thread run time (`/proc/self/task/*/schedstat`, nanoseconds).
//!
//! The first field of `schedstat` is the thread's `sum_exec_runtime`: every
//! nanosecond the thread was on a CPU, in user or kernel mode. On loopback
//! the receiver's TCP processing (the softirq) normally runs on the sending
//! thread, inside its `send`/`splice`/`shutdown`, so it is counted there;
//! when the kernel defers it to `ksoftirqd` instead, it is not ours, so the
//! `ksoftirqd/N` threads are read too and reported next to it (they are
//! system-wide: other tenants' network work lands there as well).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Who a thread of this process works for, by its name (the runtimes are
/// named `server`, `userspace-proxy` and `clients`; the bulk client runs on
/// the main thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Client,
    Proxy,
    Server,
}

impl Role {
    fn of(thread_name: &str) -> Role {
        match thread_name {
            "server" => Role::Server,
            "userspace-proxy" => Role::Proxy,
            _ => Role::Client,
        }
    }
}

/// CPU nanoseconds at one instant: this process by role, and `ksoftirqd`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub by_role: BTreeMap<Role, u64>,
    pub ksoftirqd: u64,
}

/// CPU used between two snapshots, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Used {
    pub client: f64,
    pub proxy: f64,
    pub server: f64,
    /// Every thread of this process (client + proxy + server).
    pub process: f64,
    /// The `ksoftirqd/N` kernel threads (system-wide).
    pub ksoftirqd: f64,
}

impl Used {
    /// Each figure divided by `by`.
    pub fn per(self, by: f64) -> Used {
        Used {
            client: self.client / by,
            proxy: self.proxy / by,
            server: self.server / by,
            process: self.process / by,
            ksoftirqd: self.ksoftirqd / by,
        }
    }
}

/// Reads the CPU clocks; finds the `ksoftirqd` threads once.
pub struct Clock {
    ksoftirqd: Vec<PathBuf>,
}

impl Clock {
    pub fn new() -> Clock {
        let mut ksoftirqd = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if comm.starts_with("ksoftirqd/") {
                    ksoftirqd.push(entry.path().join("schedstat"));
                }
            }
        }
        Clock { ksoftirqd }
    }

    pub fn now(&self) -> Snapshot {
        let mut by_role = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let ns = run_time(&task.path().join("schedstat"));
                *by_role.entry(Role::of(name.trim())).or_insert(0) += ns;
            }
        }
        let ksoftirqd = self.ksoftirqd.iter().map(|p| run_time(p)).sum();
        Snapshot { by_role, ksoftirqd }
    }

    /// CPU used since `before`.
    pub fn since(&self, before: &Snapshot) -> Used {
        let after = self.now();
        let role = |r: Role| {
            let a = after.by_role.get(&r).copied().unwrap_or(0);
            let b = before.by_role.get(&r).copied().unwrap_or(0);
            a.saturating_sub(b) as f64 / 1e9
        };
        let (client, proxy, server) = (role(Role::Client), role(Role::Proxy), role(Role::Server));
        Used {
            client,
            proxy,
            server,
            process: client + proxy + server,
            ksoftirqd: after.ksoftirqd.saturating_sub(before.ksoftirqd) as f64 / 1e9,
        }
    }
}

/// `sum_exec_runtime` of a thread in ns (first field of its `schedstat`);
/// 0 when unreadable (the thread exited).
fn run_time(schedstat: &std::path::Path) -> u64 {
    std::fs::read_to_string(schedstat)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
