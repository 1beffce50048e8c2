//! Every path is measured with the same kernel settings: neither the bench
//! nor the proxy picks a congestion control, so every socket (client,
//! server, and the proxy's two) runs the system default
//! (`net.ipv4.tcp_congestion_control`). This checks it on one open
//! connection per path, before anything is measured, by listing the
//! sockets' congestion control with `ss -ti` (which sees the proxy's sockets
//! too: they live in this process and network namespace).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

/// The system default congestion control of this network namespace.
pub fn system_default() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Opens one echo connection through `addr` (so that, through a proxy, its
/// connection to `server` is open too) and returns the congestion control
/// of every established socket on `addr`'s or `server`'s port; `None` when
/// `ss` cannot be run.
fn of_open_connection(addr: SocketAddr, server: SocketAddr) -> Option<Vec<String>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"e!").unwrap();
    let mut back = [0u8; 1];
    s.read_exact(&mut back).unwrap();
    let filter = format!(
        "( sport = :{a} or dport = :{a} or sport = :{s} or dport = :{s} )",
        a = addr.port(),
        s = server.port()
    );
    let out = Command::new("ss")
        .args(["-Htin", "state", "established", &filter])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    // `ss -i` prints each socket's details on an indented line; the
    // congestion control is the one word there that names an available one.
    // Close the connection and wait for its end to come back, so that its
    // sockets are no longer established when the next path is checked.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&out.stdout);
    let names = text
        .lines()
        .filter(|line| line.starts_with(char::is_whitespace))
        .map(|line| {
            line.split_whitespace()
                .find(|word| available.contains(word))
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    Some(names)
}

/// Checks that every socket of every path in `paths` runs the system
/// default, and says so; panics otherwise (the comparison would not be
/// like for like). Without `ss` it says the check was skipped.
pub fn check_same_everywhere(paths: &[(String, SocketAddr)], server: SocketAddr) {
    let default = system_default();
    let mut seen = Vec::new();
    for (label, addr) in paths {
        let Some(names) = of_open_connection(*addr, server) else {
            println!(
                "congestion control: not checked (`ss` not available); system default {default}"
            );
            return;
        };
        let expected = if *addr == server { 2 } else { 4 };
        assert_eq!(
            names.len(),
            expected,
            "{label}: sockets of one open connection: {names:?}"
        );
        assert!(
            names.iter().all(|n| *n == default),
            "{label}: a socket does not run the system default {default}: {names:?}"
        );
        seen.push(format!("{label} {}", names.len()));
    }
    println!(
        "congestion control: the system default ({default}) on every socket of every path ({})",
        seen.join(", ")
    );
}
