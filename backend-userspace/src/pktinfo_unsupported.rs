//! `IP_PKTINFO` is Linux-only here: elsewhere redirect listeners cannot
//! serve UDP (and redirect mode is never on by itself: there is no nft).

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "UDP redirect listeners need IP_PKTINFO (Linux)",
    )
}

pub(crate) fn enable(_socket: &UdpSocket, _ipv6: bool) -> io::Result<()> {
    Err(unsupported())
}

pub(crate) async fn recv(
    _socket: &UdpSocket,
    _buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    Err(unsupported())
}

pub(crate) async fn send(
    _socket: &UdpSocket,
    _buf: &[u8],
    _from: IpAddr,
    _to: SocketAddr,
) -> io::Result<usize> {
    Err(unsupported())
}
