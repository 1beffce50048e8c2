//! Real connections from a client namespace: one attempt is one TCP
//! connection, one SCTP association or one UDP request/response, each from
//! a fresh socket on a source port the topology has not used recently
//! (see [`SourcePorts`]): a new conntrack entry and a new load-balancing
//! decision.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::AsyncReadExt;

use super::Netns;
use super::echo::{Transport, parse_echo_reply};
use super::source_ports::SourcePorts;

/// What one attempt saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// An echo server bound to `server` answered and saw the client as `peer`.
    Answered { server: SocketAddr, peer: IpAddr },
    /// `ECONNREFUSED`: TCP reset to the SYN, or ICMP port unreachable.
    Refused,
    /// The connection was reset after it was established.
    Reset,
    /// `EHOSTUNREACH` / `ENETUNREACH`: no route, or ICMP host/net unreachable.
    Unreachable,
    /// No answer within the timeout.
    TimedOut,
}

/// A series of attempts from one client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) transport: Transport,
    /// The source address to bind (port from the topology's [`SourcePorts`]).
    pub(crate) source: IpAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) timeout: Duration,
}

impl Probe {
    /// Runs attempts inside `ns`, each from the next of `ports`, while
    /// `keep_going(attempts so far)` says so (it is asked after every
    /// attempt).
    pub(crate) fn run(
        &self,
        ns: &Netns,
        ports: &mut SourcePorts,
        keep_going: impl Fn(&[Attempt]) -> bool + Send,
    ) -> io::Result<Vec<Attempt>> {
        let probe = *self;
        ns.block_on(move || async move {
            let mut attempts = Vec::new();
            loop {
                attempts.push(probe.attempt(ports).await?);
                if !keep_going(&attempts) {
                    return Ok(attempts);
                }
            }
        })?
    }

    async fn attempt(&self, ports: &mut SourcePorts) -> io::Result<Attempt> {
        let result = match self.transport {
            Transport::Tcp | Transport::Sctp => {
                tokio::time::timeout(self.timeout, self.stream(ports)).await
            }
            Transport::Udp => tokio::time::timeout(self.timeout, self.udp(ports)).await,
        };
        let reply = match result {
            Err(_elapsed) => return Ok(Attempt::TimedOut),
            Ok(Err(e)) => return classify_error(e),
            Ok(Ok(reply)) => reply,
        };
        let text = String::from_utf8_lossy(&reply);
        match parse_echo_reply(&text) {
            Some((server, peer)) => Ok(Attempt::Answered { server, peer }),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} answered {text:?}, which is not an echo server reply",
                    self.destination
                ),
            )),
        }
    }

    /// One TCP connection, or one SCTP association on a one-to-one socket.
    async fn stream(&self, ports: &mut SourcePorts) -> io::Result<Vec<u8>> {
        let socket = ports.bind(self.source, |source| {
            let socket = match (self.transport, self.source) {
                (Transport::Sctp, _) => return super::sctp::client(source),
                (_, IpAddr::V4(_)) => tokio::net::TcpSocket::new_v4()?,
                (_, IpAddr::V6(_)) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(source)?;
            Ok(socket)
        })?;
        let mut stream = socket.connect(self.destination).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok(reply)
    }

    async fn udp(&self, ports: &mut SourcePorts) -> io::Result<Vec<u8>> {
        let socket = ports.bind(self.source, |source| {
            let socket = std::net::UdpSocket::bind(source)?;
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket)
        })?;
        // Without IP_RECVERR a UDP socket reports only "hard" ICMP errors
        // (port unreachable); host and net unreachable would look like a
        // timeout.
        match self.source {
            IpAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvErr, &true)?,
            IpAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvErr, &true)?,
        }
        socket.connect(self.destination).await?;
        socket.send(b"ping\n").await?;
        let mut buf = vec![0u8; 2048];
        let n = socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }
}

fn classify_error(e: io::Error) -> io::Result<Attempt> {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Ok(Attempt::Refused),
        io::ErrorKind::ConnectionReset => Ok(Attempt::Reset),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            Ok(Attempt::Unreachable)
        }
        _ => Err(e),
    }
}
