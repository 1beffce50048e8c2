//! A listener and the task serving it. Dropping a [`Listener`] stops
//! accepting; connections and sessions already open finish on their own.

use std::io;

use proxy_core::Protocol;
use tokio::task::JoinHandle;

use crate::plan::ListenerSpec;
use crate::route::Route;
use crate::{sockets, tcp, udp};

/// Whether listeners open real sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sockets {
    /// Bind and serve.
    Real,
    /// Record only (tests, tracers, dry runs).
    Dry,
}

/// Aborts the task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One listener of the route table.
#[derive(Debug)]
pub(crate) struct Listener {
    pub spec: ListenerSpec,
    /// The serving task; `None` when refusing (nothing bound, so the kernel
    /// refuses connections) or in a dry run.
    task: Option<AbortOnDrop>,
}

impl Listener {
    /// Opens `spec` (binds and spawns its task, unless it refuses or
    /// `sockets` is dry).
    pub fn open(spec: ListenerSpec, route: Route, sockets: Sockets) -> io::Result<Listener> {
        if spec.refuse || sockets == Sockets::Dry {
            return Ok(Listener { spec, task: None });
        }
        let task = match spec.key.protocol {
            Protocol::Tcp => tokio::spawn(tcp::serve(sockets::tcp_listener(spec.key.addr)?, route)),
            Protocol::Udp => tokio::spawn(udp::serve(sockets::udp_socket(spec.key.addr)?, route)),
            Protocol::Sctp => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "SCTP is not proxied",
                ));
            }
        };
        Ok(Listener {
            spec,
            task: Some(AbortOnDrop(task)),
        })
    }

    /// `serving`, `refusing` or `planned` (dry run).
    pub fn state(&self) -> &'static str {
        match (&self.task, self.spec.refuse) {
            (_, true) => "refusing",
            (Some(_), false) => "serving",
            (None, false) => "planned",
        }
    }
}
