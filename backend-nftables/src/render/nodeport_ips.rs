//! Which destinations accept node ports (`nodePortAddresses`).
//!
//! Upstream's rule: a node port is served on every **local** address inside
//! the configured networks (`GetNodeIPs` intersects the host's interface
//! addresses with the CIDRs, `primary` being the node's primary IP as a
//! one-address CIDR), never on loopback (nftables mode has no localhost
//! node ports). Upstream fills the `nodeport-ips` set with those addresses,
//! enumerating the interfaces on every sync. Here `nodeport-ips` is an
//! interval set holding the configured networks themselves, and the rule
//! keeps `fib daddr type local`: a destination is a node port iff it is a
//! local address inside a configured network, as iptables mode's
//! `-d <net> -m addrtype --dst-type LOCAL`. Nothing is enumerated, and an
//! address added to an interface later serves node ports at once.

use ipnet::IpNet;
use proxy_core::IpFamily;
use proxy_core::backend::BackendContext;

use super::skeleton::names::NODEPORT_IPS;
use crate::ir::{ElemKey, Element, KeyType, SetDef, Stmt};

/// Where node ports are accepted, for one family and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortMatch {
    /// The `nodeport-ips` set and its elements; `None` when every local
    /// address accepts node ports (no set, as upstream).
    pub set: Option<(SetDef, Vec<Element>)>,
    /// The statements selecting a node-port destination, which precede the
    /// `meta l4proto . th dport vmap` of the node-port rules.
    pub stmts: Vec<Stmt>,
}

impl NodePortMatch {
    /// The match for `ctx.node_port_cidrs`:
    ///
    /// - `None` (every local address): `fib daddr type local ip daddr !=
    ///   127.0.0.0/8`, no set;
    /// - networks: `fib daddr type local ip daddr @nodeport-ips`, the set
    ///   holding the networks ([`node_port_networks`]); `ip daddr !=
    ///   127.0.0.0/8` is added when one of them contains the loopback
    ///   network.
    pub fn new(ctx: &BackendContext) -> Self {
        let family = ctx.family;
        let loopback = family.loopback_net();
        let Some(cidrs) = &ctx.node_port_cidrs else {
            return NodePortMatch {
                set: None,
                stmts: vec![Stmt::FibDaddrLocal, Stmt::DaddrNotInNet(loopback)],
            };
        };
        let nets = node_port_networks(cidrs, family);
        let mut stmts = vec![Stmt::FibDaddrLocal];
        if nets.iter().any(|n| n.contains(&loopback)) {
            stmts.push(Stmt::DaddrNotInNet(loopback));
        }
        stmts.push(Stmt::DaddrInSet(NODEPORT_IPS.into()));
        let def = SetDef {
            name: NODEPORT_IPS.into(),
            key: KeyType::Net,
            verdict_map: false,
            timeout: None,
            comment: Some("Networks whose local IPs accept NodePort traffic".into()),
        };
        let elements = nets
            .into_iter()
            .map(|net| Element {
                set: NODEPORT_IPS.into(),
                key: ElemKey::Net(net),
                value: None,
                comment: None,
            })
            .collect();
        NodePortMatch {
            set: Some((def, elements)),
            stmts,
        }
    }
}

/// The networks of `family` in `cidrs`, as `nodeport-ips` holds them:
/// host bits cleared, merged so that no two overlap (an interval set
/// rejects overlapping elements, and `primary` often lies inside a
/// configured network), sorted. Networks inside the loopback network are
/// left out with an error logged, as upstream does for loopback addresses:
/// nftables mode has no localhost node ports.
pub fn node_port_networks(cidrs: &[IpNet], family: IpFamily) -> Vec<IpNet> {
    let loopback = family.loopback_net();
    let nets: Vec<IpNet> = cidrs
        .iter()
        .filter(|n| IpFamily::of_net(n) == family)
        .filter(|n| {
            let is_loopback = loopback.contains(*n);
            if is_loopback {
                tracing::error!(
                    cidr = %n,
                    "nodePortAddresses includes localhost but localhost NodePorts are not \
                     supported in nftables mode; ignoring it"
                );
            }
            !is_loopback
        })
        .map(IpNet::trunc)
        .collect();
    IpNet::aggregate(&nets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn networks_are_truncated_merged_and_of_the_family() {
        let got = node_port_networks(
            &nets(&[
                "10.0.0.1/32",
                "10.0.0.7/24",
                "192.168.1.0/25",
                "192.168.1.128/25",
                "fd00::1/128",
            ]),
            IpFamily::V4,
        );
        assert_eq!(got, nets(&["10.0.0.0/24", "192.168.1.0/24"]));
        assert_eq!(
            node_port_networks(
                &nets(&["10.0.0.0/8", "fd00::/64", "fd00::1/128"]),
                IpFamily::V6
            ),
            nets(&["fd00::/64"])
        );
    }

    #[test]
    fn loopback_networks_are_left_out() {
        let cidrs = nets(&["127.0.0.0/8", "127.0.0.1/32", "::1/128", "10.0.0.0/24"]);
        assert_eq!(
            node_port_networks(&cidrs, IpFamily::V4),
            nets(&["10.0.0.0/24"])
        );
        assert!(node_port_networks(&cidrs, IpFamily::V6).is_empty());
    }

    fn ctx(family: IpFamily, cidrs: Option<&[&str]>) -> BackendContext {
        let mut ctx = BackendContext::for_tests(family, proxy_core::NodeInfo::named("n").shared());
        ctx.node_port_cidrs = cidrs.map(nets);
        ctx
    }

    #[test]
    fn all_addresses_need_no_set() {
        let m = NodePortMatch::new(&ctx(IpFamily::V4, None));
        assert_eq!(m.set, None);
        assert_eq!(
            m.stmts,
            vec![
                Stmt::FibDaddrLocal,
                Stmt::DaddrNotInNet("127.0.0.0/8".parse().unwrap())
            ]
        );
    }

    #[test]
    fn networks_match_local_addresses_through_an_interval_set() {
        let m = NodePortMatch::new(&ctx(IpFamily::V4, Some(&["10.0.0.0/24"])));
        assert_eq!(
            m.stmts,
            vec![Stmt::FibDaddrLocal, Stmt::DaddrInSet(NODEPORT_IPS.into())]
        );
        let (def, elements) = m.set.unwrap();
        assert_eq!(def.key, KeyType::Net);
        let keys: Vec<ElemKey> = elements.into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![ElemKey::Net("10.0.0.0/24".parse().unwrap())]);
    }

    #[test]
    fn a_network_containing_loopback_excludes_it() {
        let m = NodePortMatch::new(&ctx(IpFamily::V4, Some(&["0.0.0.0/1"])));
        assert_eq!(
            m.stmts,
            vec![
                Stmt::FibDaddrLocal,
                Stmt::DaddrNotInNet("127.0.0.0/8".parse().unwrap()),
                Stmt::DaddrInSet(NODEPORT_IPS.into())
            ]
        );
    }

    #[test]
    fn no_network_of_the_family_gives_an_empty_set() {
        // `primary` without a known primary IP: no node ports at all.
        let m = NodePortMatch::new(&ctx(IpFamily::V6, Some(&[])));
        let (_, elements) = m.set.unwrap();
        assert!(elements.is_empty());
    }
}
