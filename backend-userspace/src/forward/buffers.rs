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

/// The congestion control a same-host bulk direction sends with: Reno
/// paces nothing. The system default may be BBR, which paces every
/// connection with a high-resolution timer (armed per burst, and fired to
/// resume sending); between two sockets of one host there is no bottleneck
/// for it to find, and in a VM each timer costs a trap to the hypervisor.
/// On this project's loopback benchmark the default BBR cost the splice
/// path about a fifth more CPU per GiB (BENCHMARKS.md). Reno is built into
/// every kernel and always allowed to unprivileged sockets
/// (`net.ipv4.tcp_allowed_congestion_control`).
pub(super) const SAME_HOST_CONGESTION_CONTROL: &str = "reno";

/// Tunes the sockets a bulk direction `from` → `to` goes through when both
/// ends are on this host: `from`'s receive buffer and `to`'s send buffer
/// get [`SAME_HOST_BUFFER`], which turns autotuning off for them, and `to`
/// sends with [`SAME_HOST_CONGESTION_CONTROL`]. Best effort: a failure
/// leaves the socket as it was, which is only slower.
pub(super) fn tune_for_same_host(from: &TcpStream, to: &TcpStream) {
    #[cfg(unix)]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let set = setsockopt(from, sockopt::RcvBuf, &SAME_HOST_BUFFER)
            .and_then(|()| setsockopt(to, sockopt::SndBuf, &SAME_HOST_BUFFER));
        if let Err(error) = set {
            tracing::debug!(%error, "cannot bound the socket buffers of a same-host connection");
        }
        let reno = std::ffi::OsString::from(SAME_HOST_CONGESTION_CONTROL);
        if let Err(error) = setsockopt(to, sockopt::TcpCongestion, &reno) {
            tracing::debug!(%error, "cannot set the congestion control of a same-host connection");
        }
    }
    #[cfg(not(unix))]
    let _ = (from, to);
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{getsockopt, sockopt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{SAME_HOST_BUFFER, SAME_HOST_CONGESTION_CONTROL, tune_for_same_host};

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
    async fn bounds_the_receive_side_of_from_and_tunes_the_send_side_of_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let from = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (to, _) = listener.accept().await.unwrap();
        let to_rcvbuf_before = getsockopt(&to, sockopt::RcvBuf).unwrap();
        let from_congestion_before = getsockopt(&from, sockopt::TcpCongestion).unwrap();
        tune_for_same_host(&from, &to);
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
        assert_eq!(
            getsockopt(&to, sockopt::TcpCongestion).unwrap(),
            SAME_HOST_CONGESTION_CONTROL,
            "the sending side of the bulk direction paces nothing"
        );
        assert_eq!(
            getsockopt(&from, sockopt::TcpCongestion).unwrap(),
            from_congestion_before,
            "the receiving side keeps its congestion control"
        );
    }
}
