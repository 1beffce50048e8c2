//! [`WantedState`]: what the ipvs mode wants in the kernel for a
//! [`NodeView`](proxy_core::NodeView), grouped per service port, read-only (nothing is
//! programmed), and its comparison with the live state
//! ([`crate::trace::IpvsRules`]) that `kube-proxy diff --proxy-mode ipvs`
//! reports.
//!
//! Per service port: its virtual servers (scheduler, persistence, real
//! servers with their weights), its ipset entries and its `kube-ipvs0`
//! addresses; for the node: the mode's iptables chains. Build one with
//! [`crate::IpvsBackend::wanted`].
//!
//! The comparison ([`WantedState::compare`]) takes as ours the live
//! virtual servers on a wanted address, a `kube-ipvs0` address or a node
//! IP (outside `ipvs.excludeCIDRs`), every entry of the mode's ipsets and
//! every `kube-ipvs0` address of the family. A real server at weight 0
//! that is not wanted drains (graceful termination): no difference.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::IpFamily;
pub use proxy_core::diff::{PortDiff, Status};

use crate::error::IpvsError;
use crate::layout::{CHAINS, ipset_name};
use crate::netlink::{IpvsProtocol, RealServer, ServiceFlags, VirtualServer};
use crate::trace::{IpvsRules, RealEntry, VirtualServerEntry};

/// The group of what serves no single service port (the chains, and
/// live addresses and set entries no port wants).
pub const SHARED: &str = "(shared)";

/// What one service port wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantedPort {
    /// Its virtual servers (ClusterIP, node ports, external and
    /// load-balancer IPs), with the real servers they want (weight 1).
    pub virtual_servers: Vec<VirtualServerEntry>,
    /// Its ipset entries: (set name of the family, entry as `ipset save`
    /// writes it).
    pub set_entries: BTreeSet<(String, String)>,
    /// Its addresses on `kube-ipvs0`.
    pub bound: BTreeSet<IpAddr>,
}

/// What the ipvs mode wants for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedState {
    /// The family.
    pub family: IpFamily,
    /// Per service port (`namespace/name:port`).
    pub ports: BTreeMap<String, WantedPort>,
    /// The node IPs node ports are served on.
    pub node_ips: BTreeSet<IpAddr>,
    /// The mode's ipsets (names of the family).
    pub sets: BTreeSet<String>,
    /// The mode's iptables chains: (table, chain).
    pub chains: BTreeSet<(String, String)>,
    /// `ipvs.excludeCIDRs`: live virtual servers there are not ours unless
    /// wanted.
    pub exclude_cidrs: Vec<IpNet>,
}

/// One service port's share of the desired state, as the proxier
/// computes it (the input of [`WantedState::of_parts`]).
pub(crate) struct PortParts {
    /// `namespace/name:port`.
    pub(crate) name: String,
    /// Its virtual servers and their real servers.
    pub(crate) services: Vec<(VirtualServer, Vec<RealServer>)>,
    /// Its set entries, by the set's IPv4 name.
    pub(crate) entries: Vec<(&'static str, BTreeSet<String>)>,
    /// Its `kube-ipvs0` addresses.
    pub(crate) vips: BTreeSet<IpAddr>,
}

/// One group's comparable items: a line per virtual server, real server,
/// set entry, address and chain, and the real servers taking new
/// connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The items, as the report lists them.
    pub items: BTreeSet<String>,
    /// Real servers of weight > 0.
    pub endpoints: BTreeSet<SocketAddr>,
}

/// Groups by service port name.
pub type Model = BTreeMap<String, Group>;

/// The node's addresses node ports may be served on (every link's but
/// `kube-ipvs0`'s, without loopback and IPv6 link-local ones), read from
/// the current network namespace; [`crate::IpvsBackend::wanted`] selects
/// among them as a sync does.
pub fn node_addresses() -> Result<BTreeSet<IpAddr>, IpvsError> {
    crate::proxier::node_addresses()
}

fn proto(p: IpvsProtocol) -> &'static str {
    match p {
        IpvsProtocol::Tcp => "tcp",
        IpvsProtocol::Udp => "udp",
        IpvsProtocol::Sctp => "sctp",
    }
}

fn vs_item(vs: &VirtualServerEntry) -> String {
    let mut s = format!(
        "virtual server {} {} scheduler {}",
        proto(vs.protocol),
        vs.address,
        vs.scheduler
    );
    if let Some(p) = vs.persistence {
        s.push_str(&format!(" persistent {p}"));
    }
    s
}

fn real_item(vs: &VirtualServerEntry, real: &RealEntry) -> String {
    format!(
        "real server {} {} -> {} weight {}",
        proto(vs.protocol),
        vs.address,
        real.address,
        real.weight
    )
}

fn set_item(set: &str, entry: &str) -> String {
    format!("ipset {set} {entry}")
}

fn bound_item(ip: &IpAddr) -> String {
    format!("kube-ipvs0 address {ip}")
}

fn chain_item(table: &str, chain: &str) -> String {
    format!("iptables chain -t {table} {chain}")
}

/// Adds `vs` to `group`; with `wanted` (the real servers wanted there, of
/// a live virtual server), an unwanted real server at weight 0 drains and
/// is left out.
fn add_vs(group: &mut Group, vs: &VirtualServerEntry, wanted: Option<&BTreeSet<SocketAddr>>) {
    group.items.insert(vs_item(vs));
    for real in &vs.reals {
        if real.weight == 0 && wanted.is_some_and(|w| !w.contains(&real.address)) {
            continue;
        }
        if real.weight > 0 {
            group.endpoints.insert(real.address);
        }
        group.items.insert(real_item(vs, real));
    }
}

impl WantedState {
    /// Builds the state of `parts` (one per service port).
    pub(crate) fn of_parts(
        family: IpFamily,
        parts: Vec<PortParts>,
        set_names: Vec<&'static str>,
        node_ips: BTreeSet<IpAddr>,
        exclude_cidrs: Vec<IpNet>,
    ) -> WantedState {
        let mut ports = BTreeMap::new();
        let mut sets = BTreeSet::new();
        for part in parts {
            let virtual_servers = part
                .services
                .into_iter()
                .map(|(service, reals)| VirtualServerEntry {
                    protocol: service.key.protocol,
                    address: SocketAddr::new(service.key.address, service.key.port),
                    scheduler: service.scheduler.clone(),
                    persistence: service
                        .flags
                        .contains(ServiceFlags::PERSISTENT)
                        .then_some(service.timeout),
                    reals: reals
                        .into_iter()
                        .map(|r| RealEntry {
                            address: SocketAddr::new(r.address, r.port),
                            weight: r.weight,
                            forwarding: "-m".to_string(),
                        })
                        .collect(),
                })
                .collect();
            let mut set_entries = BTreeSet::new();
            for (set, members) in part.entries {
                let name = ipset_name(set, family).to_string();
                sets.insert(name.clone());
                for m in members {
                    set_entries.insert((name.clone(), m));
                }
            }
            ports.insert(
                part.name,
                WantedPort {
                    virtual_servers,
                    set_entries,
                    bound: part.vips,
                },
            );
        }
        for name in set_names {
            sets.insert(ipset_name(name, family).to_string());
        }
        WantedState {
            family,
            ports,
            node_ips,
            sets,
            chains: CHAINS
                .iter()
                .map(|(t, c)| (t.to_string(), c.to_string()))
                .collect(),
            exclude_cidrs,
        }
    }

    /// The wanted state as groups.
    pub fn model(&self) -> Model {
        let mut model = Model::new();
        for (name, port) in &self.ports {
            let group = model.entry(name.clone()).or_default();
            for vs in &port.virtual_servers {
                add_vs(group, vs, None);
            }
            for (set, entry) in &port.set_entries {
                group.items.insert(set_item(set, entry));
            }
            for ip in &port.bound {
                group.items.insert(bound_item(ip));
            }
        }
        let shared = model.entry(SHARED.to_string()).or_default();
        for (t, c) in &self.chains {
            shared.items.insert(chain_item(t, c));
        }
        model
    }

    /// `live` as groups: what of it is ours, by the service port that
    /// wants it.
    pub fn live_model(&self, live: &IpvsRules) -> Model {
        let mut by_vs: BTreeMap<(IpvsProtocol, SocketAddr), (&str, BTreeSet<SocketAddr>)> =
            BTreeMap::new();
        let mut by_entry: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        let mut by_ip: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
        for (name, port) in &self.ports {
            for vs in &port.virtual_servers {
                let reals = vs.reals.iter().map(|r| r.address).collect();
                by_vs.insert((vs.protocol, vs.address), (name, reals));
            }
            for (set, entry) in &port.set_entries {
                by_entry.entry((set, entry)).or_default().push(name);
            }
            for ip in &port.bound {
                by_ip.entry(*ip).or_default().push(name);
            }
        }
        let bound: BTreeSet<IpAddr> = live
            .bound
            .iter()
            .filter(|ip| IpFamily::of(ip) == self.family)
            .copied()
            .collect();
        let mut model = Model::new();
        for vs in &live.virtual_servers.servers {
            let ip = vs.address.ip();
            if IpFamily::of(&ip) != self.family {
                continue;
            }
            let none = BTreeSet::new();
            let (group, wanted_reals) = match by_vs.get(&(vs.protocol, vs.address)) {
                Some((name, reals)) => (name.to_string(), reals),
                None => {
                    let ours = (bound.contains(&ip) || self.node_ips.contains(&ip))
                        && !self.exclude_cidrs.iter().any(|c| c.contains(&ip));
                    if !ours {
                        continue;
                    }
                    (format!("{}/{}", vs.address, proto(vs.protocol)), &none)
                }
            };
            add_vs(model.entry(group).or_default(), vs, Some(wanted_reals));
        }
        for (set, contents) in &live.sets.sets {
            if !self.sets.contains(set) {
                continue;
            }
            for entry in &contents.entries {
                let item = set_item(set, entry);
                match by_entry.get(&(set.as_str(), entry.as_str())) {
                    Some(names) => {
                        for name in names {
                            model
                                .entry(name.to_string())
                                .or_default()
                                .items
                                .insert(item.clone());
                        }
                    }
                    None => {
                        model
                            .entry(SHARED.to_string())
                            .or_default()
                            .items
                            .insert(item);
                    }
                }
            }
        }
        for ip in &bound {
            let item = bound_item(ip);
            match by_ip.get(ip) {
                Some(names) => {
                    for name in names {
                        model
                            .entry(name.to_string())
                            .or_default()
                            .items
                            .insert(item.clone());
                    }
                }
                None => {
                    model
                        .entry(SHARED.to_string())
                        .or_default()
                        .items
                        .insert(item);
                }
            }
        }
        let shared = model.entry(SHARED.to_string()).or_default();
        for (t, c) in &self.chains {
            let present = live
                .tables
                .table(t)
                .is_some_and(|table| table.chains.contains_key(c));
            if present {
                shared.items.insert(chain_item(t, c));
            }
        }
        model
    }

    /// What differs between this state and `live`, per group (empty:
    /// equal).
    pub fn compare(&self, live: &IpvsRules) -> Vec<PortDiff> {
        differences(&self.model(), &self.live_model(live))
    }
}

/// The groups of `want` and `have` that differ.
pub fn differences(want: &Model, have: &Model) -> Vec<PortDiff> {
    let names: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    let empty = Group::default();
    let mut out = Vec::new();
    for name in names {
        let w = want.get(name).unwrap_or(&empty);
        let h = have.get(name).unwrap_or(&empty);
        if w == h {
            continue;
        }
        let status = if h.items.is_empty() {
            Status::Missing
        } else if w.items.is_empty() {
            Status::Extra
        } else {
            Status::Different
        };
        out.push(PortDiff {
            service_port: name.clone(),
            status,
            missing_rules: w.items.difference(&h.items).cloned().collect(),
            extra_rules: h.items.difference(&w.items).cloned().collect(),
            missing_endpoints: w.endpoints.difference(&h.endpoints).copied().collect(),
            extra_endpoints: h.endpoints.difference(&w.endpoints).copied().collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proxy_core::conformance::load_scenarios;
    use proxy_core::exec::SystemExecutor;

    use super::*;
    use crate::host::SystemHost;
    use crate::trace::VirtualServerTable;
    use crate::trace::live::{Listings, rules_of};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The wanted state of a conformance scenario, node ports on 10.0.0.1.
    fn wanted(scenario: &str) -> WantedState {
        let scenario = load_scenarios()
            .into_iter()
            .find(|s| s.name() == scenario)
            .unwrap();
        let backend = crate::IpvsBackend::new(
            scenario.context(),
            Arc::new(SystemExecutor::default()),
            Arc::new(SystemHost::default()),
        )
        .unwrap();
        backend.wanted(scenario.view(), BTreeSet::from([ip("10.0.0.1")]))
    }

    /// The listings of a kernel holding exactly `w`.
    fn listings(w: &WantedState) -> Listings {
        let servers = w
            .ports
            .values()
            .flat_map(|p| p.virtual_servers.iter().cloned())
            .collect();
        let mut ipset = String::new();
        for set in &w.sets {
            ipset.push_str(&format!("create {set} hash:ip,port family inet\n"));
        }
        let entries: BTreeSet<&(String, String)> =
            w.ports.values().flat_map(|p| &p.set_entries).collect();
        for (set, entry) in entries {
            ipset.push_str(&format!("add {set} {entry}\n"));
        }
        let mut iptables = String::new();
        for table in ["nat", "filter"] {
            iptables.push_str(&format!("*{table}\n"));
            for (t, c) in &w.chains {
                if t == table {
                    iptables.push_str(&format!(":{c} - [0:0]\n"));
                }
            }
            iptables.push_str("COMMIT\n");
        }
        Listings {
            ipvsadm: VirtualServerTable { servers }.to_ipvsadm(),
            ipset,
            iptables,
            bound: w.ports.values().flat_map(|p| p.bound.clone()).collect(),
        }
    }

    fn diff(w: &WantedState, l: &Listings) -> Vec<PortDiff> {
        w.compare(&rules_of(l).unwrap())
    }

    #[test]
    fn the_wanted_state_is_grouped_per_service_port() {
        let w = wanted("nodeport-local");
        let port = &w.ports["default/web:http"];
        let addresses: Vec<String> = port
            .virtual_servers
            .iter()
            .map(|v| v.address.to_string())
            .collect();
        assert_eq!(addresses, ["10.0.0.1:30080", "10.96.0.10:80"]);
        assert!(port.bound.contains(&ip("10.96.0.10")));
        assert!(
            port.set_entries
                .contains(&("KUBE-CLUSTER-IP".into(), "10.96.0.10,tcp:80".into()))
        );
        assert!(w.sets.contains("KUBE-NODE-PORT-LOCAL-TCP"));
        assert!(w.chains.contains(&("nat".into(), "KUBE-SERVICES".into())));
    }

    #[test]
    fn a_kernel_holding_the_wanted_state_is_equal() {
        for scenario in [
            "clusterip-basic",
            "clusterip-session-affinity",
            "nodeport-local",
            "external-ip-local",
            "loadbalancer-source-ranges",
        ] {
            let w = wanted(scenario);
            assert_eq!(diff(&w, &listings(&w)), [], "{scenario}");
        }
    }

    #[test]
    fn a_deleted_real_server_is_a_missing_endpoint_and_a_draining_one_no_difference() {
        let w = wanted("clusterip-basic");
        let mut l = listings(&w);
        let removed = l
            .ipvsadm
            .lines()
            .find(|line| line.starts_with("-a "))
            .unwrap()
            .to_string();
        let real: SocketAddr = removed.split_whitespace().nth(4).unwrap().parse().unwrap();
        l.ipvsadm = l.ipvsadm.replace(&format!("{removed}\n"), "");
        let d = diff(&w, &l);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].service_port, "default/web:http");
        assert_eq!(d[0].status, Status::Different);
        assert_eq!(d[0].missing_endpoints, BTreeSet::from([real]));
        assert_eq!(
            d[0].missing_rules,
            [format!("real server tcp 10.96.0.10:80 -> {real} weight 1")]
        );
        assert!(d[0].extra_rules.is_empty());

        // a real server no endpoint wants, at weight 0: draining
        let mut l = listings(&w);
        l.ipvsadm
            .push_str("-a -t 10.96.0.10:80 -r 10.244.9.9:8080 -m -w 0\n");
        assert_eq!(diff(&w, &l), []);
        // at weight 1: an extra endpoint
        let mut l = listings(&w);
        l.ipvsadm
            .push_str("-a -t 10.96.0.10:80 -r 10.244.9.9:8080 -m -w 1\n");
        let d = diff(&w, &l);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].extra_endpoints,
            BTreeSet::from(["10.244.9.9:8080".parse().unwrap()])
        );
        // a wanted one at weight 0 is different
        let mut l = listings(&w);
        l.ipvsadm = l
            .ipvsadm
            .replace(&removed, &removed.replace("-w 1", "-w 0"));
        let d = diff(&w, &l);
        assert_eq!(d[0].missing_endpoints, BTreeSet::from([real]));
        assert_eq!(
            d[0].extra_rules,
            [format!("real server tcp 10.96.0.10:80 -> {real} weight 0")]
        );
    }

    #[test]
    fn set_entries_addresses_and_virtual_servers_missing_or_extra_are_reported() {
        let w = wanted("clusterip-basic");
        let mut l = listings(&w);
        l.ipset = l
            .ipset
            .replace("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n", "");
        l.bound.clear();
        l.bound.push(ip("10.96.0.99"));
        l.ipvsadm.push_str("-A -t 10.96.0.99:443 -s rr\n");
        // another tool's virtual server, on an address that is not ours
        l.ipvsadm.push_str("-A -t 192.168.50.1:80 -s rr\n");
        let d = diff(&w, &l);
        let by_name: BTreeMap<&str, &PortDiff> =
            d.iter().map(|d| (d.service_port.as_str(), d)).collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["(shared)", "10.96.0.99:443/tcp", "default/web:http"],
            "{d:?}"
        );
        assert_eq!(
            by_name["default/web:http"].missing_rules,
            [
                "ipset KUBE-CLUSTER-IP 10.96.0.10,tcp:80",
                "kube-ipvs0 address 10.96.0.10"
            ]
        );
        assert_eq!(
            by_name["(shared)"].extra_rules,
            ["kube-ipvs0 address 10.96.0.99"]
        );
        assert_eq!(by_name["10.96.0.99:443/tcp"].status, Status::Extra);
        assert_eq!(
            by_name["10.96.0.99:443/tcp"].extra_rules,
            ["virtual server tcp 10.96.0.99:443 scheduler rr"]
        );
    }

    #[test]
    fn a_missing_chain_and_a_whole_missing_port_are_reported() {
        let w = wanted("clusterip-session-affinity");
        let mut l = listings(&w);
        l.iptables = l.iptables.replace(":KUBE-SERVICES - [0:0]\n", "");
        let d = diff(&w, &l);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].service_port, SHARED);
        assert_eq!(d[0].missing_rules, ["iptables chain -t nat KUBE-SERVICES"]);

        let empty = Listings {
            ipvsadm: String::new(),
            ipset: String::new(),
            iptables: String::new(),
            bound: Vec::new(),
        };
        let d = diff(&w, &empty);
        let port = d
            .iter()
            .find(|d| d.service_port == "default/web:http")
            .unwrap();
        assert_eq!(port.status, Status::Missing);
        assert!(
            port.missing_rules
                .contains(&"virtual server tcp 10.96.0.10:80 scheduler rr persistent 600".into()),
            "{:?}",
            port.missing_rules
        );
    }
}
