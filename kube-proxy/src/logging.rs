//! Logging through `tracing`, with klog's `-v` levels mapped onto tracing's.

use tracing_subscriber::EnvFilter;

/// The crates of this project, whose level `-v` sets.
const OUR_CRATES: [&str; 6] = [
    "kube_proxy",
    "proxy_core",
    "backend_iptables",
    "backend_ipvs",
    "backend_nftables",
    "backend_userspace",
];

/// The filter for klog verbosity `v`: 0-1 info, 2-3 debug, 4+ trace for
/// our crates; other crates log warnings, and everything at 6+ (`-v=6`
/// shows the API requests, as in klog). `RUST_LOG`, when set, wins.
pub fn filter(verbosity: u32) -> String {
    let ours = match verbosity {
        0..=1 => "info",
        2..=3 => "debug",
        _ => "trace",
    };
    let others = if verbosity >= 6 { "debug" } else { "warn" };
    std::iter::once(others.to_string())
        .chain(OUR_CRATES.iter().map(|c| format!("{c}={ours}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Installs the global subscriber (stderr, text).
pub fn init(verbosity: u32) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(filter(verbosity)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn verbosity_maps_to_levels() {
        assert!(super::filter(0).starts_with("warn,kube_proxy=info"));
        assert!(super::filter(2).contains("proxy_core=debug"));
        assert!(super::filter(6).starts_with("debug,") && super::filter(6).contains("=trace"));
    }
}
