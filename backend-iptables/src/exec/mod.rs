//! Running commands: [`proxy_core::exec`], shared with the other backends
//! that drive command-line tools.

pub use proxy_core::exec::{Command, Executor, Output, SystemExecutor};
