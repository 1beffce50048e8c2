//! `kube-proxy diff` (in progress).

use std::process::ExitCode;

/// `kube-proxy diff ARGS`.
pub fn main(_args: &[String]) -> ExitCode {
    ExitCode::from(crate::trace::EXIT_ERROR)
}
