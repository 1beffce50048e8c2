//! Moving bytes between an accepted client connection and its endpoint.

#[cfg(all(feature = "splice", any(target_os = "linux", target_os = "android")))]
mod buffers;
mod copy;
#[cfg(all(feature = "splice", any(target_os = "linux", target_os = "android")))]
mod splice;

use tokio::net::TcpStream;

/// How TCP payload is moved between the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// `splice(2)` through a pipe for bulk data, which then never enters
    /// user space; reads under 16 KiB (requests, responses) are copied
    /// through a small buffer, which takes fewer system calls. Linux only,
    /// with the crate feature `splice` (on by default); elsewhere it falls
    /// back to [`Forwarding::Copy`].
    Splice,
    /// `tokio::io::copy_bidirectional` with buffers of the given size.
    Copy {
        /// Bytes per direction.
        buffer: usize,
    },
}

impl Forwarding {
    /// Copy buffer per direction: large enough that a bulk transfer needs
    /// few system calls, small enough for thousands of connections.
    pub const DEFAULT_COPY_BUFFER: usize = 64 * 1024;

    /// Whether [`Forwarding::Splice`] is compiled in.
    pub const fn splice_available() -> bool {
        cfg!(all(
            feature = "splice",
            any(target_os = "linux", target_os = "android")
        ))
    }

    /// The fastest forwarding this build supports.
    pub const fn best() -> Self {
        if Self::splice_available() {
            Forwarding::Splice
        } else {
            Forwarding::Copy {
                buffer: Self::DEFAULT_COPY_BUFFER,
            }
        }
    }
}

impl Default for Forwarding {
    fn default() -> Self {
        Self::best()
    }
}

/// Forwards both directions until both sides have closed, propagating
/// half-closes. Returns the bytes moved client→endpoint and endpoint→client.
/// `same_host`: both the client and the endpoint are on this host, so a
/// bulk direction may bound its socket buffers (the splice path does; see
/// `forward/buffers.rs`).
pub async fn forward(
    client: TcpStream,
    endpoint: TcpStream,
    how: Forwarding,
    same_host: bool,
) -> std::io::Result<(u64, u64)> {
    match how {
        #[cfg(all(feature = "splice", any(target_os = "linux", target_os = "android")))]
        Forwarding::Splice => splice::bidirectional(client, endpoint, same_host).await,
        #[cfg(not(all(feature = "splice", any(target_os = "linux", target_os = "android"))))]
        Forwarding::Splice => {
            let _ = same_host;
            copy::bidirectional(client, endpoint, Forwarding::DEFAULT_COPY_BUFFER).await
        }
        Forwarding::Copy { buffer } => copy::bidirectional(client, endpoint, buffer).await,
    }
}
