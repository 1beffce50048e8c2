//! SCTP sockets for the echo servers and the probes, without `unsafe`.
//!
//! std and tokio have no SCTP type, but a one-to-one SCTP socket
//! (`SOCK_STREAM`, `IPPROTO_SCTP`, RFC 6458 §4) takes the same calls as a
//! TCP one: `bind`, `listen`, `accept`, `connect`, `read`, `write`,
//! `shutdown` (a graceful SHUTDOWN). So the socket is made with
//! [`nix::sys::socket::socket`] and then driven through tokio's TCP types,
//! which only issue those calls on the descriptor.
//!
//! Kernels without SCTP (no `CONFIG_IP_SCTP`, or a module that cannot be
//! loaded) answer `socket()` with `EPROTONOSUPPORT`: [`kernel_has_sctp`]
//! tells, and the harness then skips SCTP scenarios with
//! [`NO_SCTP_REASON`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockProtocol, SockType, SockaddrStorage, bind, listen, socket,
};

use crate::conformance::{Report, ScenarioStatus};

/// Why SCTP scenarios are skipped on a kernel without SCTP.
pub const NO_SCTP_REASON: &str = "kernel has no SCTP (run in the VM tier)";

/// Whether this kernel makes SCTP sockets (the module may be loaded on
/// demand by this first socket).
pub fn kernel_has_sctp() -> bool {
    match sctp_socket(AddressFamily::Inet) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "no SCTP socket");
            false
        }
    }
}

/// Asserts what a kernel-tier report may skip: only the SCTP scenario
/// (`clusterip-sctp`), only with [`NO_SCTP_REASON`], and only on a kernel
/// without SCTP (it runs in the IPVS VM tier,
/// `backend-ipvs/tests/ipvs_vm/guest_sctp.rs`).
///
/// # Panics
///
/// On any other skip, with the report.
#[track_caller]
pub fn assert_only_missing_sctp_skipped(report: &Report) {
    for skipped in report.skipped() {
        assert_eq!(skipped.name, "clusterip-sctp", "{report}");
        assert!(!kernel_has_sctp(), "{report}");
        assert_eq!(
            skipped.status,
            ScenarioStatus::Skipped(NO_SCTP_REASON.into()),
            "{report}"
        );
    }
}

fn sctp_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    Ok(socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Sctp,
    )?)
}

fn family_of(addr: SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A non-blocking SCTP socket of `addr`'s family bound to `addr`.
fn bound(addr: SocketAddr) -> io::Result<OwnedFd> {
    let fd = sctp_socket(family_of(addr))?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    Ok(fd)
}

/// A listening SCTP socket on `addr`, non-blocking, as a std listener
/// (one-to-one style: `accept` gives one association per connection).
pub(crate) fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let fd = bound(addr)?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

/// An SCTP socket bound to `source`, ready for
/// tokio's `connect`.
pub(crate) fn client(source: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let fd = bound(source)?;
    Ok(tokio::net::TcpSocket::from_std_stream(
        std::net::TcpStream::from(fd),
    ))
}
