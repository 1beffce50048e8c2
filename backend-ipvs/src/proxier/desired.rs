//! What the IPVS dataplane should hold for a [`NodeView`]: the addresses
//! bound to `kube-ipvs0`, one virtual server per (ClusterIP, port,
//! protocol) with its real servers, and the entries of upstream's ipsets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use proxy_core::view::{ServicePortView, Target};
use proxy_core::{NodeView, Protocol, ServicePortName};

use crate::netlink::{IpvsProtocol, RealServer, ServiceFlags, ServiceKey, VirtualServer};

/// A virtual server and its real servers, by (address, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DesiredService {
    pub(crate) service: VirtualServer,
    pub(crate) servers: BTreeMap<(IpAddr, u16), RealServer>,
}

/// An `ip,proto:port` ipset entry (`hash:ip,port`).
pub(crate) type IpPort = (IpAddr, IpvsProtocol, u16);

/// The whole desired state of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    /// Addresses to bind on `kube-ipvs0`.
    pub(crate) vips: BTreeSet<IpAddr>,
    /// Virtual servers by key.
    pub(crate) services: BTreeMap<ServiceKey, DesiredService>,
    /// `KUBE-CLUSTER-IP`: every ClusterIP and port.
    pub(crate) cluster_ips: BTreeSet<IpPort>,
    /// `KUBE-LOOP-BACK` (`hash:ip,port,ip`): local endpoints, to
    /// masquerade a pod reaching itself through a service (hairpin).
    pub(crate) loopback: BTreeSet<(IpAddr, IpvsProtocol, u16, IpAddr)>,
    /// The virtual servers of each service port (ClusterIP, then node
    /// ports).
    pub(crate) port_keys: BTreeMap<ServicePortName, Vec<ServiceKey>>,
    /// Node ports by protocol (`KUBE-NODE-PORT-{TCP,UDP}`, and for SCTP
    /// `KUBE-NODE-PORT-SCTP-HASH` with every node IP), and whether the
    /// port's external policy is `Local` (the `-LOCAL-` sets).
    pub(crate) node_ports: BTreeSet<(IpvsProtocol, u16, bool)>,
    /// The node IPs node ports are served on.
    pub(crate) node_ips: BTreeSet<IpAddr>,
    /// `KUBE-EXTERNAL-IP` (`false`) and `KUBE-EXTERNAL-IP-LOCAL` (`true`)
    /// entries: external IP, protocol, port.
    pub(crate) external_ips: BTreeSet<(IpPort, bool)>,
    /// `KUBE-LOAD-BALANCER` entries, and whether each is also in
    /// `KUBE-LOAD-BALANCER-LOCAL`.
    pub(crate) load_balancers: BTreeSet<(IpPort, bool)>,
    /// `KUBE-LOAD-BALANCER-FW`: load-balancer IPs with source ranges.
    pub(crate) lb_firewall: BTreeSet<IpPort>,
    /// `KUBE-LOAD-BALANCER-SOURCE-CIDR` (`hash:ip,port,net`): the ranges.
    pub(crate) lb_source_cidrs: BTreeSet<(IpPort, IpNet)>,
    /// `KUBE-LOAD-BALANCER-SOURCE-IP` (`hash:ip,port,ip`): the node may
    /// reach these (a range holds its primary IP); IPVS sees the
    /// load-balancer IP as source and destination.
    pub(crate) lb_source_ips: BTreeSet<IpPort>,
    /// Load-balancer IPs the node itself may not reach (no range holds its
    /// primary IP): `KUBE-IPVS-OUT-FILTER` drops them.
    pub(crate) lb_no_node_access: BTreeSet<IpPort>,
}

/// The IPVS protocol of a service protocol.
pub(crate) fn ipvs_protocol(protocol: Protocol) -> IpvsProtocol {
    match protocol {
        Protocol::Tcp => IpvsProtocol::Tcp,
        Protocol::Udp => IpvsProtocol::Udp,
        Protocol::Sctp => IpvsProtocol::Sctp,
    }
}

impl Desired {
    /// The desired state of `view` with `scheduler`, node ports served on
    /// `node_ips` (upstream's: the node's addresses selected by
    /// `nodePortAddresses`, without loopback ones and `kube-ipvs0`'s).
    pub(crate) fn of(
        view: &NodeView,
        scheduler: &str,
        node_ips: &BTreeSet<IpAddr>,
        primary_ip: Option<IpAddr>,
    ) -> Desired {
        let mut desired = Desired {
            node_ips: node_ips.clone(),
            ..Desired::default()
        };
        for (name, port_view) in view.iter() {
            desired = desired.add_port(name, port_view, scheduler, primary_ip);
        }
        desired
    }

    /// The desired state of one service port alone (its share of
    /// [`Desired::of`]).
    pub(crate) fn of_port(
        name: &ServicePortName,
        port_view: &ServicePortView,
        scheduler: &str,
        node_ips: &BTreeSet<IpAddr>,
        primary_ip: Option<IpAddr>,
    ) -> Desired {
        let desired = Desired {
            node_ips: node_ips.clone(),
            ..Desired::default()
        };
        desired.add_port(name, port_view, scheduler, primary_ip)
    }

    /// Adds everything `other` holds (another port's share); `other`'s
    /// virtual servers win where both have one.
    pub(crate) fn merge(&mut self, other: &Desired) {
        // every field, so a new one cannot be forgotten here
        let Desired {
            vips,
            services,
            cluster_ips,
            loopback,
            port_keys,
            node_ports,
            node_ips,
            external_ips,
            load_balancers,
            lb_firewall,
            lb_source_cidrs,
            lb_source_ips,
            lb_no_node_access,
        } = other;
        self.vips.extend(vips);
        self.services
            .extend(services.iter().map(|(k, s)| (*k, s.clone())));
        self.cluster_ips.extend(cluster_ips);
        self.loopback.extend(loopback);
        self.port_keys
            .extend(port_keys.iter().map(|(n, k)| (n.clone(), k.clone())));
        self.node_ports.extend(node_ports);
        self.node_ips.extend(node_ips);
        self.external_ips.extend(external_ips);
        self.load_balancers.extend(load_balancers);
        self.lb_firewall.extend(lb_firewall);
        self.lb_source_cidrs.extend(lb_source_cidrs);
        self.lb_source_ips.extend(lb_source_ips);
        self.lb_no_node_access.extend(lb_no_node_access);
    }

    /// `self` with the virtual servers, addresses and set entries of one
    /// service port added (node ports on `self.node_ips`).
    fn add_port(
        self,
        name: &ServicePortName,
        port_view: &ServicePortView,
        scheduler: &str,
        primary_ip: Option<IpAddr>,
    ) -> Desired {
        let mut desired = self;
        let node_ips = &desired.node_ips.clone();
        {
            let port = &port_view.port;
            let protocol = ipvs_protocol(port.protocol);
            let key = ServiceKey {
                address: port.cluster_ip,
                protocol,
                port: port.port,
            };
            desired.vips.insert(port.cluster_ip);
            desired.port_keys.insert(name.clone(), vec![key]);
            desired
                .cluster_ips
                .insert((port.cluster_ip, protocol, port.port));
            let mut service = VirtualServer::new(key, scheduler);
            if let Some(affinity) = &port.session_affinity {
                service = service.persistent(affinity.timeout_seconds);
            }
            // upstream sets the source-hash flag (`mh-port`) for `mh`
            if scheduler == "mh" {
                service.flags = service.flags | ServiceFlags::SCHED2;
            }
            // Policy `Local` without a local endpoint: upstream's IPVS mode
            // falls back to the cluster endpoints (kubernetes#97081), which
            // a port that uses no cluster endpoints does not have; without
            // real servers IPVS answers port unreachable (no drop rule).
            let endpoints = match port_view.internal {
                Target::Drop => &port_view.cluster,
                target => port_view.endpoints_for(target),
            };
            let servers: BTreeMap<_, _> = endpoints
                .iter()
                .map(|e| ((e.ip, e.port), RealServer::masquerade(e.ip, e.port)))
                .collect();
            for e in port_view.all_endpoints().filter(|e| e.is_local) {
                desired.loopback.insert((e.ip, protocol, e.port, e.ip));
            }
            // external policy `Local`: the local endpoints, else (as
            // above) the cluster ones
            let endpoints = match port_view.external {
                Target::Drop => &port_view.cluster,
                target => port_view.endpoints_for(target),
            };
            let external: BTreeMap<_, _> = endpoints
                .iter()
                .map(|e| ((e.ip, e.port), RealServer::masquerade(e.ip, e.port)))
                .collect();
            let local = port.external_policy_local();
            let add_external = |desired: &mut Desired, address: IpAddr, port_number: u16| {
                let external_key = ServiceKey {
                    address,
                    protocol,
                    port: port_number,
                };
                let external_service = VirtualServer {
                    key: external_key,
                    ..service.clone()
                };
                desired.services.insert(
                    external_key,
                    DesiredService {
                        service: external_service,
                        servers: external.clone(),
                    },
                );
                if let Some(keys) = desired.port_keys.get_mut(name) {
                    keys.push(external_key);
                }
            };
            if let Some(node_port) = port.node_port
                && !node_ips.is_empty()
            {
                desired.node_ports.insert((protocol, node_port, local));
                for ip in node_ips {
                    add_external(&mut desired, *ip, node_port);
                }
            }
            for ip in &port.external_ips {
                desired
                    .external_ips
                    .insert(((*ip, protocol, port.port), local));
                add_external(&mut desired, *ip, port.port);
                if !node_ips.contains(ip) {
                    desired.vips.insert(*ip);
                }
            }
            let ranges = &port.load_balancer_source_ranges;
            for ip in &port.load_balancer_ips {
                let entry = (*ip, protocol, port.port);
                desired.load_balancers.insert((entry, local));
                add_external(&mut desired, *ip, port.port);
                if !node_ips.contains(ip) {
                    desired.vips.insert(*ip);
                }
                if ranges.is_empty() {
                    continue;
                }
                desired.lb_firewall.insert(entry);
                for range in ranges {
                    desired.lb_source_cidrs.insert((entry, *range));
                }
                if primary_ip.is_some_and(|node| ranges.iter().any(|r| r.contains(&node))) {
                    desired.lb_source_ips.insert(entry);
                } else {
                    desired.lb_no_node_access.insert(entry);
                }
            }
            desired
                .services
                .insert(key, DesiredService { service, servers });
        }
        desired
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::conformance::{Scenario, load_scenarios};

    use super::*;

    fn scenario(name: &str) -> Scenario {
        load_scenarios()
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap()
    }

    fn web() -> ServiceKey {
        ServiceKey {
            address: "10.96.0.10".parse().unwrap(),
            protocol: IpvsProtocol::Tcp,
            port: 80,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn session_affinity_is_persistence_with_its_timeout_over_every_endpoint() {
        let desired = Desired::of(
            scenario("clusterip-session-affinity").view(),
            "rr",
            &BTreeSet::new(),
            None,
        );
        assert_eq!(desired.vips, BTreeSet::from([ip("10.96.0.10")]));
        assert_eq!(
            desired.cluster_ips,
            BTreeSet::from([(ip("10.96.0.10"), IpvsProtocol::Tcp, 80)])
        );
        let web = &desired.services[&web()];
        assert_eq!(
            web.service,
            VirtualServer::new(self::web(), "rr").persistent(600)
        );
        assert_eq!(
            web.servers.values().copied().collect::<Vec<_>>(),
            [
                RealServer::masquerade(ip("10.244.1.10"), 8080),
                RealServer::masquerade(ip("10.244.2.10"), 8080)
            ]
        );
        assert_eq!(
            desired.loopback,
            BTreeSet::from([(
                ip("10.244.1.10"),
                IpvsProtocol::Tcp,
                8080,
                ip("10.244.1.10")
            )]),
            "only the local endpoint can hairpin"
        );
    }

    #[test]
    fn local_policy_without_local_endpoints_has_no_real_server() {
        let desired = Desired::of(
            scenario("internal-local-no-local-endpoints").view(),
            "mh",
            &BTreeSet::new(),
            None,
        );
        let web = &desired.services[&web()];
        assert_eq!(web.service.scheduler, "mh");
        assert!(
            web.service.flags.contains(ServiceFlags::SCHED2),
            "mh hashes source ports too, as upstream"
        );
        assert!(web.servers.is_empty());
    }

    #[test]
    fn no_endpoints_is_a_virtual_server_without_real_servers() {
        let desired = Desired::of(
            scenario("clusterip-no-endpoints").view(),
            "rr",
            &BTreeSet::new(),
            None,
        );
        assert!(desired.services.values().all(|s| s.servers.is_empty()));
        assert!(!desired.services.is_empty());
    }

    #[test]
    fn node_ports_are_virtual_servers_on_every_node_ip_with_the_external_endpoints() {
        let node_ips = BTreeSet::from([ip("10.0.0.1"), ip("10.244.1.1")]);
        let desired = Desired::of(scenario("nodeport-local").view(), "rr", &node_ips, None);
        assert_eq!(
            desired.node_ports,
            BTreeSet::from([(IpvsProtocol::Tcp, 30080, true)])
        );
        for node_ip in &node_ips {
            let key = ServiceKey {
                address: *node_ip,
                protocol: IpvsProtocol::Tcp,
                port: 30080,
            };
            let servers: Vec<IpAddr> = desired.services[&key]
                .servers
                .keys()
                .map(|(ip, _)| *ip)
                .collect();
            assert_eq!(
                servers,
                [ip("10.244.1.10")],
                "policy Local: the local endpoint only"
            );
        }
        assert_eq!(
            desired.services[&web()].servers.len(),
            2,
            "the ClusterIP keeps every endpoint"
        );
        assert!(
            !desired.vips.contains(&ip("10.0.0.1")),
            "node IPs are not bound to kube-ipvs0"
        );
        let fallback = Desired::of(
            scenario("nodeport-local-no-local-endpoints").view(),
            "rr",
            &node_ips,
            None,
        );
        let key = ServiceKey {
            address: ip("10.0.0.1"),
            protocol: IpvsProtocol::Tcp,
            port: 30080,
        };
        let servers: Vec<IpAddr> = fallback.services[&key]
            .servers
            .keys()
            .map(|(ip, _)| *ip)
            .collect();
        assert_eq!(
            servers,
            [ip("10.244.2.10")],
            "no local endpoint: upstream falls back to the cluster ones"
        );
    }

    #[test]
    fn external_ips_are_bound_virtual_servers_and_source_ranges_are_sets() {
        let desired = Desired::of(
            scenario("external-ip-local").view(),
            "rr",
            &BTreeSet::new(),
            None,
        );
        let external = ip("198.51.100.10");
        assert!(desired.vips.contains(&external), "bound to kube-ipvs0");
        assert_eq!(
            desired.external_ips,
            BTreeSet::from([((external, IpvsProtocol::Tcp, 80), true)])
        );
        let key = ServiceKey {
            address: external,
            protocol: IpvsProtocol::Tcp,
            port: 80,
        };
        assert!(desired.services.contains_key(&key));
        let lb = (ip("192.0.2.10"), IpvsProtocol::Tcp, 80);
        let from_node = Desired::of(
            scenario("loadbalancer-source-ranges").view(),
            "rr",
            &BTreeSet::new(),
            Some(ip("203.0.113.5")),
        );
        assert!(from_node.vips.contains(&lb.0));
        assert_eq!(from_node.lb_firewall, BTreeSet::from([lb]));
        assert_eq!(
            from_node.lb_source_cidrs,
            BTreeSet::from([(lb, "203.0.113.0/25".parse().unwrap())])
        );
        assert_eq!(
            from_node.lb_source_ips,
            BTreeSet::from([lb]),
            "a range holds the node"
        );
        assert!(from_node.lb_no_node_access.is_empty());
        let not_from_node = Desired::of(
            scenario("loadbalancer-source-ranges").view(),
            "rr",
            &BTreeSet::new(),
            Some(ip("10.0.0.1")),
        );
        assert!(not_from_node.lb_source_ips.is_empty());
        assert_eq!(not_from_node.lb_no_node_access, BTreeSet::from([lb]));
    }
}
