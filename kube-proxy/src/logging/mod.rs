//! Logging through `tracing`: klog's `-v` levels and `--vmodule` mapped onto
//! tracing's levels, in upstream's `text` or `json` format, on stderr.

mod vmodule;

use proxy_core::config::VModuleItem;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use vmodule::{LogFilter, VModule};

/// The crates of this project, whose level `-v` sets.
const OUR_CRATES: [&str; 6] = [
    "kube_proxy",
    "proxy_core",
    "backend_iptables",
    "backend_ipvs",
    "backend_nftables",
    "backend_userspace",
];

/// The log format (`--logging-format`, `logging.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, the
    /// event's fields, `target`.
    Json,
}

impl LogFormat {
    /// The names upstream accepts, in its order.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    /// The format named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The tracing level of klog verbosity `v` (for `-v` and for `--vmodule`):
/// 0-1 info, 2-3 debug, 4+ trace.
pub fn verbosity_level(verbosity: u32) -> tracing::Level {
    match verbosity {
        0..=1 => tracing::Level::INFO,
        2..=3 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

/// The filter for klog verbosity `v`: [`verbosity_level`] for our crates;
/// other crates log warnings, and debug at 6+ (`-v=6` shows the API
/// requests, as in klog). `RUST_LOG`, when set, wins.
pub fn filter(verbosity: u32) -> String {
    let ours = verbosity_level(verbosity).as_str().to_lowercase();
    let others = if verbosity >= 6 { "debug" } else { "warn" };
    std::iter::once(others.to_string())
        .chain(OUR_CRATES.iter().map(|c| format!("{c}={ours}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Installs the global subscriber: stderr, in `format`, at `verbosity`
/// (or as `RUST_LOG` says), with the `vmodule` overrides on top.
pub fn init(format: LogFormat, verbosity: u32, vmodule: &[VModuleItem]) {
    let env =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(filter(verbosity)));
    let filter = LogFilter::new(env, VModule::new(vmodule));
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        assert!(filter(0).starts_with("warn,kube_proxy=info"));
        assert!(filter(2).contains("proxy_core=debug"));
        assert!(filter(6).starts_with("debug,") && filter(6).contains("=trace"));
    }

    #[test]
    fn formats_are_upstreams() {
        for name in LogFormat::NAMES {
            assert!(LogFormat::from_name(name).is_some(), "{name}");
        }
        assert_eq!(LogFormat::from_name("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::from_name("JSON"), None);
        assert_eq!(LogFormat::from_name("xml"), None);
    }
}
