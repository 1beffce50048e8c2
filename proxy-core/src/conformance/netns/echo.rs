//! Echo servers: TCP, UDP and SCTP sockets bound in a namespace that answer every
//! connection or datagram with `"<ip:port> <peer-ip>\n"`.
//!
//! `ip:port` is the address the server is bound to, so a client sees which
//! endpoint answered; `peer-ip` is the source address the server saw, so it
//! sees whether the connection was masqueraded.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::Netns;

/// The reply an echo server bound to `server` sends to `peer`.
pub fn echo_reply(server: SocketAddr, peer: IpAddr) -> String {
    format!("{server} {peer}\n")
}

/// Parses an [`echo_reply`]: `(server, peer)`.
pub fn parse_echo_reply(reply: &str) -> Option<(SocketAddr, IpAddr)> {
    let (server, peer) = reply.trim_end().split_once(' ')?;
    Some((server.parse().ok()?, peer.parse().ok()?))
}

/// Transport protocols an echo server answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Transport {
    Tcp,
    Udp,
    /// One-to-one SCTP sockets, driven like TCP ones (see [`super::sctp`]).
    Sctp,
}

/// Every echo server of one topology, served by one current-thread tokio
/// runtime on its own thread. Sockets are bound by a thread inside the
/// target namespace and keep that namespace whichever thread serves them.
///
/// Dropping it stops the runtime and joins its thread, which closes every
/// socket (so the namespaces can go away).
pub(crate) struct EchoServers {
    handle: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    bound: BTreeSet<(SocketAddr, Transport)>,
}

impl EchoServers {
    /// Starts the (idle) runtime.
    pub(crate) fn new() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let handle = runtime.handle().clone();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("echo-servers".into())
            .spawn(move || {
                // Returns when the sender is used or dropped; dropping the
                // runtime then cancels every server task and closes its socket.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(EchoServers {
            handle,
            shutdown: Some(shutdown),
            thread: Some(thread),
            bound: BTreeSet::new(),
        })
    }

    /// Whether a server of `transport` is bound to `addr`.
    pub(crate) fn contains(&self, addr: SocketAddr, transport: Transport) -> bool {
        self.bound.contains(&(addr, transport))
    }

    /// Binds a server of `transport` to `addr` inside `ns` (once; a second
    /// call is a no-op) and starts serving it.
    pub(crate) fn start(
        &mut self,
        ns: &Netns,
        addr: SocketAddr,
        transport: Transport,
    ) -> io::Result<()> {
        if self.contains(addr, transport) {
            return Ok(());
        }
        match transport {
            Transport::Tcp | Transport::Sctp => {
                let listener = ns.run(|| match transport {
                    Transport::Sctp => super::sctp::listener(addr),
                    _ => bind_nonblocking(std::net::TcpListener::bind(addr), |s| {
                        s.set_nonblocking(true)
                    }),
                })??;
                self.handle.spawn(async move {
                    if let Err(e) = serve_tcp(listener, addr).await {
                        tracing::warn!(%addr, ?transport, error = %e, "stream echo server stopped");
                    }
                });
            }
            Transport::Udp => {
                let socket = ns.run(|| {
                    bind_nonblocking(std::net::UdpSocket::bind(addr), |s| s.set_nonblocking(true))
                })??;
                self.handle.spawn(async move {
                    if let Err(e) = serve_udp(socket, addr).await {
                        tracing::warn!(%addr, error = %e, "udp echo server stopped");
                    }
                });
            }
        }
        self.bound.insert((addr, transport));
        Ok(())
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("echo server runtime panicked");
        }
    }
}

fn bind_nonblocking<S>(
    bound: io::Result<S>,
    nonblocking: impl FnOnce(&S) -> io::Result<()>,
) -> io::Result<S> {
    let socket = bound?;
    nonblocking(&socket)?;
    Ok(socket)
}

async fn serve_tcp(listener: std::net::TcpListener, addr: SocketAddr) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // A client that gave up before we accepted: keep serving.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        };
        tokio::spawn(async move {
            let reply = echo_reply(addr, peer.ip());
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_udp(socket: std::net::UdpSocket, addr: SocketAddr) -> io::Result<()> {
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut buf = [0u8; 2048];
    loop {
        let (_, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // An ICMP error for an earlier reply, reported on this socket.
            Err(e) if is_icmp_error(&e) => continue,
            Err(e) => return Err(e),
        };
        let reply = echo_reply(addr, peer.ip());
        if let Err(e) = socket.send_to(reply.as_bytes(), peer).await
            && !is_icmp_error(&e)
        {
            return Err(e);
        }
    }
}

fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
