//! CPU time of a process from `/proc/<pid>/stat`, children included.
#![allow(dead_code)] // each bench uses a subset

use std::sync::OnceLock;

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds used by process `pid`: its own user + system time (every
/// thread) plus that of its children it has waited for (`cutime`,
/// `cstime`: each `nft`/`iptables-restore` once it exited and was reaped).
/// `None` once the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let (own, children) = cpu_split(pid)?;
    Some(own + children)
}

/// `(own, children's)` CPU seconds of process `pid`: utime + stime, and
/// cutime + cstime (children it has waited for).
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<f64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11..15)?;
    let hz = ticks_per_second();
    Some(((ticks[0] + ticks[1]) / hz, (ticks[2] + ticks[3]) / hz))
}
