//! What the renderer needs besides the view, derived once from the
//! [`BackendContext`].

use std::net::IpAddr;

use ipnet::IpNet;
use proxy_core::IpFamily;
use proxy_core::backend::{BackendContext, LocalTrafficDetector};

/// Where the final `KUBE-SERVICES → KUBE-NODEPORTS` rule(s) match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortDestinations {
    /// Every local address (`-m addrtype --dst-type LOCAL`), minus loopback
    /// when localhost node ports are off (always for IPv6).
    AllLocal {
        /// Loopback network to exclude (`! -d 127.0.0.0/8`, `! -d ::1/128`).
        exclude: Option<IpNet>,
    },
    /// Only these destinations: a host address is matched exactly
    /// (`-d 192.168.0.2`), a wider network as "local address inside it"
    /// (`-d 192.168.0.0/24 -m addrtype --dst-type LOCAL`).
    Networks(Vec<IpNet>),
}

/// The renderer's settings for one family.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// The family (`iptables` or `ip6tables` rules).
    pub family: IpFamily,
    /// The masquerade mark as upstream prints it (`%#08x`: `0x00004000`).
    pub mark: String,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// The local-traffic detector.
    pub local_detector: LocalTrafficDetector,
    /// Where node ports are served.
    pub node_ports: NodePortDestinations,
    /// Whether node ports answer on 127.0.0.0/8 (IPv4 only; needs
    /// `route_localnet=1` and brings the `KUBE-FIREWALL` guard).
    pub localhost_node_ports: bool,
    /// The node's primary IP of this family: with it inside a load
    /// balancer's source ranges, the LB IPs themselves are allowed too.
    pub node_ip: Option<IpAddr>,
    /// Drop `ctstate INVALID` in `KUBE-FORWARD` (off when
    /// `nf_conntrack_tcp_be_liberal` is set).
    pub drop_invalid: bool,
    /// Add `--random-fully` to the `MASQUERADE` rule.
    pub random_fully: bool,
}

impl RenderConfig {
    /// The settings upstream derives from `ctx`, assuming
    /// `nf_conntrack_tcp_be_liberal=0` and an iptables with `--random-fully`.
    pub fn from_context(ctx: &BackendContext) -> Self {
        let loopback = ctx.family.loopback_net();
        let localhost_node_ports = ctx.family == IpFamily::V4
            && ctx.localhost_node_ports
            && match &ctx.node_port_cidrs {
                None => true,
                Some(cidrs) => cidrs.iter().any(|c| c.contains(&loopback.addr())),
            };
        let node_ports = match &ctx.node_port_cidrs {
            None => NodePortDestinations::AllLocal {
                exclude: (!localhost_node_ports).then_some(loopback),
            },
            Some(cidrs) => NodePortDestinations::Networks(
                cidrs
                    .iter()
                    .copied()
                    .filter(|c| localhost_node_ports || !loopback.contains(c))
                    .collect(),
            ),
        };
        RenderConfig {
            family: ctx.family,
            mark: format!("{:#010x}", ctx.masquerade_mark),
            masquerade_all: ctx.masquerade_all,
            local_detector: ctx.local_detector.clone(),
            node_ports,
            localhost_node_ports,
            node_ip: ctx.node.primary_ip(ctx.family),
            drop_invalid: !ctx.config.conntrack.tcp_be_liberal,
            random_fully: true,
        }
    }

    /// The match selecting traffic from local pods (`-s 10.0.0.0/8`,
    /// `-i cbr0`, `-i veth+`), or `None` without a detector.
    pub fn if_local(&self) -> Option<String> {
        match &self.local_detector {
            LocalTrafficDetector::None => None,
            LocalTrafficDetector::Cidr(net) => Some(format!("-s {net}")),
            LocalTrafficDetector::BridgeInterface(name) => Some(format!("-i {name}")),
            LocalTrafficDetector::InterfaceNamePrefix(prefix) => Some(format!("-i {prefix}+")),
        }
    }

    /// The negation of [`RenderConfig::if_local`].
    pub fn if_not_local(&self) -> Option<String> {
        self.if_local().map(|m| format!("! {m}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proxy_core::NodeInfo;

    use super::*;

    #[test]
    fn mark_is_printed_like_go_percent_hash_08x() {
        let ctx = BackendContext::for_tests(IpFamily::V4, Arc::new(NodeInfo::named("n")));
        assert_eq!(RenderConfig::from_context(&ctx).mark, "0x00004000");
    }

    #[test]
    fn ipv6_never_serves_localhost_node_ports() {
        let mut ctx = BackendContext::for_tests(IpFamily::V6, Arc::new(NodeInfo::named("n")));
        ctx.localhost_node_ports = true;
        let cfg = RenderConfig::from_context(&ctx);
        assert!(!cfg.localhost_node_ports);
        assert_eq!(
            cfg.node_ports,
            NodePortDestinations::AllLocal {
                exclude: Some("::1/128".parse().unwrap())
            }
        );
    }

    #[test]
    fn node_port_cidrs_without_loopback_disable_localhost_node_ports() {
        let mut ctx = BackendContext::for_tests(IpFamily::V4, Arc::new(NodeInfo::named("n")));
        ctx.node_port_cidrs = Some(vec![
            "192.168.0.2/32".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ]);
        assert!(RenderConfig::from_context(&ctx).localhost_node_ports);
        ctx.node_port_cidrs = Some(vec!["192.168.0.2/32".parse().unwrap()]);
        assert!(!RenderConfig::from_context(&ctx).localhost_node_ports);
    }
}
