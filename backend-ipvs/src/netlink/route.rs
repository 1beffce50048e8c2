//! [`RouteNetlink`]: the links and addresses the IPVS mode needs
//! (`kube-ipvs0` and the addresses bound to it, the node's addresses), over
//! a `NETLINK_ROUTE` socket with `netlink-packet-route`'s message types.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use crate::error::IpvsError;

use super::exchange::{exchange, netlink};

/// `ENODEV`: no such link.
const ENODEV: i32 = 19;
/// `EEXIST`: the link or address exists already.
const EEXIST: i32 = 17;
/// `EADDRNOTAVAIL`: no such address on the link.
const EADDRNOTAVAIL: i32 = 99;

/// An address of a link, as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddress {
    /// The link's index.
    pub index: u32,
    /// The address (`IFA_LOCAL`, else `IFA_ADDRESS`).
    pub address: IpAddr,
}

/// Links and addresses of the network namespace the socket was opened in
/// (the calling thread's at [`RouteNetlink::open`]).
#[derive(Debug)]
pub struct RouteNetlink {
    socket: Socket,
    sequence: u32,
}

impl RouteNetlink {
    /// Opens the socket.
    ///
    /// # Errors
    ///
    /// [`IpvsError::Netlink`] when it cannot be opened.
    pub fn open() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| netlink("open rtnetlink", e))?;
        socket
            .bind_auto()
            .map_err(|e| netlink("bind rtnetlink", e))?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(|e| netlink("connect rtnetlink", e))?;
        Ok(RouteNetlink {
            socket,
            sequence: 0,
        })
    }

    fn request(
        &mut self,
        operation: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, IpvsError> {
        self.sequence = self.sequence.wrapping_add(1);
        exchange(&self.socket, self.sequence, operation, message, flags)
    }

    /// The index of the link called `name`, or `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, IpvsError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let operation = format!("get link {name}");
        let replies = match self.request(
            &operation,
            RouteNetlinkMessage::GetLink(message),
            // the acknowledgement ends the answer (a get sends no DONE)
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Err(e) if e.os_error() == Some(ENODEV) => return Ok(None),
            other => other?,
        };
        Ok(replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
            _ => None,
        }))
    }

    /// Creates a dummy link called `name` (left down) and returns its
    /// index; one that exists already (made meanwhile by someone else) is
    /// taken as it is.
    pub fn ensure_dummy(&mut self, name: &str) -> Result<u32, IpvsError> {
        if let Some(index) = self.link_index(name)? {
            return Ok(index);
        }
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        let operation = format!("add dummy link {name}");
        match self.request(
            &operation,
            RouteNetlinkMessage::NewLink(message),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.os_error() == Some(EEXIST) => {}
            other => drop(other?),
        }
        self.link_index(name)?.ok_or_else(|| {
            netlink(
                &operation,
                std::io::Error::other("the link is gone right after it was made"),
            )
        })
    }

    /// Every address of every link.
    pub fn addresses(&mut self) -> Result<Vec<LinkAddress>, IpvsError> {
        let replies = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut addresses = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(message) = reply else {
                continue;
            };
            let mut local = None;
            let mut address = None;
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(address) = local.or(address) {
                addresses.push(LinkAddress {
                    index: message.header.index,
                    address,
                });
            }
        }
        Ok(addresses)
    }

    /// Binds `address` as a host address (/32, /128) to link `index`; IPv6
    /// without duplicate address detection (a tentative address is not
    /// local yet). An address bound already is left as it is.
    pub fn add_address(&mut self, index: u32, address: IpAddr) -> Result<(), IpvsError> {
        let operation = format!("add address {address} to link {index}");
        match self.request(
            &operation,
            RouteNetlinkMessage::NewAddress(host_address(index, address)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.os_error() == Some(EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Unbinds `address` from link `index`; one already gone is not an
    /// error.
    pub fn delete_address(&mut self, index: u32, address: IpAddr) -> Result<(), IpvsError> {
        let operation = format!("delete address {address} from link {index}");
        match self.request(
            &operation,
            RouteNetlinkMessage::DelAddress(host_address(index, address)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Err(e) if e.os_error() == Some(EADDRNOTAVAIL) => Ok(()),
            other => other.map(drop),
        }
    }
}

/// The message of `address` as a host address of link `index`.
fn host_address(index: u32, address: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.scope = AddressScope::Universe;
    match address {
        IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 32;
        }
        IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message.header.prefix_len = 128;
            message.header.flags = AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    message.attributes.push(AddressAttribute::Local(address));
    message.attributes.push(AddressAttribute::Address(address));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_are_full_length_and_ipv6_ones_skip_dad() {
        let v4 = host_address(7, "10.96.0.10".parse().unwrap());
        assert_eq!(v4.header.index, 7);
        assert_eq!(v4.header.family, AddressFamily::Inet);
        assert_eq!(v4.header.prefix_len, 32);
        assert!(
            v4.attributes
                .contains(&AddressAttribute::Local("10.96.0.10".parse().unwrap()))
        );
        let v6 = host_address(7, "fd00::a".parse().unwrap());
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert_eq!(v6.header.prefix_len, 128);
        assert!(
            v6.attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
    }
}
