//! [`NetlinkConntrack`]: the kernel's conntrack table over
//! `NETLINK_NETFILTER` (dump, then delete one entry per original tuple; a
//! delete without a tuple would flush the whole table).

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use crate::exec::netlink_datagram::recv_datagram;
use crate::model::IpFamily;

use super::entry::{ConntrackEntry, FlowTuple};
use super::table::ConntrackTable;

/// `ENOENT`: the entry to delete is already gone.
const ENOENT: i32 = 2;

/// The conntrack table of the network namespace the socket was opened in
/// (the namespace of the thread that first used this value).
#[derive(Debug, Default)]
pub struct NetlinkConntrack {
    socket: Option<Socket>,
    sequence: u32,
}

impl NetlinkConntrack {
    /// A table whose socket is opened on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn socket(&mut self) -> io::Result<&Socket> {
        if self.socket.is_none() {
            let mut socket = Socket::new(NETLINK_NETFILTER)?;
            socket.bind_auto()?;
            socket.connect(&NetlinkAddr::new(0, 0))?;
            self.socket = Some(socket);
        }
        self.socket
            .as_ref()
            .ok_or_else(|| io::Error::other("netlink socket missing"))
    }

    /// Sends `message` and collects the answers until the kernel is done:
    /// `NLMSG_DONE` for a dump, the acknowledgement otherwise.
    fn request(
        &mut self,
        family: IpFamily,
        flags: u16,
        message: ConntrackMessage,
    ) -> io::Result<Vec<ConntrackMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = sequence;
        let nf_family = match family {
            IpFamily::V4 => NetfilterProtoFamily::IPv4,
            IpFamily::V6 => NetfilterProtoFamily::IPv6,
        };
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(nf_family, 0, 0),
                message,
            )),
        );
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);

        let socket = self.socket()?;
        socket.send(&buffer, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        let mut datagram = Vec::new();
        loop {
            recv_datagram(socket, &mut datagram)?;
            let mut offset = 0;
            while offset < datagram.len() {
                let bytes = &datagram[offset..];
                let length = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                    .length() as usize;
                let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                offset += length.max(1).next_multiple_of(4);
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(answers),
                            Some(code) if !dump && code.get().abs() == ENOENT => Ok(answers),
                            Some(_) => Err(error.to_io()),
                        };
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ct),
                        ..
                    }) => answers.push(ct),
                    _ => {}
                }
            }
        }
    }
}

impl ConntrackTable for NetlinkConntrack {
    fn list(&mut self, family: IpFamily) -> io::Result<Vec<ConntrackEntry>> {
        let answers = self.request(
            family,
            NLM_F_REQUEST | NLM_F_DUMP,
            ConntrackMessage::Get(vec![]),
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                ConntrackMessage::New(attributes) => parse_entry(attributes),
                _ => None,
            })
            .collect())
    }

    fn delete(&mut self, entry: &ConntrackEntry) -> io::Result<()> {
        let o = entry.original;
        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(o.src.ip()),
                IPTuple::DestinationAddress(o.dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::from(entry.protocol)),
                ProtoTuple::SourcePort(o.src.port()),
                ProtoTuple::DestinationPort(o.dst.port()),
            ]),
        ];
        let family = IpFamily::of(&o.src.ip());
        self.request(
            family,
            NLM_F_REQUEST | NLM_F_ACK,
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
        )?;
        Ok(())
    }
}

/// Protocol and addresses of one tuple attribute.
fn parse_tuple(tuple: &[Tuple]) -> Option<(u8, FlowTuple)> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) =
        (None::<IpAddr>, None::<IpAddr>, None, 0, 0);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = *p,
                        ProtoTuple::DestinationPort(p) => dport = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        protocol?,
        FlowTuple {
            src: SocketAddr::new(src?, sport),
            dst: SocketAddr::new(dst?, dport),
        },
    ))
}

/// An entry from the attributes of a dumped `IPCTNL_MSG_CT_NEW`.
fn parse_entry(attributes: &[ConntrackAttribute]) -> Option<ConntrackEntry> {
    let (mut original, mut reply) = (None, None);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => original = parse_tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = parse_tuple(t),
            _ => {}
        }
    }
    let (protocol, original) = original?;
    let (_, reply) = reply?;
    Some(ConntrackEntry {
        protocol,
        original,
        reply,
    })
}
