//! Congestion control of the proxy's own sockets: a leg between the proxy
//! and a peer on this host sends with Reno; a leg to a remote peer keeps
//! the system default.
//!
//! The default is often BBR, which paces every connection with a
//! high-resolution timer (armed per burst and fired to resume sending). On a
//! same-host leg there is no bottleneck for it to find, and the timers are
//! the largest part of the cost of a loopback byte in a VM: this project's
//! loopback benchmark moves a GiB over one connection for 0.28 CPU-seconds
//! with BBR and 0.13 with Reno (BENCHMARKS.md). Pacing is decided when a
//! socket's congestion control is first set up and stays on after a switch,
//! so the choice is made before the first byte: the endpoint socket gets
//! Reno before `connect`, and an accepted socket inherits its listener's,
//! so listeners are set to Reno and a connection from a remote client is
//! switched back to the default right after `accept`, before any data.
//! Reno is built into every kernel and always allowed to unprivileged
//! sockets (`net.ipv4.tcp_allowed_congestion_control`).
//!
//! Listeners are only touched when the default is one that paces (BBR):
//! otherwise there is nothing to save, and a default that negotiates ECN in
//! the handshake (DCTCP) must answer the SYN itself.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The congestion control of same-host legs.
pub(crate) const SAME_HOST: &str = "reno";

/// System defaults that pace every connection with a timer.
const PACED: &[&str] = &["bbr"];

/// What a listener's accepted connections need.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// The system default to give back to remote clients; `None` when the
    /// listener kept the default (unknown, or already Reno).
    default: Option<OsString>,
}

impl Accepted {
    /// Sets `listener` to Reno when the system default paces and can be
    /// read (so that it can be given back to remote clients). Best effort:
    /// on any failure the listener keeps the default.
    pub fn prepare(listener: &TcpListener) -> Accepted {
        let Some(default) = system_default() else {
            return Accepted::default();
        };
        let paced = PACED.iter().any(|name| default == *name);
        if !paced || set(listener, SAME_HOST).is_err() {
            return Accepted::default();
        }
        Accepted {
            default: Some(default),
        }
    }

    /// Gives a connection from a remote client (`from_host` false) the
    /// system default back.
    pub fn restore(&self, client: &TcpStream, from_host: bool) {
        if let (Some(default), false) = (&self.default, from_host)
            && let Err(error) = set(client, default)
        {
            tracing::debug!(%error, "cannot restore the default congestion control of a remote client");
        }
    }
}

/// Connects to `endpoint`; `same_host`: with Reno from the start.
pub(crate) async fn connect(endpoint: SocketAddr, same_host: bool) -> io::Result<TcpStream> {
    if !same_host {
        return TcpStream::connect(endpoint).await;
    }
    let socket = if endpoint.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Err(error) = set(&socket, SAME_HOST) {
        tracing::debug!(%error, "cannot set the congestion control of a same-host connection");
    }
    socket.connect(endpoint).await
}

/// `net.ipv4.tcp_congestion_control` of this network namespace (it is
/// also IPv6's).
fn system_default() -> Option<OsString> {
    let name = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| OsString::from(name))
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn set(socket: &impl std::os::fd::AsFd, name: impl Into<OsString>) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    Ok(setsockopt(socket, sockopt::TcpCongestion, &name.into())?)
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn set<S>(_: &S, _: impl Into<OsString>) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{getsockopt, sockopt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Accepted, PACED, SAME_HOST, connect, system_default};

    fn congestion(socket: &impl std::os::fd::AsFd) -> String {
        getsockopt(socket, sockopt::TcpCongestion)
            .unwrap()
            .into_string()
            .unwrap()
    }

    #[tokio::test]
    async fn same_host_legs_send_with_reno_and_remote_clients_keep_the_default() {
        let default = system_default().unwrap().into_string().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Accepted::prepare(&listener);

        let _host_client = TcpStream::connect(addr).await.unwrap();
        let (from_host, _) = listener.accept().await.unwrap();
        accepted.restore(&from_host, true);
        let host_leg = if PACED.contains(&default.as_str()) {
            SAME_HOST
        } else {
            default.as_str()
        };
        assert_eq!(congestion(&from_host), host_leg);

        let _remote_client = TcpStream::connect(addr).await.unwrap();
        let (from_remote, _) = listener.accept().await.unwrap();
        accepted.restore(&from_remote, false);
        assert_eq!(
            congestion(&from_remote),
            default,
            "as if the listener were untouched"
        );

        let to_host = connect(addr, true).await.unwrap();
        assert_eq!(congestion(&to_host), SAME_HOST);
        let to_remote = connect(addr, false).await.unwrap();
        assert_eq!(congestion(&to_remote), default);
    }
}
