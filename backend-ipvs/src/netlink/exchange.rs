//! One netlink request and its answers, for any message family (the IPVS
//! generic-netlink client and the rtnetlink one share it).

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_sys::Socket;
use proxy_core::exec::netlink_datagram::recv_datagram;

use crate::error::IpvsError;

/// Sends `request` with `flags` and `sequence` on `socket` and collects the
/// answers until the kernel is done: `NLMSG_DONE` for a dump, the
/// acknowledgement (or the error) otherwise. Answers to other sequence
/// numbers are skipped.
pub(crate) fn exchange<Req, Rep>(
    socket: &Socket,
    sequence: u32,
    operation: &str,
    request: Req,
    flags: u16,
) -> Result<Vec<Rep>, IpvsError>
where
    Req: NetlinkSerializable,
    Rep: NetlinkDeserializable,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    packet.finalize();
    let mut buffer = vec![0; packet.buffer_len()];
    packet.serialize(&mut buffer);
    socket.send(&buffer, 0).map_err(|e| netlink(operation, e))?;
    let mut replies = Vec::new();
    let mut datagram = Vec::new();
    loop {
        recv_datagram(socket, &mut datagram).map_err(|e| netlink(operation, e))?;
        let mut offset = 0;
        while offset < datagram.len() {
            let bytes = &datagram[offset..];
            let length = NetlinkBuffer::new_checked(bytes)
                .map_err(|e| decode(operation, e))?
                .length() as usize;
            let message =
                NetlinkMessage::<Rep>::deserialize(bytes).map_err(|e| decode(operation, e))?;
            offset += length.max(1).next_multiple_of(4);
            if message.header.sequence_number != sequence {
                continue;
            }
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(error) => {
                    return match error.code {
                        None => Ok(replies),
                        Some(_) => Err(netlink(operation, error.to_io())),
                    };
                }
                NetlinkPayload::InnerMessage(reply) => replies.push(reply),
                _ => {}
            }
        }
    }
}

/// A failed request: what was asked and the kernel's (or the socket's)
/// error.
pub(crate) fn netlink(operation: &str, source: io::Error) -> IpvsError {
    IpvsError::Netlink {
        operation: operation.to_string(),
        source,
    }
}

/// An answer that could not be decoded.
pub(crate) fn decode(operation: &str, error: netlink_packet_core::DecodeError) -> IpvsError {
    netlink(
        operation,
        io::Error::new(io::ErrorKind::InvalidData, error.to_string()),
    )
}
