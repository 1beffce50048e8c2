//! The kernel's address notifications (rtnetlink `RTM_NEWADDR` /
//! `RTM_DELADDR`), for what must follow the host's addresses between syncs.

use std::io;

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use tokio::io::unix::AsyncFd;

/// `RTMGRP_IPV4_IFADDR`: IPv4 addresses added or removed.
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
/// `RTMGRP_IPV6_IFADDR`: IPv6 addresses added, removed or changed
/// (duplicate address detection done).
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
/// `ENOBUFS`: notifications were lost (the socket overran); what they
/// said is listed again anyway.
const ENOBUFS: i32 = 105;

/// Calls `on_change` after each burst of address notifications of the
/// network namespace the socket is opened in (the calling thread's), until
/// it returns `false` (then `Ok`) or the socket fails. The messages are not
/// parsed: the caller lists the addresses again.
pub(crate) async fn watch_address_changes(mut on_change: impl FnMut() -> bool) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&NetlinkAddr::new(
        0,
        RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
    ))?;
    socket.set_non_blocking(true)?;
    // `AsyncFd::register` is the non-deprecated spelling but `unsafe`; the
    // soundness concern (the descriptor closed while registered) cannot
    // arise here: the AsyncFd owns the socket until both are dropped.
    #[allow(deprecated)]
    let socket = AsyncFd::new(socket)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut ready = socket.readable().await?;
        loop {
            match ready.get_inner().recv(&mut &mut buffer[..], 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    break;
                }
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {}
                Err(e) => return Err(e),
            }
        }
        if !on_change() {
            return Ok(());
        }
    }
}
