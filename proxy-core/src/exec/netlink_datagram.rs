//! Reading one netlink datagram with a buffer as large as the kernel's
//! dump datagrams may be.
//!
//! The kernel sizes each datagram of a dump after the largest buffer the
//! socket has read with (capped at 32 KiB), and a dump of nf_tables chains
//! or IPVS services walks its list from the first object again for every
//! datagram. `netlink_sys::Socket::recv_from_full` peeks with an empty
//! buffer and then reads exactly the datagram's size, so every datagram of
//! a dump stays at one page: beside 330,000 chains (30k Services × 10
//! endpoints in iptables mode) a chain-name dump took 28.6 s of kernel
//! time, one full list walk per 4 KiB. Reading with [`RECEIVE_BUFFER`]
//! lets the kernel fill 32 KiB per walk.

use std::io;

use netlink_sys::Socket;

/// The buffer each datagram is read with: above the kernel's 32 KiB cap on
/// dump datagrams, so a dump never needs a second read per datagram.
pub const RECEIVE_BUFFER: usize = 64 * 1024;

/// `MSG_PEEK` (Linux).
const MSG_PEEK: i32 = 0x2;
/// `MSG_TRUNC` (Linux): return the datagram's real length.
const MSG_TRUNC: i32 = 0x20;

/// Reads the next datagram of `socket` into `buffer` (replacing its
/// contents), whatever its size: peeked with a [`RECEIVE_BUFFER`]-sized
/// buffer (which makes the kernel build large dump datagrams), then
/// consumed; a larger datagram is read again whole.
pub fn recv_datagram(socket: &Socket, buffer: &mut Vec<u8>) -> io::Result<()> {
    buffer.clear();
    buffer.reserve(RECEIVE_BUFFER);
    let (length, _) = socket.recv_from(buffer, MSG_PEEK | MSG_TRUNC)?;
    if length <= buffer.len() {
        // The datagram is in `buffer`: drop it from the socket.
        let mut sink: &mut [u8] = &mut [];
        socket.recv(&mut sink, MSG_TRUNC)?;
        return Ok(());
    }
    buffer.clear();
    buffer.reserve(length);
    let (read, _) = socket.recv_from(buffer, 0)?;
    if read != length {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("netlink datagram of {length} bytes read as {read}"),
        ));
    }
    Ok(())
}
