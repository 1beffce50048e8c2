//! UDP on the unspecified address with `IP_PKTINFO` / `IPV6_PKTINFO`: each
//! datagram is received with the local address it was sent to, and replies
//! leave from that address. A redirect listener needs it: the rules send
//! each client to a different local address (the primary address of the
//! incoming interface, or loopback for the host's own traffic), and a reply
//! from any other address would not match the client's conntrack entry.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel for the destination address of each datagram.
pub(crate) fn enable(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
    } else {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?;
    }
    Ok(())
}

/// A received datagram: its length, the client, and the local address it
/// was sent to (`None` if the kernel did not say).
pub(crate) async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut space = nix::cmsg_space!(libc::in6_pktinfo);
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )?;
            let client = msg
                .address
                .and_then(|a| socket_addr(&a))
                .ok_or_else(|| io::Error::other("datagram without a source address"))?;
            let local = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => Some(IpAddr::V4(Ipv4Addr::from(
                    u32::from_be(info.ipi_addr.s_addr),
                ))),
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)))
                }
                _ => None,
            });
            Ok((msg.bytes, client, local))
        })
        .await
}

/// Sends `buf` to `to` from the local address `from`.
pub(crate) async fn send(
    socket: &UdpSocket,
    buf: &[u8],
    from: IpAddr,
    to: SocketAddr,
) -> io::Result<usize> {
    let destination = SockaddrStorage::from(to);
    socket
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(buf)];
            let sent = match from {
                IpAddr::V4(ip) => {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    sendmsg(
                        socket.as_raw_fd(),
                        &iov,
                        &[ControlMessage::Ipv4PacketInfo(&info)],
                        MsgFlags::empty(),
                        Some(&destination),
                    )
                }
                IpAddr::V6(ip) => {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: 0,
                    };
                    sendmsg(
                        socket.as_raw_fd(),
                        &iov,
                        &[ControlMessage::Ipv6PacketInfo(&info)],
                        MsgFlags::empty(),
                        Some(&destination),
                    )
                }
            };
            sent.map_err(io::Error::from)
        })
        .await
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()))
    } else {
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_leave_from_the_address_the_client_sent_to() {
        let server = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        enable(&server, false).unwrap();
        let port = server.local_addr().unwrap().port();
        // 127.0.0.7 is local but not the address routing would pick for a
        // reply to 127.0.0.1 (that is 127.0.0.1 itself).
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(("127.0.0.7", port)).await.unwrap();
        client.send(b"ping").await.unwrap();
        let mut buf = [0u8; 16];
        let (len, from, local) = recv(&server, &mut buf).await.unwrap();
        assert_eq!(&buf[..len], b"ping");
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(local, Some("127.0.0.7".parse().unwrap()));
        send(&server, b"pong", "127.0.0.7".parse().unwrap(), from)
            .await
            .unwrap();
        // A connected socket only takes the reply if it comes from 127.0.0.7.
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"pong");
    }
}
