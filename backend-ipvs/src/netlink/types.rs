//! What the IPVS family speaks about: virtual servers (services), real
//! servers (destinations), and the connection timeouts; each with its
//! attributes (`IPVS_SVC_ATTR_*`, `IPVS_DEST_ATTR_*`, `IPVS_CMD_ATTR_*`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::attribute::{Attribute, Attributes};

/// `AF_INET`.
const AF_INET: u16 = 2;
/// `AF_INET6`.
const AF_INET6: u16 = 10;

/// `IPVS_SVC_ATTR_*`.
pub(crate) mod svc {
    pub(crate) const AF: u16 = 1;
    pub(crate) const PROTOCOL: u16 = 2;
    pub(crate) const ADDR: u16 = 3;
    pub(crate) const PORT: u16 = 4;
    pub(crate) const FWMARK: u16 = 5;
    pub(crate) const SCHED_NAME: u16 = 6;
    pub(crate) const FLAGS: u16 = 7;
    pub(crate) const TIMEOUT: u16 = 8;
    pub(crate) const NETMASK: u16 = 9;
}

/// `IPVS_DEST_ATTR_*`.
pub(crate) mod dest {
    pub(crate) const ADDR: u16 = 1;
    pub(crate) const PORT: u16 = 2;
    pub(crate) const FWD_METHOD: u16 = 3;
    pub(crate) const WEIGHT: u16 = 4;
    pub(crate) const U_THRESH: u16 = 5;
    pub(crate) const L_THRESH: u16 = 6;
    pub(crate) const ACTIVE_CONNS: u16 = 7;
    pub(crate) const INACT_CONNS: u16 = 8;
    pub(crate) const PERSIST_CONNS: u16 = 9;
    pub(crate) const ADDR_FAMILY: u16 = 11;
}

/// `IPVS_CMD_ATTR_*`.
pub(crate) mod cmd_attr {
    pub(crate) const SERVICE: u16 = 1;
    pub(crate) const DEST: u16 = 2;
    pub(crate) const TIMEOUT_TCP: u16 = 4;
    pub(crate) const TIMEOUT_TCP_FIN: u16 = 5;
    pub(crate) const TIMEOUT_UDP: u16 = 6;
}

/// The transport protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpvsProtocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl IpvsProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u16 {
        match self {
            IpvsProtocol::Tcp => 6,
            IpvsProtocol::Udp => 17,
            IpvsProtocol::Sctp => 132,
        }
    }

    /// The protocol of an IP protocol number, if IPVS mode uses it.
    pub fn from_number(number: u16) -> Option<Self> {
        match number {
            6 => Some(IpvsProtocol::Tcp),
            17 => Some(IpvsProtocol::Udp),
            132 => Some(IpvsProtocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for IpvsProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpvsProtocol::Tcp => "TCP",
            IpvsProtocol::Udp => "UDP",
            IpvsProtocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a virtual server: address, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The virtual address.
    pub address: IpAddr,
    /// The protocol.
    pub protocol: IpvsProtocol,
    /// The port.
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{} {a}:{}", self.protocol, self.port),
            IpAddr::V6(a) => write!(f, "{} [{a}]:{}", self.protocol, self.port),
        }
    }
}

/// `IP_VS_SVC_F_*` flags of a virtual server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    /// `IP_VS_SVC_F_PERSISTENT`: client affinity for `timeout` seconds.
    pub const PERSISTENT: ServiceFlags = ServiceFlags(0x0001);
    /// `IP_VS_SVC_F_HASHED`: set by the kernel on every listed service.
    pub const HASHED: ServiceFlags = ServiceFlags(0x0002);
    /// `IP_VS_SVC_F_ONEPACKET`.
    pub const ONE_PACKET: ServiceFlags = ServiceFlags(0x0004);
    /// `IP_VS_SVC_F_SCHED1` (`sh-fallback`, `mh-fallback`).
    pub const SCHED1: ServiceFlags = ServiceFlags(0x0008);
    /// `IP_VS_SVC_F_SCHED2` (`sh-port`, `mh-port`).
    pub const SCHED2: ServiceFlags = ServiceFlags(0x0010);
    /// `IP_VS_SVC_F_SCHED3`.
    pub const SCHED3: ServiceFlags = ServiceFlags(0x0020);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags without the kernel's own `HASHED` bit.
    pub fn settable(self) -> ServiceFlags {
        ServiceFlags(self.0 & !ServiceFlags::HASHED.0)
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = ServiceFlags;
    fn bitor(self, other: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | other.0)
    }
}

/// A virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualServer {
    /// Address, protocol and port.
    pub key: ServiceKey,
    /// The scheduler (`rr`, `wrr`, `lc`, `wlc`, `sh`, `mh`, …).
    pub scheduler: String,
    /// Flags; [`ServiceFlags::PERSISTENT`] for ClientIP affinity.
    pub flags: ServiceFlags,
    /// The persistence timeout in seconds (used with `PERSISTENT`).
    pub timeout: u32,
    /// The persistence netmask: `0xffff_ffff` for IPv4, `128` (a prefix
    /// length) for IPv6.
    pub netmask: u32,
}

impl VirtualServer {
    /// A service without persistence, with the full netmask of its family.
    pub fn new(key: ServiceKey, scheduler: &str) -> Self {
        VirtualServer {
            key,
            scheduler: scheduler.to_string(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask: full_netmask(key.address),
        }
    }

    /// With ClientIP persistence of `seconds`.
    pub fn persistent(mut self, seconds: u32) -> Self {
        self.flags = self.flags | ServiceFlags::PERSISTENT;
        self.timeout = seconds;
        self
    }

    /// Every attribute of the service (`IPVS_CMD_ATTR_SERVICE`'s content).
    pub(crate) fn attributes(&self) -> Vec<Attribute> {
        let mut attributes = self.key.attributes();
        attributes.extend([
            Attribute::string(svc::SCHED_NAME, &self.scheduler),
            // struct ip_vs_flags { flags, mask }: set exactly these
            Attribute::Bytes(
                svc::FLAGS,
                [
                    self.flags.settable().0.to_ne_bytes(),
                    u32::MAX.to_ne_bytes(),
                ]
                .concat(),
            ),
            Attribute::u32(svc::TIMEOUT, self.timeout),
            Attribute::u32(svc::NETMASK, self.netmask),
        ]);
        attributes
    }

    /// The service of a listed `IPVS_CMD_ATTR_SERVICE`; `None` for
    /// fwmark services and protocols kube-proxy does not use.
    pub(crate) fn from_attributes(attributes: &Attributes) -> Option<Self> {
        let key = ServiceKey::from_attributes(attributes)?;
        let flags = attributes
            .get(svc::FLAGS)
            .and_then(|b| b.get(..4)?.try_into().ok())
            .map_or(0, u32::from_ne_bytes);
        Some(VirtualServer {
            key,
            scheduler: attributes.string(svc::SCHED_NAME).unwrap_or_default(),
            flags: ServiceFlags(flags),
            timeout: attributes.u32(svc::TIMEOUT).unwrap_or(0),
            netmask: attributes.u32(svc::NETMASK).unwrap_or(0),
        })
    }
}

/// The netmask IPVS wants for a service of `address`'s family.
fn full_netmask(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(_) => u32::MAX,
        IpAddr::V6(_) => 128,
    }
}

impl ServiceKey {
    /// The attributes that identify the service (family, protocol,
    /// address, port).
    pub(crate) fn attributes(&self) -> Vec<Attribute> {
        vec![
            Attribute::u16(svc::AF, family(self.address)),
            Attribute::u16(svc::PROTOCOL, self.protocol.number()),
            Attribute::Bytes(svc::ADDR, address_bytes(self.address)),
            Attribute::be16(svc::PORT, self.port),
        ]
    }

    fn from_attributes(attributes: &Attributes) -> Option<Self> {
        if attributes.u32(svc::FWMARK).is_some_and(|m| m != 0) {
            return None;
        }
        Some(ServiceKey {
            address: parse_address(attributes.u16(svc::AF)?, attributes.get(svc::ADDR)?)?,
            protocol: IpvsProtocol::from_number(attributes.u16(svc::PROTOCOL)?)?,
            port: attributes.be16(svc::PORT)?,
        })
    }
}

/// How IPVS forwards to a real server (`IP_VS_CONN_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Forwarding {
    /// Masquerading (NAT): what kube-proxy uses.
    Masquerade,
    /// The real server is this host.
    Local,
    /// IP-in-IP tunnel.
    Tunnel,
    /// Direct routing.
    DirectRoute,
}

impl Forwarding {
    fn code(self) -> u32 {
        match self {
            Forwarding::Masquerade => 0,
            Forwarding::Local => 1,
            Forwarding::Tunnel => 2,
            Forwarding::DirectRoute => 3,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code & 0x7 {
            0 => Some(Forwarding::Masquerade),
            1 => Some(Forwarding::Local),
            2 => Some(Forwarding::Tunnel),
            3 => Some(Forwarding::DirectRoute),
            _ => None,
        }
    }
}

/// A real server of a virtual server, as it is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    /// The address (its family may differ from the service's).
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// The forwarding method.
    pub forwarding: Forwarding,
    /// The weight; 0 takes no new connections (graceful termination).
    pub weight: u32,
    /// Upper connection threshold (0: none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0: none).
    pub lower_threshold: u32,
}

impl RealServer {
    /// A masquerading real server of weight 1, without thresholds.
    pub fn masquerade(address: IpAddr, port: u16) -> Self {
        RealServer {
            address,
            port,
            forwarding: Forwarding::Masquerade,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    /// With `weight`.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Every attribute (`IPVS_CMD_ATTR_DEST`'s content).
    pub(crate) fn attributes(&self) -> Vec<Attribute> {
        vec![
            Attribute::u16(dest::ADDR_FAMILY, family(self.address)),
            Attribute::Bytes(dest::ADDR, address_bytes(self.address)),
            Attribute::be16(dest::PORT, self.port),
            Attribute::u32(dest::FWD_METHOD, self.forwarding.code()),
            Attribute::u32(dest::WEIGHT, self.weight),
            Attribute::u32(dest::U_THRESH, self.upper_threshold),
            Attribute::u32(dest::L_THRESH, self.lower_threshold),
        ]
    }

    /// The attributes that identify the real server (for a delete).
    pub(crate) fn key_attributes(address: IpAddr, port: u16) -> Vec<Attribute> {
        vec![
            Attribute::u16(dest::ADDR_FAMILY, family(address)),
            Attribute::Bytes(dest::ADDR, address_bytes(address)),
            Attribute::be16(dest::PORT, port),
        ]
    }
}

/// A listed real server: its configuration and its connection counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    /// The configuration.
    pub server: RealServer,
    /// Connections in an active state (TCP established, …).
    pub active_connections: u32,
    /// Other connections (TIME_WAIT, UDP, …).
    pub inactive_connections: u32,
    /// Persistence templates pointing at it.
    pub persistent_connections: u32,
}

impl Destination {
    /// The destination of a listed `IPVS_CMD_ATTR_DEST`, given the
    /// service's address (for kernels that send no address family).
    pub(crate) fn from_attributes(attributes: &Attributes, service: &ServiceKey) -> Option<Self> {
        let af = attributes
            .u16(dest::ADDR_FAMILY)
            .unwrap_or_else(|| family(service.address));
        Some(Destination {
            server: RealServer {
                address: parse_address(af, attributes.get(dest::ADDR)?)?,
                port: attributes.be16(dest::PORT)?,
                forwarding: Forwarding::from_code(attributes.u32(dest::FWD_METHOD)?)?,
                weight: attributes.u32(dest::WEIGHT).unwrap_or(0),
                upper_threshold: attributes.u32(dest::U_THRESH).unwrap_or(0),
                lower_threshold: attributes.u32(dest::L_THRESH).unwrap_or(0),
            },
            active_connections: attributes.u32(dest::ACTIVE_CONNS).unwrap_or(0),
            inactive_connections: attributes.u32(dest::INACT_CONNS).unwrap_or(0),
            persistent_connections: attributes.u32(dest::PERSIST_CONNS).unwrap_or(0),
        })
    }
}

/// IPVS's connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`);
/// 0 in a set request leaves that timeout unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after a FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

impl Timeouts {
    pub(crate) fn attributes(&self) -> Vec<Attribute> {
        vec![
            Attribute::u32(cmd_attr::TIMEOUT_TCP, self.tcp),
            Attribute::u32(cmd_attr::TIMEOUT_TCP_FIN, self.tcp_fin),
            Attribute::u32(cmd_attr::TIMEOUT_UDP, self.udp),
        ]
    }

    pub(crate) fn from_attributes(attributes: &Attributes) -> Self {
        Timeouts {
            tcp: attributes.u32(cmd_attr::TIMEOUT_TCP).unwrap_or(0),
            tcp_fin: attributes.u32(cmd_attr::TIMEOUT_TCP_FIN).unwrap_or(0),
            udp: attributes.u32(cmd_attr::TIMEOUT_UDP).unwrap_or(0),
        }
    }
}

fn family(address: IpAddr) -> u16 {
    match address {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first 4.
fn address_bytes(address: IpAddr) -> Vec<u8> {
    let mut bytes = vec![0; 16];
    match address {
        IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => bytes.copy_from_slice(&a.octets()),
    }
    bytes
}

fn parse_address(af: u16, bytes: &[u8]) -> Option<IpAddr> {
    match af {
        AF_INET => {
            let octets: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        AF_INET6 => {
            let octets: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::attribute::emit;
    use super::*;

    fn decode(attributes: &[Attribute]) -> Attributes {
        Attributes::parse(&emit(attributes)).unwrap()
    }

    fn key(address: &str, protocol: IpvsProtocol, port: u16) -> ServiceKey {
        ServiceKey {
            address: address.parse().unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn services_round_trip_for_both_families_and_every_protocol() {
        for service in [
            VirtualServer::new(key("10.96.0.10", IpvsProtocol::Tcp, 80), "rr"),
            VirtualServer::new(key("fd00::a", IpvsProtocol::Udp, 53), "wrr").persistent(10800),
            VirtualServer::new(key("10.96.0.11", IpvsProtocol::Sctp, 9000), "sh"),
        ] {
            let decoded = VirtualServer::from_attributes(&decode(&service.attributes()));
            assert_eq!(decoded.as_ref(), Some(&service));
        }
    }

    #[test]
    fn the_service_encoding_is_the_kernels_layout() {
        let service =
            VirtualServer::new(key("10.96.0.10", IpvsProtocol::Tcp, 80), "rr").persistent(300);
        let attributes = decode(&service.attributes());
        assert_eq!(attributes.u16(svc::AF), Some(AF_INET));
        assert_eq!(attributes.u16(svc::PROTOCOL), Some(6));
        assert_eq!(
            attributes.get(svc::ADDR),
            Some(&[10, 96, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..])
        );
        assert_eq!(
            attributes.get(svc::PORT),
            Some(&[0, 80][..]),
            "network byte order"
        );
        assert_eq!(attributes.string(svc::SCHED_NAME).as_deref(), Some("rr"));
        let flags = attributes.get(svc::FLAGS).unwrap();
        assert_eq!(flags[..4], 1_u32.to_ne_bytes(), "persistent");
        assert_eq!(flags[4..], u32::MAX.to_ne_bytes(), "mask: every flag");
        assert_eq!(attributes.u32(svc::TIMEOUT), Some(300));
        assert_eq!(attributes.u32(svc::NETMASK), Some(u32::MAX));
        let v6 = VirtualServer::new(key("fd00::1", IpvsProtocol::Tcp, 80), "rr");
        assert_eq!(v6.netmask, 128);
    }

    #[test]
    fn the_kernels_hashed_flag_is_never_sent() {
        let mut service = VirtualServer::new(key("10.96.0.10", IpvsProtocol::Tcp, 80), "rr");
        service.flags = ServiceFlags::HASHED | ServiceFlags::PERSISTENT;
        let attributes = decode(&service.attributes());
        assert_eq!(
            attributes.get(svc::FLAGS).unwrap()[..4],
            1_u32.to_ne_bytes()
        );
    }

    #[test]
    fn fwmark_services_and_unknown_protocols_are_not_ours() {
        let mut attributes =
            VirtualServer::new(key("10.96.0.10", IpvsProtocol::Tcp, 80), "rr").attributes();
        attributes.push(Attribute::u32(svc::FWMARK, 7));
        assert_eq!(VirtualServer::from_attributes(&decode(&attributes)), None);
        let icmp = decode(&[
            Attribute::u16(svc::AF, AF_INET),
            Attribute::u16(svc::PROTOCOL, 1),
            Attribute::Bytes(svc::ADDR, vec![10, 0, 0, 1]),
            Attribute::be16(svc::PORT, 0),
        ]);
        assert_eq!(VirtualServer::from_attributes(&icmp), None);
    }

    #[test]
    fn a_four_byte_ipv4_address_is_accepted() {
        let attributes = decode(&[
            Attribute::u16(svc::AF, AF_INET),
            Attribute::u16(svc::PROTOCOL, 17),
            Attribute::Bytes(svc::ADDR, vec![10, 0, 0, 1]),
            Attribute::be16(svc::PORT, 53),
        ]);
        let service = VirtualServer::from_attributes(&attributes).unwrap();
        assert_eq!(service.key, key("10.0.0.1", IpvsProtocol::Udp, 53));
    }

    #[test]
    fn destinations_round_trip_with_their_connection_counts() {
        let service = key("10.96.0.10", IpvsProtocol::Tcp, 80);
        let server = RealServer::masquerade("fd00::10".parse().unwrap(), 8080).with_weight(0);
        let mut attributes = server.attributes();
        attributes.extend([
            Attribute::u32(dest::ACTIVE_CONNS, 3),
            Attribute::u32(dest::INACT_CONNS, 4),
            Attribute::u32(dest::PERSIST_CONNS, 5),
        ]);
        let destination = Destination::from_attributes(&decode(&attributes), &service).unwrap();
        assert_eq!(destination.server, server);
        assert_eq!(
            (
                destination.active_connections,
                destination.inactive_connections,
                destination.persistent_connections
            ),
            (3, 4, 5)
        );
    }

    #[test]
    fn a_destination_without_a_family_takes_the_services() {
        let service = key("10.96.0.10", IpvsProtocol::Tcp, 80);
        let attributes = decode(&[
            Attribute::Bytes(dest::ADDR, address_bytes("10.244.1.10".parse().unwrap())),
            Attribute::be16(dest::PORT, 8080),
            Attribute::u32(dest::FWD_METHOD, 0),
            Attribute::u32(dest::WEIGHT, 1),
        ]);
        let destination = Destination::from_attributes(&attributes, &service).unwrap();
        assert_eq!(
            destination.server,
            RealServer::masquerade("10.244.1.10".parse().unwrap(), 8080)
        );
    }

    #[test]
    fn timeouts_round_trip() {
        let timeouts = Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        };
        assert_eq!(
            Timeouts::from_attributes(&decode(&timeouts.attributes())),
            timeouts
        );
    }

    #[test]
    fn keys_print_like_ipvsadm() {
        assert_eq!(
            key("10.96.0.10", IpvsProtocol::Tcp, 80).to_string(),
            "TCP 10.96.0.10:80"
        );
        assert_eq!(
            key("fd00::a", IpvsProtocol::Sctp, 80).to_string(),
            "SCTP [fd00::a]:80"
        );
    }
}
