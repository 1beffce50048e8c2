//! Opening listening sockets: `SO_REUSEADDR` (a restarted proxy rebinds at
//! once despite connections in TIME-WAIT) and `IPV6_V6ONLY` (an IPv6
//! backend's `[::]:port` must not collide with the IPv4 backend's
//! `0.0.0.0:port`).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

/// Listen backlog: enough for bursts of thousands of clients.
const BACKLOG: i32 = 4096;

/// A listening TCP socket on `addr`, with `TCP_NODELAY`: small writes
/// (request/response protocols) must not wait for Nagle, and accepted
/// connections inherit the option, which saves a system call per connection.
#[cfg(unix)]
pub fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use nix::sys::socket::{Backlog, SockType, listen, setsockopt, sockopt};
    let fd = socket(addr, SockType::Stream)?;
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    listen(&fd, Backlog::new(BACKLOG)?)?;
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

/// A bound UDP socket on `addr`.
#[cfg(unix)]
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let fd = socket(addr, nix::sys::socket::SockType::Datagram)?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

#[cfg(unix)]
fn socket(addr: SocketAddr, ty: nix::sys::socket::SockType) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{AddressFamily, SockFlag, SockaddrStorage, bind, setsockopt, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = nix::sys::socket::socket(family, ty, flags, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}

/// A listening TCP socket on `addr`.
#[cfg(not(unix))]
pub fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG as u32)
}

/// A bound UDP socket on `addr`.
#[cfg(not(unix))]
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::tcp_listener;

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = tcp_listener(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
