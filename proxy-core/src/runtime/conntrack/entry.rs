//! [`ConntrackEntry`]: one connection-tracking entry, as much of it as the
//! cleanup needs.

use std::fmt;
use std::net::SocketAddr;

/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// One direction of a tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

/// A conntrack entry: protocol, original and reply tuples.
///
/// For a DNATed service flow, `original.dst` is the service address
/// (`clusterIP:port`, `nodeIP:nodePort`, …) and `reply.src` the endpoint
/// that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConntrackEntry {
    /// The layer-4 protocol number ([`IPPROTO_UDP`], …).
    pub protocol: u8,
    /// The original direction (`--orig-*`).
    pub original: FlowTuple,
    /// The reply direction (`--reply-*`).
    pub reply: FlowTuple,
}

impl ConntrackEntry {
    /// A UDP entry.
    pub fn udp(original: FlowTuple, reply: FlowTuple) -> Self {
        ConntrackEntry {
            protocol: IPPROTO_UDP,
            original,
            reply,
        }
    }
}

impl fmt::Display for ConntrackEntry {
    /// `conntrack -L`-like: `udp src=… dst=… sport=… dport=… src=… dst=… sport=… dport=…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            IPPROTO_UDP => "udp".to_string(),
            IPPROTO_TCP => "tcp".to_string(),
            IPPROTO_SCTP => "sctp".to_string(),
            n => n.to_string(),
        };
        let (o, r) = (self.original, self.reply);
        write!(
            f,
            "{proto} src={} dst={} sport={} dport={} src={} dst={} sport={} dport={}",
            o.src.ip(),
            o.dst.ip(),
            o.src.port(),
            o.dst.port(),
            r.src.ip(),
            r.dst.ip(),
            r.src.port(),
            r.dst.port()
        )
    }
}
