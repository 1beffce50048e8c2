//! A listener and the task serving it. Dropping a [`Listener`] stops
//! accepting; connections and sessions already open finish on their own.

use std::io;
use std::net::SocketAddr;

use proxy_core::Protocol;
use tokio::task::JoinHandle;

use crate::plan::ListenerSpec;
use crate::route::Route;
use crate::udp::LocalAddress;
use crate::{pktinfo, sockets, tcp, udp};

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
    /// The address bound (its port chosen by the kernel when `spec` asked
    /// for port 0); `None` when nothing is bound.
    bound: Option<SocketAddr>,
}

impl Listener {
    /// Opens `spec` (binds and spawns its task, unless it refuses or
    /// `sockets` is dry).
    pub fn open(spec: ListenerSpec, route: Route, sockets: Sockets) -> io::Result<Listener> {
        Self::open_with(spec, route, sockets, LocalAddress::Bound)
    }

    /// Opens the listener a redirect rule sends a service port's VIP
    /// traffic to: `spec` has the unspecified address and port 0 (the
    /// kernel picks the port, see [`Listener::bound`]); UDP learns each
    /// datagram's local address (`IP_PKTINFO`) to reply from it.
    pub fn open_redirect(
        spec: ListenerSpec,
        route: Route,
        sockets: Sockets,
    ) -> io::Result<Listener> {
        Self::open_with(spec, route, sockets, LocalAddress::PacketInfo)
    }

    fn open_with(
        spec: ListenerSpec,
        route: Route,
        sockets: Sockets,
        local: LocalAddress,
    ) -> io::Result<Listener> {
        if spec.refuse || sockets == Sockets::Dry {
            return Ok(Listener {
                spec,
                task: None,
                bound: None,
            });
        }
        let (task, bound) = match spec.key.protocol {
            Protocol::Tcp => {
                let listener = sockets::tcp_listener(spec.key.addr)?;
                let bound = listener.local_addr()?;
                (tokio::spawn(tcp::serve(listener, route)), bound)
            }
            Protocol::Udp => {
                let socket = sockets::udp_socket(spec.key.addr)?;
                if local == LocalAddress::PacketInfo {
                    pktinfo::enable(&socket, spec.key.addr.is_ipv6())?;
                }
                let bound = socket.local_addr()?;
                (tokio::spawn(udp::serve(socket, route, local)), bound)
            }
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
            bound: Some(bound),
        })
    }

    /// The address bound, if any.
    pub fn bound(&self) -> Option<SocketAddr> {
        self.bound
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
