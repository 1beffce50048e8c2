//! `nodePortAddresses`: which node IPs serve NodePorts.

use std::net::IpAddr;

use ipnet::IpNet;

use super::mode::ProxyMode;
use super::net::parse_cidr;
use super::types::KubeProxyConfiguration;
use crate::error::Error;
use crate::model::IpFamily;

const PRIMARY: &str = NodePortAddresses::PRIMARY;
const LOCALHOST: &str = NodePortAddresses::LOCALHOST;
const ALL: &str = NodePortAddresses::ALL;

/// The parsed, effective `nodePortAddresses`.
///
/// Semantics (upstream's `proxyutil.NodePortAddresses`, per IP family):
///
/// - An empty list means every local IP of every family ([`matches_all`](Self::matches_all)).
/// - `primary` means the node's primary IP of each family; it is resolved at
///   run time from the Node object, so it is a flag here, not a CIDR.
/// - `localhost` and `all` are expanded into [`cidrs`](Self::cidrs)
///   (`127.0.0.0/8` + `::1/128`, `0.0.0.0/0` + `::/0`) and also set their flag.
/// - Upstream treats each family on its own: a family for which the list
///   names no CIDR (and which `primary` does not cover) matches all local
///   IPs of that family, and a zero-prefix CIDR matches all of its family;
///   see [`matches_all_for`](Self::matches_all_for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePortAddresses {
    /// The CIDRs given, plus the expansion of `localhost` and `all`, in order.
    pub cidrs: Vec<IpNet>,
    /// `primary` was given.
    pub primary: bool,
    /// `localhost` was given (its CIDRs are in `cidrs`).
    pub localhost: bool,
    /// `all` was given (its CIDRs are in `cidrs`).
    pub all: bool,
}

impl NodePortAddresses {
    /// The `primary` keyword: the node's primary IPv4 and/or IPv6 address.
    pub const PRIMARY: &str = "primary";
    /// The `localhost` keyword: `127.0.0.0/8` and `::1/128`.
    pub const LOCALHOST: &str = "localhost";
    /// The `all` keyword: `0.0.0.0/0` and `::/0`.
    pub const ALL: &str = "all";

    /// Parses a `nodePortAddresses` list. The error names the offending
    /// entry (`nodePortAddresses[1]`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Error> {
        let mut npa = NodePortAddresses::default();
        for (i, entry) in entries.iter().enumerate() {
            match entry.as_ref() {
                PRIMARY => npa.primary = true,
                LOCALHOST => {
                    npa.localhost = true;
                    npa.cidrs
                        .extend(IpFamily::ALL.map(|f| f.loopback_net().trunc()));
                }
                ALL => {
                    npa.all = true;
                    npa.cidrs.extend(IpFamily::ALL.map(zero_net));
                }
                other => match parse_cidr(other) {
                    Some(net) => npa.cidrs.push(net),
                    None => {
                        return Err(Error::config(
                            format!("nodePortAddresses[{i}]"),
                            format!(
                                "\"{other}\" must be a valid CIDR or one of the keywords \
                                 \"{PRIMARY}\", \"{LOCALHOST}\", \"{ALL}\""
                            ),
                        ));
                    }
                },
            }
        }
        Ok(npa)
    }

    /// Whether the list is empty: every local IP serves NodePorts.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && !self.primary
    }

    /// Whether every local IP of `family` serves NodePorts: the list is
    /// empty, or has a zero-prefix CIDR of `family`, or (upstream's per-family
    /// rule) names no CIDR of `family` and no `primary`.
    pub fn matches_all_for(&self, family: IpFamily) -> bool {
        let mut of_family = self
            .cidrs
            .iter()
            .filter(|n| IpFamily::of_net(n) == family)
            .peekable();
        if of_family.peek().is_none() {
            return !self.primary;
        }
        of_family.any(|n| n.prefix_len() == 0)
    }

    /// Whether every local IP of both families serves NodePorts (see
    /// [`matches_all_for`](Self::matches_all_for)); true for the empty list
    /// and for `all`.
    pub fn matches_all(&self) -> bool {
        IpFamily::ALL.into_iter().all(|f| self.matches_all_for(f))
    }

    /// Whether loopback addresses of `family` are included (upstream's
    /// `ContainsIPv4Loopback` for IPv4): a CIDR of the family overlaps the
    /// loopback network, or the list matches all of the family.
    pub fn contains_loopback(&self, family: IpFamily) -> bool {
        let lo = family.loopback_net();
        self.matches_all_for(family)
            || self
                .cidrs
                .iter()
                .any(|n| n.contains(&lo.network()) || lo.contains(n))
    }
}

impl NodePortAddresses {
    /// The networks whose local addresses serve node ports of `family`, or
    /// `None` when every local address of the family does
    /// ([`matches_all_for`](Self::matches_all_for)).
    ///
    /// The list's CIDRs of the family, plus `primary_ip` as a host network
    /// when the list has `primary` (upstream rewrites `primary` into the
    /// node IPs' `/32` and `/128`, leaving out a loopback node IP). The
    /// backends match packets against these networks; the health-check
    /// node ports bind the host's addresses inside them.
    pub fn networks_for(&self, family: IpFamily, primary_ip: Option<IpAddr>) -> Option<Vec<IpNet>> {
        if self.matches_all_for(family) {
            return None;
        }
        let mut networks: Vec<IpNet> = self
            .cidrs
            .iter()
            .copied()
            .filter(|n| IpFamily::of_net(n) == family)
            .collect();
        if self.primary
            && let Some(ip) = primary_ip.filter(|ip| family.contains(ip) && !ip.is_loopback())
        {
            networks.push(IpNet::from(ip));
        }
        Some(networks)
    }

    /// The addresses among `local` (the host's) that serve node ports of
    /// `family`: those inside [`networks_for`](Self::networks_for), or all
    /// of the family when it matches all. IPv6 link-local addresses are
    /// left out: they need an interface to be bound.
    pub fn select_local(
        &self,
        family: IpFamily,
        primary_ip: Option<IpAddr>,
        local: &[IpAddr],
    ) -> Vec<IpAddr> {
        let networks = self.networks_for(family, primary_ip);
        let mut selected: Vec<IpAddr> = local
            .iter()
            .copied()
            .filter(|ip| family.contains(ip) && !is_ipv6_link_local(ip))
            .filter(|ip| {
                networks
                    .as_ref()
                    .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
            })
            .collect();
        selected.sort_unstable();
        selected.dedup();
        selected
    }
}

/// `fe80::/10`.
fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// `0.0.0.0/0` or `::/0`.
fn zero_net(family: IpFamily) -> IpNet {
    match family {
        IpFamily::V4 => IpNet::V4(ipnet::Ipv4Net::default()),
        IpFamily::V6 => IpNet::V6(ipnet::Ipv6Net::default()),
    }
}

impl KubeProxyConfiguration {
    /// The effective `nodePortAddresses`: as configured, or `["primary"]`
    /// in nftables mode when unset (upstream's platform default).
    pub fn node_port_addresses(&self) -> Result<NodePortAddresses, Error> {
        match self.node_port_addresses.as_deref() {
            Some(list) if !list.is_empty() => NodePortAddresses::parse(list),
            _ if self.effective_mode() == ProxyMode::Nftables => {
                NodePortAddresses::parse(&[PRIMARY])
            }
            _ => Ok(NodePortAddresses::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> NodePortAddresses {
        NodePortAddresses::parse(list).unwrap()
    }

    #[test]
    fn empty_matches_all() {
        let npa = parse(&[]);
        assert!(npa.is_empty() && npa.matches_all());
        assert!(npa.contains_loopback(IpFamily::V4));
    }

    #[test]
    fn keywords_and_cidrs() {
        let npa = parse(&["primary", "localhost", "10.0.0.0/8"]);
        assert!(npa.primary && npa.localhost && !npa.all);
        assert_eq!(npa.cidrs.len(), 3);
        assert!(!npa.matches_all());
        assert!(!npa.matches_all_for(IpFamily::V6));
        assert!(npa.contains_loopback(IpFamily::V4));

        let all = parse(&["all"]);
        assert!(all.all && all.matches_all());
    }

    #[test]
    fn per_family_match_all() {
        let npa = parse(&["192.168.0.0/24"]);
        assert!(!npa.matches_all_for(IpFamily::V4));
        assert!(npa.matches_all_for(IpFamily::V6));
        assert!(!npa.matches_all());
        assert!(!npa.contains_loopback(IpFamily::V4));

        let zero = parse(&["0.0.0.0/0"]);
        assert!(zero.matches_all());

        let primary = parse(&["primary"]);
        assert!(!primary.matches_all_for(IpFamily::V4) && !primary.matches_all());
    }

    #[test]
    fn networks_and_local_addresses_per_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let npa = parse(&["primary", "10.0.0.0/8"]);
        assert_eq!(
            npa.networks_for(IpFamily::V4, Some(ip("192.168.0.2"))),
            Some(vec![net("10.0.0.0/8"), net("192.168.0.2/32")])
        );
        assert_eq!(
            npa.networks_for(IpFamily::V6, Some(ip("2001:db8::1"))),
            Some(vec![net("2001:db8::1/128")])
        );
        // No IPv6 node IP: `primary` selects nothing of IPv6.
        assert_eq!(npa.networks_for(IpFamily::V6, None), Some(vec![]));
        // A loopback node IP is left out, as upstream.
        assert_eq!(
            parse(&["primary"]).networks_for(IpFamily::V4, Some(ip("127.0.0.1"))),
            Some(vec![])
        );
        assert_eq!(
            parse(&["10.0.0.0/8"]).networks_for(IpFamily::V6, None),
            None
        );

        let local = [
            ip("10.1.2.3"),
            ip("192.168.0.2"),
            ip("192.168.0.3"),
            ip("2001:db8::1"),
            ip("fe80::1"),
            ip("10.1.2.3"),
        ];
        assert_eq!(
            npa.select_local(IpFamily::V4, Some(ip("192.168.0.2")), &local),
            [ip("10.1.2.3"), ip("192.168.0.2")]
        );
        assert_eq!(
            parse(&["10.0.0.0/8"]).select_local(IpFamily::V6, None, &local),
            [ip("2001:db8::1")],
            "all of IPv6 but link-local"
        );
    }

    #[test]
    fn bad_entry_names_its_index() {
        let err = NodePortAddresses::parse(&["10.0.0.0/8", "1.2.3"]).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "nodePortAddresses[1]"),
            "{err}"
        );
    }
}
