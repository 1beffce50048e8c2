//! [`IpvsNetlink`]: requests to the kernel's IPVS family over a
//! `NETLINK_GENERIC` socket.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use crate::error::IpvsError;

use super::attribute::Attribute;
use super::message::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_CMD_GETFAMILY, GENL_ID_CTRL, Reply, Request,
};
use super::types::{Destination, RealServer, ServiceKey, Timeouts, VirtualServer, cmd_attr};

/// `IPVS_GENL_NAME`.
const FAMILY_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
const VERSION: u8 = 1;

/// `IPVS_CMD_*`.
mod cmd {
    pub(super) const NEW_SERVICE: u8 = 1;
    pub(super) const SET_SERVICE: u8 = 2;
    pub(super) const DEL_SERVICE: u8 = 3;
    pub(super) const GET_SERVICE: u8 = 4;
    pub(super) const NEW_DEST: u8 = 5;
    pub(super) const SET_DEST: u8 = 6;
    pub(super) const DEL_DEST: u8 = 7;
    pub(super) const GET_DEST: u8 = 8;
    pub(super) const SET_CONFIG: u8 = 12;
    pub(super) const GET_CONFIG: u8 = 13;
    pub(super) const FLUSH: u8 = 17;
}

/// `ENOENT`: the controller's answer for an unknown family.
const ENOENT: i32 = 2;
/// `ESRCH`: no such virtual server.
const ESRCH: i32 = 3;

/// The IPVS table of the network namespace the socket was opened in (the
/// calling thread's at [`IpvsNetlink::open`]).
#[derive(Debug)]
pub struct IpvsNetlink {
    socket: Socket,
    family: u16,
    sequence: u32,
}

impl IpvsNetlink {
    /// Opens a socket and looks up the `IPVS` family.
    ///
    /// # Errors
    ///
    /// [`IpvsError::NoIpvs`] when the kernel has no IPVS loaded;
    /// [`IpvsError::Netlink`] when the socket cannot be opened.
    pub fn open() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|e| netlink("open", e))?;
        socket.bind_auto().map_err(|e| netlink("bind", e))?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(|e| netlink("connect", e))?;
        let mut client = IpvsNetlink {
            socket,
            family: GENL_ID_CTRL,
            sequence: 0,
        };
        let request = Request::new(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            1,
            &[Attribute::string(CTRL_ATTR_FAMILY_NAME, FAMILY_NAME)],
        );
        let replies = match client.exchange("family lookup", request, NLM_F_REQUEST | NLM_F_ACK) {
            Err(IpvsError::Netlink { source, .. }) if source.raw_os_error() == Some(ENOENT) => {
                return Err(IpvsError::NoIpvs);
            }
            other => other?,
        };
        client.family = replies
            .iter()
            .find_map(|r| r.attributes.u16(CTRL_ATTR_FAMILY_ID))
            .ok_or_else(|| {
                netlink(
                    "family lookup",
                    io::Error::new(io::ErrorKind::InvalidData, "no family id in the answer"),
                )
            })?;
        Ok(client)
    }

    /// Every virtual server (fwmark services and protocols other than
    /// TCP, UDP and SCTP are left out).
    pub fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        let replies = self.ipvs("list services", cmd::GET_SERVICE, true, &[])?;
        let mut services = Vec::new();
        for reply in replies {
            let nested = reply
                .attributes
                .nested(cmd_attr::SERVICE)
                .map_err(|e| decode("list services", e))?;
            if let Some(service) = nested.as_ref().and_then(VirtualServer::from_attributes) {
                services.push(service);
            }
        }
        Ok(services)
    }

    /// One virtual server, or `None` when the kernel has none with `key`.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Option<VirtualServer>, IpvsError> {
        let operation = format!("get service {key}");
        let attributes = [Attribute::Nested(cmd_attr::SERVICE, key.attributes())];
        let replies = match self.ipvs(&operation, cmd::GET_SERVICE, false, &attributes) {
            Err(e) if e.os_error() == Some(ESRCH) => return Ok(None),
            other => other?,
        };
        let mut found = None;
        for reply in replies {
            let nested = reply
                .attributes
                .nested(cmd_attr::SERVICE)
                .map_err(|e| decode(&operation, e))?;
            found = found.or(nested.as_ref().and_then(VirtualServer::from_attributes));
        }
        Ok(found)
    }

    /// Adds a virtual server.
    pub fn new_service(&mut self, service: &VirtualServer) -> Result<(), IpvsError> {
        let attributes = [Attribute::Nested(cmd_attr::SERVICE, service.attributes())];
        self.ipvs(
            &format!("add service {}", service.key),
            cmd::NEW_SERVICE,
            false,
            &attributes,
        )
        .map(drop)
    }

    /// Changes a virtual server's scheduler, flags, timeout and netmask.
    pub fn set_service(&mut self, service: &VirtualServer) -> Result<(), IpvsError> {
        let attributes = [Attribute::Nested(cmd_attr::SERVICE, service.attributes())];
        self.ipvs(
            &format!("update service {}", service.key),
            cmd::SET_SERVICE,
            false,
            &attributes,
        )
        .map(drop)
    }

    /// Deletes a virtual server and its real servers.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        let attributes = [Attribute::Nested(cmd_attr::SERVICE, key.attributes())];
        self.ipvs(
            &format!("delete service {key}"),
            cmd::DEL_SERVICE,
            false,
            &attributes,
        )
        .map(drop)
    }

    /// The real servers of a virtual server, with their connection counts.
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        let operation = format!("list real servers of {key}");
        let attributes = [Attribute::Nested(cmd_attr::SERVICE, key.attributes())];
        let replies = self.ipvs(&operation, cmd::GET_DEST, true, &attributes)?;
        let mut destinations = Vec::new();
        for reply in replies {
            let nested = reply
                .attributes
                .nested(cmd_attr::DEST)
                .map_err(|e| decode(&operation, e))?;
            if let Some(d) = nested.and_then(|n| Destination::from_attributes(&n, key)) {
                destinations.push(d);
            }
        }
        Ok(destinations)
    }

    /// Adds a real server to a virtual server.
    pub fn new_destination(
        &mut self,
        key: &ServiceKey,
        server: &RealServer,
    ) -> Result<(), IpvsError> {
        let operation = format!(
            "add real server {} {} to {key}",
            server.address, server.port
        );
        self.ipvs(
            &operation,
            cmd::NEW_DEST,
            false,
            &dest_attributes(key, server.attributes()),
        )
        .map(drop)
    }

    /// Changes a real server's weight, forwarding and thresholds.
    pub fn set_destination(
        &mut self,
        key: &ServiceKey,
        server: &RealServer,
    ) -> Result<(), IpvsError> {
        let operation = format!(
            "update real server {} {} of {key}",
            server.address, server.port
        );
        self.ipvs(
            &operation,
            cmd::SET_DEST,
            false,
            &dest_attributes(key, server.attributes()),
        )
        .map(drop)
    }

    /// Deletes a real server from a virtual server.
    pub fn delete_destination(
        &mut self,
        key: &ServiceKey,
        address: IpAddr,
        port: u16,
    ) -> Result<(), IpvsError> {
        let operation = format!("delete real server {address} {port} of {key}");
        let attributes = dest_attributes(key, RealServer::key_attributes(address, port));
        self.ipvs(&operation, cmd::DEL_DEST, false, &attributes)
            .map(drop)
    }

    /// Deletes every virtual server.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.ipvs("flush", cmd::FLUSH, false, &[]).map(drop)
    }

    /// The tcp, tcpfin and udp timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let replies = self.ipvs("get timeouts", cmd::GET_CONFIG, false, &[])?;
        Ok(replies
            .first()
            .map(|r| Timeouts::from_attributes(&r.attributes))
            .unwrap_or_default())
    }

    /// Sets the timeouts (a 0 leaves that one unchanged).
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        self.ipvs(
            "set timeouts",
            cmd::SET_CONFIG,
            false,
            &timeouts.attributes(),
        )
        .map(drop)
    }

    fn ipvs(
        &mut self,
        operation: &str,
        command: u8,
        dump: bool,
        attributes: &[Attribute],
    ) -> Result<Vec<Reply>, IpvsError> {
        let flags = if dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        };
        let request = Request::new(self.family, command, VERSION, attributes);
        self.exchange(operation, request, flags)
    }

    /// Sends `request` and collects the answers until the kernel is done.
    fn exchange(
        &mut self,
        operation: &str,
        request: Request,
        flags: u16,
    ) -> Result<Vec<Reply>, IpvsError> {
        self.sequence = self.sequence.wrapping_add(1);
        super::exchange::exchange(&self.socket, self.sequence, operation, request, flags)
    }
}

/// `IPVS_CMD_ATTR_SERVICE` (the service's key) and `IPVS_CMD_ATTR_DEST`.
fn dest_attributes(key: &ServiceKey, dest: Vec<Attribute>) -> [Attribute; 2] {
    [
        Attribute::Nested(cmd_attr::SERVICE, key.attributes()),
        Attribute::Nested(cmd_attr::DEST, dest),
    ]
}

use super::exchange::{decode, netlink};
