//! Helpers shared by the benchmarks that run the release binary (`soak`,
//! `e2e`): argument parsing, privileges, process memory, metrics, the
//! proxy process, and (e2e) the fake API server and the kernel checks.
#![allow(dead_code)] // each bench uses a subset

pub mod cpu;
pub mod kernel;
pub mod lean_api;
pub mod proxy;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// `90s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(text: &str) -> Duration {
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let n: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("bad duration {text:?}"));
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => panic!("bad duration unit in {text:?} (s, m, h, ms)"),
    };
    Duration::from_secs_f64(secs)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// The resident memory of process `pid` (`VmRSS`), in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A KiB field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:` = the peak
/// resident memory so far); 0 once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The body of `GET /metrics` on `addr`, over HTTP/1.0 (no chunking).
pub fn get_metrics(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string()))
}

/// `kib` as `12.3 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
