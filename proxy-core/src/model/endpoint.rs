use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Topology hints of an endpoint (`hints.forZones`, `hints.forNodes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EndpointHints {
    /// Zones this endpoint should serve.
    pub for_zones: Vec<Arc<str>>,
    /// Nodes this endpoint should serve.
    pub for_nodes: Vec<Arc<str>>,
}

/// One endpoint of one service port, as a backend sees it.
///
/// Conditions follow upstream's defaults: a missing `ready` or `serving` is
/// true, a missing `terminating` is false.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The endpoint's IP: the first address of the EndpointSlice endpoint.
    pub ip: IpAddr,
    /// The target port, resolved through the slice's ports by name.
    pub port: u16,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// Whether `nodeName` is this node.
    pub is_local: bool,
    /// `nodeName`, if set.
    pub node_name: Option<Arc<str>>,
    /// `zone`, if set.
    pub zone: Option<Arc<str>>,
    /// Topology hints, if any.
    pub hints: Option<Arc<EndpointHints>>,
}

impl Endpoint {
    /// The endpoint as a socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Zone hints (empty when none).
    pub fn zone_hints(&self) -> &[Arc<str>] {
        self.hints.as_deref().map_or(&[], |h| &h.for_zones)
    }

    /// Node hints (empty when none).
    pub fn node_hints(&self) -> &[Arc<str>] {
        self.hints.as_deref().map_or(&[], |h| &h.for_nodes)
    }
}

impl fmt::Display for Endpoint {
    /// `ip:port`, with brackets for IPv6, as upstream's `Endpoint.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.socket_addr())
    }
}
