//! Socket buffer sizes for connections whose both ends are on this host.
//!
//! Linux grows a TCP connection's buffers with its bandwidth-delay product
//! (up to `net.ipv4.tcp_rmem` / `tcp_wmem`'s maximum, megabytes). Between two
//! local sockets the delay is nil, yet the buffers still grow, and a relay
//! then holds several megabytes in flight between the client's write and the
//! endpoint's read: the endpoint copies the payload out of memory that has
//! left the CPU caches long before. Bounding the proxy's buffers keeps the
//! relayed bytes cache-warm; on this project's loopback benchmark it cut the
//! CPU time per GiB by about a third (BENCHMARKS.md). A remote peer keeps
//! autotuning: a fixed buffer would cap its window below its
//! bandwidth-delay product.

use tokio::net::TcpStream;

/// `SO_RCVBUF` / `SO_SNDBUF` asked for (the kernel doubles it for its own
/// bookkeeping): 512 KiB of window is far above the bandwidth-delay product
/// of a loopback or same-host path.
pub(super) const SAME_HOST_BUFFER: usize = 256 * 1024;

/// Bounds the buffers that a bulk direction `from` → `to` goes through:
/// `from`'s receive buffer and `to`'s send buffer get [`SAME_HOST_BUFFER`],
/// which turns autotuning off for them. Best effort: a failure leaves
/// autotuning on, which is only slower.
pub(super) fn bound_for_same_host(from: &TcpStream, to: &TcpStream) {
    #[cfg(unix)]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let set = setsockopt(from, sockopt::RcvBuf, &SAME_HOST_BUFFER)
            .and_then(|()| setsockopt(to, sockopt::SndBuf, &SAME_HOST_BUFFER));
        if let Err(error) = set {
            tracing::debug!(%error, "cannot bound the socket buffers of a same-host connection");
        }
    }
    #[cfg(not(unix))]
    let _ = (from, to);
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{getsockopt, sockopt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{SAME_HOST_BUFFER, bound_for_same_host};

    /// What the kernel reports for a buffer of `asked` bytes: capped at the
    /// `net.core` maximum, then doubled.
    fn granted(asked: usize, max_sysctl: &str) -> usize {
        let max: usize = std::fs::read_to_string(max_sysctl)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        asked.min(max) * 2
    }

    #[tokio::test]
    async fn bounds_the_receive_side_of_from_and_the_send_side_of_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let from = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (to, _) = listener.accept().await.unwrap();
        let to_rcvbuf_before = getsockopt(&to, sockopt::RcvBuf).unwrap();
        bound_for_same_host(&from, &to);
        assert_eq!(
            getsockopt(&from, sockopt::RcvBuf).unwrap(),
            granted(SAME_HOST_BUFFER, "/proc/sys/net/core/rmem_max")
        );
        assert_eq!(
            getsockopt(&to, sockopt::SndBuf).unwrap(),
            granted(SAME_HOST_BUFFER, "/proc/sys/net/core/wmem_max")
        );
        assert_eq!(
            getsockopt(&to, sockopt::RcvBuf).unwrap(),
            to_rcvbuf_before,
            "the other direction keeps autotuning"
        );
    }
}
