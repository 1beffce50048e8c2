//! The `kube-proxy` binary: flags and configuration file → backend
//! registry → run. No proxy logic lives here; it is all in `proxy-core` and
//! the backend crates.
//!
//! Precedence between flags and `--config` follows upstream: see
//! [`options`].

pub mod app;
pub mod config_watch;
#[cfg(any(
    feature = "iptables",
    feature = "nftables",
    feature = "userspace",
    feature = "ipvs"
))]
pub mod diff;
pub mod flags;
pub mod logging;
pub mod options;
mod privileges;
pub mod registry;
#[cfg(any(
    feature = "iptables",
    feature = "nftables",
    feature = "userspace",
    feature = "ipvs"
))]
pub mod trace;

use std::process::ExitCode;

use clap::Parser;

pub use app::EXIT_USAGE;
pub use flags::Flags;
pub use options::{Action, Options, UsageError};

/// Prints a usage error on one line and returns exit code 64.
fn usage(message: &str) -> ExitCode {
    eprintln!("kube-proxy: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// The whole program.
pub fn main() -> ExitCode {
    // `kube-proxy trace …` and `kube-proxy diff …`: inspection commands
    // with their own flags (see `kube-proxy trace --help`).
    #[cfg(any(
        feature = "iptables",
        feature = "nftables",
        feature = "userspace",
        feature = "ipvs"
    ))]
    {
        let args: Vec<String> = std::env::args().collect();
        match args.get(1).map(String::as_str) {
            Some("trace") => return trace::main(&args[1..]),
            Some("diff") => return diff::main(&args[1..]),
            _ => {}
        }
    }
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            let text = error.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            return usage(line.trim_start_matches("error: "));
        }
    };
    let options = match Options::resolve(&flags) {
        Ok(options) => options,
        Err(error) => return usage(&error.0),
    };
    logging::init(
        options.log_format,
        options.config.logging.verbosity,
        &options.config.logging.vmodule,
    );
    if !options.ignored_flags.is_empty() {
        tracing::warn!(flags = %options.ignored_flags.join(", "), "--config is set: these flags are ignored (as upstream)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kube-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::execute(options, registry::registry())) {
        Ok(code) => code,
        Err(error) => match error.downcast_ref::<UsageError>() {
            Some(usage_error) => usage(&usage_error.0),
            None => {
                eprintln!("kube-proxy: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Parses the arguments of `kube-proxy NAME …` (`args[0]` is `NAME`), with
/// usage lines that read `kube-proxy NAME`; on `--help` or a usage error,
/// prints it and gives the exit code to return.
pub(crate) fn parse_subcommand<T: clap::Parser>(
    name: &str,
    args: &[String],
) -> Result<T, ExitCode> {
    let args = std::iter::once(format!("kube-proxy {name}")).chain(args.iter().skip(1).cloned());
    T::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}
