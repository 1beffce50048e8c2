//! Which listeners a service port needs: a pure function of the view, the
//! node-port addresses and the host's addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use proxy_core::backend::BackendContext;
use proxy_core::{IpFamily, Protocol, ServicePortName, ServicePortView, Target};

use crate::host::HostAddresses;
use crate::redirect::Vip;

/// A socket the backend listens on: protocol and local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address bound; the unspecified address for node ports served on
    /// every local address.
    pub addr: SocketAddr,
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol.lower(), self.addr)
    }
}

/// Which of a service port's targets a listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficClass {
    /// ClusterIP traffic: [`ServicePortView::internal`].
    Internal,
    /// Node port, external IP and load-balancer traffic:
    /// [`ServicePortView::external`].
    External,
}

impl TrafficClass {
    /// The target of this class in `view`.
    pub fn target(self, view: &ServicePortView) -> Target {
        match self {
            TrafficClass::Internal => view.internal,
            TrafficClass::External => view.external,
        }
    }

    /// `internal` or `external`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficClass::Internal => "internal",
            TrafficClass::External => "external",
        }
    }
}

/// One listener a service port wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Where to listen.
    pub key: ListenerKey,
    /// The service port served.
    pub port: ServicePortName,
    /// Which target it uses.
    pub class: TrafficClass,
    /// A UDP port whose target is [`Target::Reject`]: nothing listens, so
    /// the kernel answers ICMP port unreachable. (A TCP listener stays open
    /// and resets each connection at once: the port stays ours, and the
    /// client sees a refusal either way.)
    pub refuse: bool,
}

/// Where node ports are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address: bind the unspecified address.
    All,
    /// Every local address but loopback (`iptables.localhostNodePorts:
    /// false`): bind each address the host has at the last full sync.
    AllButLoopback,
    /// Only local addresses inside these networks (`nodePortAddresses`),
    /// loopback included if a network holds it.
    Within(Vec<IpNet>),
}

impl NodePortAddresses {
    /// From the context: [`BackendContext::node_port_cidrs`], and loopback
    /// excluded only when the configuration sets
    /// `iptables.localhostNodePorts: false` explicitly (the userspace mode
    /// can serve localhost node ports safely: it needs no `route_localnet`).
    pub fn from_context(ctx: &BackendContext) -> Self {
        let no_localhost = ctx.config.iptables.localhost_node_ports == Some(false);
        match (&ctx.node_port_cidrs, no_localhost) {
            (None, false) => NodePortAddresses::All,
            (None, true) => NodePortAddresses::AllButLoopback,
            (Some(nets), false) => NodePortAddresses::Within(nets.clone()),
            (Some(nets), true) => NodePortAddresses::Within(
                nets.iter()
                    .filter(|n| !n.addr().is_loopback())
                    .copied()
                    .collect(),
            ),
        }
    }

    /// The addresses a node port of `protocol` binds. UDP never binds the
    /// unspecified address: a reply must leave from the address the client
    /// sent to, and on a wildcard socket routing may pick another one (there
    /// is no `IP_PKTINFO` here); so for UDP "every address" means each local
    /// address known at the last full sync, plus loopback.
    fn bind_addresses(
        &self,
        family: IpFamily,
        protocol: Protocol,
        host: &HostAddresses,
    ) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = match self {
            NodePortAddresses::All if protocol != Protocol::Udp => {
                return vec![unspecified(family)];
            }
            NodePortAddresses::All => host.of_family(family).chain(loopback(family)).collect(),
            NodePortAddresses::AllButLoopback => host
                .of_family(family)
                .filter(|ip| !ip.is_loopback())
                .collect(),
            NodePortAddresses::Within(nets) => host
                .of_family(family)
                .chain(loopback(family))
                .filter(|ip| nets.iter().any(|n| n.contains(ip)))
                .collect(),
        };
        // IPv6 link-local addresses need a scope to bind; they never carry
        // node-port traffic.
        ips.retain(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()));
        ips.sort_unstable();
        ips.dedup();
        ips
    }
}

/// The unspecified address of `family`.
pub fn unspecified(family: IpFamily) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn loopback(family: IpFamily) -> Option<IpAddr> {
    Some(match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    })
}

/// The listeners `view` needs, in a stable order: the node port on every
/// node-port address and, when `local_vips` (no redirect rules), the
/// ClusterIP, external IPs and load-balancer IPs that are local to the host.
/// SCTP ports get none (not supported).
pub fn listeners_of(
    view: &ServicePortView,
    node_ports: &NodePortAddresses,
    host: &HostAddresses,
    local_vips: bool,
) -> Vec<ListenerSpec> {
    let port = &view.port;
    if port.protocol == Protocol::Sctp {
        return Vec::new();
    }
    let spec = |ip: IpAddr, number: u16, class: TrafficClass| ListenerSpec {
        key: ListenerKey {
            protocol: port.protocol,
            addr: SocketAddr::new(ip, number),
        },
        port: port.name.clone(),
        class,
        refuse: port.protocol == Protocol::Udp && class.target(view) == Target::Reject,
    };
    let mut out = Vec::new();
    if local_vips {
        for (ip, class) in vips(view) {
            if host.contains(&ip) {
                out.push(spec(ip, port.port, class));
            }
        }
    }
    if let Some(node_port) = port.node_port {
        for ip in node_ports.bind_addresses(port.family, port.protocol, host) {
            out.push(spec(ip, node_port, TrafficClass::External));
        }
    }
    out.sort_by_key(|a| a.key);
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// The service addresses of `view` with the traffic class each one uses:
/// the ClusterIP (internal), then external and load-balancer IPs
/// (external). Unspecified addresses (headless) are left out.
fn vips(view: &ServicePortView) -> impl Iterator<Item = (IpAddr, TrafficClass)> + '_ {
    let port = &view.port;
    std::iter::once((port.cluster_ip, TrafficClass::Internal))
        .chain(
            port.external_ips
                .iter()
                .chain(&port.load_balancer_ips)
                .map(|ip| (*ip, TrafficClass::External)),
        )
        .filter(|(ip, _)| !ip.is_unspecified())
}

/// One VIP the redirect rules handle for a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectSpec {
    /// The VIP matched.
    pub vip: Vip,
    /// The service port it belongs to.
    pub port: ServicePortName,
    /// Which target it uses (and so which redirect listener).
    pub class: TrafficClass,
    /// The target is [`Target::Reject`]: the rules reject it, no listener.
    pub reject: bool,
}

/// The VIPs of `view` the redirect rules handle, sorted: its ClusterIP,
/// external IPs and load-balancer IPs (TCP and UDP; SCTP is not proxied).
pub fn redirects_of(view: &ServicePortView) -> Vec<RedirectSpec> {
    let port = &view.port;
    if port.protocol == Protocol::Sctp {
        return Vec::new();
    }
    let mut out: Vec<RedirectSpec> = vips(view)
        .map(|(ip, class)| RedirectSpec {
            vip: Vip {
                ip,
                protocol: port.protocol,
                port: port.port,
            },
            port: port.name.clone(),
            class,
            reject: class.target(view) == Target::Reject,
        })
        .collect();
    out.sort_by_key(|r| r.vip);
    out.dedup_by(|a, b| a.vip == b.vip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{endpoint, port, view};

    fn keys(specs: &[ListenerSpec]) -> Vec<String> {
        specs
            .iter()
            .map(|s| format!("{} {}", s.key, s.class.as_str()))
            .collect()
    }

    #[test]
    fn node_port_on_all_addresses_binds_the_unspecified_address() {
        let v = view(
            port("10.96.0.1", Some(30080)),
            &[endpoint("10.1.0.1", false)],
        );
        let specs = listeners_of(&v, &NodePortAddresses::All, &HostAddresses::new([]), true);
        // The ClusterIP is not local: no listener for it.
        assert_eq!(keys(&specs), ["tcp 0.0.0.0:30080 external"]);
        assert!(!specs[0].refuse);
    }

    #[test]
    fn node_port_addresses_select_matching_local_addresses_including_localhost() {
        let v = view(
            port("10.96.0.1", Some(30080)),
            &[endpoint("10.1.0.1", false)],
        );
        let host =
            HostAddresses::new(["192.168.1.5".parse().unwrap(), "10.0.0.7".parse().unwrap()]);
        let within = NodePortAddresses::Within(vec![
            "192.168.0.0/16".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ]);
        let specs = listeners_of(&v, &within, &host, true);
        assert_eq!(
            keys(&specs),
            [
                "tcp 127.0.0.1:30080 external",
                "tcp 192.168.1.5:30080 external"
            ]
        );
    }

    #[test]
    fn local_service_addresses_get_listeners_and_only_udp_reject_targets_refuse() {
        let mut p = port("127.0.0.100", None);
        p.external_ips = vec![
            "192.168.1.5".parse().unwrap(),
            "203.0.113.9".parse().unwrap(),
        ];
        let host = HostAddresses::new(["192.168.1.5".parse().unwrap()]);
        let specs = listeners_of(&view(p, &[]), &NodePortAddresses::All, &host, true);
        assert_eq!(
            keys(&specs),
            ["tcp 127.0.0.100:80 internal", "tcp 192.168.1.5:80 external"]
        );
        // TCP keeps listening and resets each connection itself.
        assert!(specs.iter().all(|s| !s.refuse));
        let mut udp = port("127.0.0.100", None);
        udp.protocol = Protocol::Udp;
        let specs = listeners_of(&view(udp, &[]), &NodePortAddresses::All, &host, true);
        assert!(!specs.is_empty() && specs.iter().all(|s| s.refuse));
    }

    #[test]
    fn udp_node_ports_bind_each_local_address() {
        let mut p = port("10.96.0.1", Some(30053));
        p.protocol = Protocol::Udp;
        let host = HostAddresses::new(["192.168.1.5".parse().unwrap(), "fe80::1".parse().unwrap()]);
        let specs = listeners_of(
            &view(p, &[endpoint("10.1.0.1", false)]),
            &NodePortAddresses::All,
            &host,
            true,
        );
        assert_eq!(
            keys(&specs),
            [
                "udp 127.0.0.1:30053 external",
                "udp 192.168.1.5:30053 external"
            ]
        );
    }

    #[test]
    fn sctp_gets_no_listener() {
        let mut p = port("127.0.0.100", Some(30080));
        p.protocol = Protocol::Sctp;
        assert!(
            listeners_of(
                &view(p, &[]),
                &NodePortAddresses::All,
                &HostAddresses::new([]),
                true
            )
            .is_empty()
        );
    }

    #[test]
    fn local_vips_are_not_listened_on_when_redirect_rules_serve_them() {
        let p = port("127.0.0.100", Some(30080));
        let specs = listeners_of(
            &view(p, &[]),
            &NodePortAddresses::All,
            &HostAddresses::new([]),
            false,
        );
        assert_eq!(keys(&specs), ["tcp 0.0.0.0:30080 external"]);
    }

    #[test]
    fn redirects_cover_every_vip_with_its_class_and_reject_targets() {
        let mut p = port("10.96.0.1", Some(30080));
        p.external_ips = vec!["198.51.100.10".parse().unwrap()];
        p.load_balancer_ips = vec!["192.0.2.10".parse().unwrap()];
        let with_endpoints = redirects_of(&view(p.clone(), &[endpoint("10.1.0.1", false)]));
        let shown: Vec<String> = with_endpoints
            .iter()
            .map(|r| format!("{} {} {}", r.vip, r.class.as_str(), r.reject))
            .collect();
        assert_eq!(
            shown,
            [
                "tcp 10.96.0.1:80 internal false",
                "tcp 192.0.2.10:80 external false",
                "tcp 198.51.100.10:80 external false"
            ]
        );
        // No endpoints: every VIP is rejected by the rules.
        assert!(redirects_of(&view(p.clone(), &[])).iter().all(|r| r.reject));
        // Headless (no ClusterIP) and SCTP give nothing.
        let mut headless = port("0.0.0.0", None);
        headless.cluster_ip = "0.0.0.0".parse().unwrap();
        assert!(redirects_of(&view(headless, &[])).is_empty());
        p.protocol = Protocol::Sctp;
        assert!(redirects_of(&view(p, &[])).is_empty());
    }
}
