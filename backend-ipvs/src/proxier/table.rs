//! The desired state kept between syncs, one share per service port, so a
//! partial sync recomputes only the ports that changed and learns what that
//! did to the node-wide state: the virtual servers to diff, the
//! `kube-ipvs0` addresses to bind or unbind, and the ipset entries to add
//! or delete.
//!
//! Shared things are counted: two ports on one ClusterIP bind it once and
//! unbind it when the last goes; an ipset entry two ports produce stays
//! until neither does. The iptables rules depend on the table only through
//! which sets are filled and a few per-port rules (`KUBE-IPVS-OUT-FILTER`),
//! so [`Table::rules_shape`] gives a small [`Desired`] that renders the
//! same rules as the whole one (a test holds this over every conformance
//! scenario).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use proxy_core::{NodeView, ServicePortName};

use crate::netlink::ServiceKey;

use super::desired::{Desired, DesiredService};
use super::rules;

/// An ipset entry: the set and the entry as `ipset` writes it.
pub(crate) type SetEntry = (&'static str, String);

/// One service port's share of the desired state.
#[derive(Debug)]
struct PortShare {
    desired: Desired,
    entries: Vec<SetEntry>,
}

impl PortShare {
    fn of(desired: Desired) -> Self {
        let entries = rules::ipset_entries(&desired)
            .into_iter()
            .flat_map(|(set, members)| members.into_iter().map(move |m| (set, m)))
            .collect();
        PortShare { desired, entries }
    }

    /// Whether the port has iptables rules of its own (not only set
    /// entries): a load balancer the node may not reach.
    fn has_own_rules(&self) -> bool {
        !self.desired.lb_no_node_access.is_empty()
    }
}

/// What changing some ports did to the node-wide state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TableDelta {
    /// The virtual servers of the changed ports, before and after.
    pub(crate) keys: BTreeSet<ServiceKey>,
    /// Addresses no port had before and one has now.
    pub(crate) vips_added: BTreeSet<IpAddr>,
    /// Addresses a port had before and none has now.
    pub(crate) vips_removed: BTreeSet<IpAddr>,
    /// Set entries no port had before and one has now.
    pub(crate) entries_added: BTreeSet<SetEntry>,
    /// Set entries a port had before and none has now.
    pub(crate) entries_removed: BTreeSet<SetEntry>,
}

impl TableDelta {
    /// The `ipset restore` input applying the entry changes (empty when
    /// there are none). `-exist`: an entry already there (or already gone)
    /// is not an error.
    pub(crate) fn ipset_restore(&self) -> String {
        let mut out = String::new();
        for (verb, entries) in [("del", &self.entries_removed), ("add", &self.entries_added)] {
            for (set, entry) in entries {
                out.push_str(&format!("{verb} {set} {entry} -exist\n"));
            }
        }
        out
    }
}

/// Presence of the things a change touched, before it.
#[derive(Default)]
struct Before {
    vips: HashMap<IpAddr, bool>,
    entries: HashMap<SetEntry, bool>,
}

/// The desired state of every service port of a view, kept per port.
#[derive(Debug)]
pub(crate) struct Table {
    scheduler: String,
    node_ips: BTreeSet<IpAddr>,
    primary_ip: Option<IpAddr>,
    ports: HashMap<ServicePortName, PortShare>,
    /// How many ports bind each address.
    vips: HashMap<IpAddr, u32>,
    /// The ports of each virtual server (one unless two ports collide;
    /// then the last one's wins, as in [`Desired::of`]).
    services: BTreeMap<ServiceKey, BTreeSet<ServicePortName>>,
    /// How many ports produce each set entry.
    entries: HashMap<SetEntry, u32>,
    /// The ports with entries in each set.
    set_ports: BTreeMap<&'static str, BTreeSet<ServicePortName>>,
    /// The ports with iptables rules of their own.
    own_rules: BTreeSet<ServicePortName>,
    /// How many distinct entries each set holds.
    set_sizes: HashMap<&'static str, usize>,
}

impl Table {
    /// The table of every port of `view`, node ports on `node_ips`.
    pub(crate) fn build(
        view: &NodeView,
        scheduler: &str,
        node_ips: &BTreeSet<IpAddr>,
        primary_ip: Option<IpAddr>,
    ) -> Table {
        let mut table = Table {
            scheduler: scheduler.to_string(),
            node_ips: node_ips.clone(),
            primary_ip,
            ports: HashMap::with_capacity(view.len()),
            vips: HashMap::new(),
            services: BTreeMap::new(),
            entries: HashMap::new(),
            set_ports: BTreeMap::new(),
            own_rules: BTreeSet::new(),
            set_sizes: HashMap::new(),
        };
        for (name, port_view) in view.iter() {
            let share = PortShare::of(Desired::of_port(
                name, port_view, scheduler, node_ips, primary_ip,
            ));
            table.add(name, share, None);
        }
        table
    }

    /// Recomputes `ports` from `view` (a port `view` lacks is removed) and
    /// says what changed.
    pub(crate) fn update<'a>(
        &mut self,
        view: &NodeView,
        ports: impl IntoIterator<Item = &'a ServicePortName>,
    ) -> TableDelta {
        let mut delta = TableDelta::default();
        let mut before = Before::default();
        for name in ports {
            if let Some(old) = self.ports.remove(name) {
                delta.keys.extend(old.desired.services.keys().copied());
                self.remove(name, &old, &mut before);
            }
            if let Some(port_view) = view.get(name) {
                let share = PortShare::of(Desired::of_port(
                    name,
                    port_view,
                    &self.scheduler,
                    &self.node_ips,
                    self.primary_ip,
                ));
                delta.keys.extend(share.desired.services.keys().copied());
                self.add(name, share, Some(&mut before));
            }
        }
        for (ip, was) in before.vips {
            match (was, self.vips.contains_key(&ip)) {
                (false, true) => delta.vips_added.insert(ip),
                (true, false) => delta.vips_removed.insert(ip),
                _ => false,
            };
        }
        for (entry, was) in before.entries {
            match (was, self.entries.contains_key(&entry)) {
                (false, true) => delta.entries_added.insert(entry),
                (true, false) => delta.entries_removed.insert(entry),
                _ => false,
            };
        }
        delta
    }

    /// Adds `name`'s share; `before` (when a delta is wanted) records what
    /// was there before.
    fn add(&mut self, name: &ServicePortName, share: PortShare, mut before: Option<&mut Before>) {
        for ip in &share.desired.vips {
            let count = self.vips.entry(*ip).or_insert(0);
            if let Some(before) = before.as_mut() {
                before.vips.entry(*ip).or_insert(*count > 0);
            }
            *count += 1;
        }
        for key in share.desired.services.keys() {
            self.services.entry(*key).or_default().insert(name.clone());
        }
        let mut sets: Vec<&'static str> = Vec::new();
        for entry in &share.entries {
            let count = match self.entries.get_mut(entry) {
                Some(count) => count,
                None => self.entries.entry(entry.clone()).or_insert(0),
            };
            if let Some(before) = before.as_mut() {
                before.entries.entry(entry.clone()).or_insert(*count > 0);
            }
            if *count == 0 {
                *self.set_sizes.entry(entry.0).or_insert(0) += 1;
            }
            *count += 1;
            if !sets.contains(&entry.0) {
                sets.push(entry.0);
            }
        }
        for set in sets {
            self.set_ports.entry(set).or_default().insert(name.clone());
        }
        if share.has_own_rules() {
            self.own_rules.insert(name.clone());
        }
        self.ports.insert(name.clone(), share);
    }

    fn remove(&mut self, name: &ServicePortName, share: &PortShare, before: &mut Before) {
        for ip in &share.desired.vips {
            if let Some(count) = self.vips.get_mut(ip) {
                before.vips.entry(*ip).or_insert(true);
                *count -= 1;
                if *count == 0 {
                    self.vips.remove(ip);
                }
            }
        }
        for key in share.desired.services.keys() {
            if let Some(owners) = self.services.get_mut(key) {
                owners.remove(name);
                if owners.is_empty() {
                    self.services.remove(key);
                }
            }
        }
        for entry in &share.entries {
            if let Some(count) = self.entries.get_mut(entry) {
                before.entries.entry(entry.clone()).or_insert(true);
                *count -= 1;
                if *count == 0 {
                    self.entries.remove(entry);
                    if let Some(size) = self.set_sizes.get_mut(entry.0) {
                        *size = size.saturating_sub(1);
                    }
                }
            }
            if let Some(ports) = self.set_ports.get_mut(entry.0) {
                ports.remove(name);
                if ports.is_empty() {
                    self.set_ports.remove(entry.0);
                }
            }
        }
        self.own_rules.remove(name);
    }

    /// The node IPs node ports are served on.
    pub(crate) fn node_ips(&self) -> &BTreeSet<IpAddr> {
        &self.node_ips
    }

    /// Whether a port binds `ip` to `kube-ipvs0`.
    pub(crate) fn has_vip(&self, ip: &IpAddr) -> bool {
        self.vips.contains_key(ip)
    }

    /// Every address to bind to `kube-ipvs0`.
    pub(crate) fn vips(&self) -> BTreeSet<IpAddr> {
        self.vips.keys().copied().collect()
    }

    /// How many virtual servers the table holds.
    pub(crate) fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The desired virtual server `key`, if a port has it.
    pub(crate) fn service(&self, key: &ServiceKey) -> Option<&DesiredService> {
        let owner = self.services.get(key)?.last()?;
        self.ports.get(owner)?.desired.services.get(key)
    }

    /// Up to `n` desired virtual servers in key order, after `after`
    /// (from the first: `None`).
    pub(crate) fn services_after(
        &self,
        after: Option<&ServiceKey>,
        n: usize,
    ) -> Vec<(ServiceKey, &DesiredService)> {
        let keys: Box<dyn Iterator<Item = &ServiceKey>> = match after {
            Some(after) => Box::new(
                self.services
                    .range((
                        std::ops::Bound::Excluded(*after),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(k, _)| k),
            ),
            None => Box::new(self.services.keys()),
        };
        keys.filter_map(|k| self.service(k).map(|s| (*k, s)))
            .take(n)
            .collect()
    }

    /// The desired virtual servers among `keys` (every one: `None`).
    pub(crate) fn services(
        &self,
        keys: Option<&BTreeSet<ServiceKey>>,
    ) -> BTreeMap<ServiceKey, DesiredService> {
        let pick = |key: &ServiceKey| self.service(key).map(|s| (*key, s.clone()));
        match keys {
            Some(keys) => keys.iter().filter_map(pick).collect(),
            None => self.services.keys().filter_map(pick).collect(),
        }
    }

    /// Every set with how many entries the table puts in it, in
    /// `ipset restore` order.
    pub(crate) fn set_sizes(&self) -> Vec<(&'static str, usize)> {
        rules::ipset_entries(&Desired::default())
            .into_iter()
            .map(|(set, _)| (set, self.set_sizes.get(set).copied().unwrap_or(0)))
            .collect()
    }

    /// The `ipset restore` input that creates every set and makes its
    /// content exactly the table's (full syncs).
    pub(crate) fn ipset_restore(&self) -> String {
        let mut sets = rules::ipset_entries(&Desired::default());
        for (set, entry) in self.entries.keys() {
            if let Some((_, members)) = sets.iter_mut().find(|(name, _)| name == set) {
                members.insert(entry.clone());
            }
        }
        rules::ipset_restore(&sets)
    }

    /// A small desired state whose iptables rules are the whole table's:
    /// one port of each filled set, and every port with rules of its own.
    pub(crate) fn rules_shape(&self) -> Desired {
        let mut names: BTreeSet<&ServicePortName> = self.own_rules.iter().collect();
        names.extend(self.set_ports.values().filter_map(|ports| ports.first()));
        let mut shape = Desired {
            node_ips: self.node_ips.clone(),
            ..Desired::default()
        };
        for name in names {
            if let Some(share) = self.ports.get(name) {
                shape.merge(&share.desired);
            }
        }
        shape
    }
}

#[cfg(test)]
mod tests {
    use backend_iptables::render::RenderConfig;
    use proxy_core::backend::BackendContext;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use proxy_core::conformance::load_scenarios;
    use proxy_core::{IpFamily, NodeInfo, Protocol, ServiceKey as Svc, ServiceTopology};

    use crate::netlink::IpvsProtocol;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node() -> Arc<NodeInfo> {
        let mut node = NodeInfo::named("node-a");
        node.addresses = vec![ip("10.0.0.1")];
        Arc::new(node)
    }

    /// Service `name` on `cluster_ip` with TCP `ports` (named `p<port>`)
    /// and a node port for each, endpoints `endpoints` (on `node-a` when
    /// `local`).
    fn apply(
        topology: &mut ServiceTopology,
        name: &str,
        cluster_ip: &str,
        ports: &[u16],
        endpoints: &[(&str, bool)],
    ) {
        let service_ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|p| serde_json::json!({"name": format!("p{p}"), "port": p, "targetPort": 8080, "protocol": "TCP", "nodePort": 30000 + p}))
            .collect();
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "t"},
            "spec": {"type": "NodePort", "clusterIP": cluster_ip, "ports": service_ports}
        }))
        .unwrap();
        assert!(topology.apply_service(&service).errors.is_empty());
        let eps: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(ip, local)| serde_json::json!({"addresses": [ip], "nodeName": if *local { "node-a" } else { "node-b" }, "conditions": {"ready": true}}))
            .collect();
        let slice_ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|p| serde_json::json!({"name": format!("p{p}"), "port": 8080, "protocol": "TCP"}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "t",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": slice_ports,
            "endpoints": eps
        }))
        .unwrap();
        assert!(topology.apply_endpoint_slice(&slice).errors.is_empty());
    }

    fn port(service: &str, port: u16) -> ServicePortName {
        ServicePortName {
            service: Svc::new("t", service),
            port: format!("p{port}"),
            protocol: Protocol::Tcp,
        }
    }

    fn view(topology: &ServiceTopology) -> NodeView {
        NodeView::build(topology, node(), IpFamily::V4)
    }

    fn key(address: &str, port: u16) -> ServiceKey {
        ServiceKey {
            address: ip(address),
            protocol: IpvsProtocol::Tcp,
            port,
        }
    }

    fn entry(set: &'static str, entry: &str) -> SetEntry {
        (set, entry.to_string())
    }

    fn node_ips() -> BTreeSet<IpAddr> {
        BTreeSet::from([ip("10.0.0.1")])
    }

    /// The table after updates equals one built from scratch.
    fn assert_same(table: &Table, view: &NodeView) {
        let built = Table::build(view, "rr", &node_ips(), None);
        assert_eq!(table.vips(), built.vips());
        assert_eq!(table.services(None), built.services(None));
        assert_eq!(table.ipset_restore(), built.ipset_restore());
        assert_eq!(table.rules_shape(), built.rules_shape());
        assert_eq!(table.set_sizes(), built.set_sizes());
    }

    #[test]
    fn an_endpoint_change_touches_its_virtual_servers_and_nothing_else() {
        let mut topology = ServiceTopology::new();
        apply(
            &mut topology,
            "a",
            "10.96.0.1",
            &[80],
            &[("10.244.2.1", false)],
        );
        apply(
            &mut topology,
            "b",
            "10.96.0.2",
            &[80],
            &[("10.244.2.2", false)],
        );
        let mut table = Table::build(&view(&topology), "rr", &node_ips(), None);
        apply(
            &mut topology,
            "a",
            "10.96.0.1",
            &[80],
            &[("10.244.2.9", false)],
        );
        let after = view(&topology);
        let delta = table.update(&after, [&port("a", 80)]);
        assert_eq!(
            delta,
            TableDelta {
                keys: BTreeSet::from([key("10.96.0.1", 80), key("10.0.0.1", 30080)]),
                ..TableDelta::default()
            },
            "no address and no set entry changes"
        );
        assert_eq!(delta.ipset_restore(), "");
        let servers: Vec<IpAddr> = table
            .service(&key("10.96.0.1", 80))
            .unwrap()
            .servers
            .keys()
            .map(|(ip, _)| *ip)
            .collect();
        assert_eq!(servers, [ip("10.244.2.9")]);
        assert_same(&table, &after);
    }

    #[test]
    fn a_shared_address_and_set_entry_stay_until_their_last_port_goes() {
        let mut topology = ServiceTopology::new();
        apply(
            &mut topology,
            "a",
            "10.96.0.1",
            &[80, 443],
            &[("10.244.1.5", true)],
        );
        let mut table = Table::build(&view(&topology), "rr", &node_ips(), None);
        // port 443 goes: the ClusterIP and the hairpin entry stay (port 80
        // has them too), its own entries go
        apply(
            &mut topology,
            "a",
            "10.96.0.1",
            &[80],
            &[("10.244.1.5", true)],
        );
        let one = view(&topology);
        let delta = table.update(&one, [&port("a", 443)]);
        assert!(delta.vips_removed.is_empty() && delta.vips_added.is_empty());
        assert!(delta.entries_added.is_empty());
        assert_eq!(
            delta.entries_removed,
            BTreeSet::from([
                entry("KUBE-CLUSTER-IP", "10.96.0.1,tcp:443"),
                entry("KUBE-NODE-PORT-TCP", "30443"),
            ])
        );
        assert_eq!(
            delta.ipset_restore(),
            "del KUBE-CLUSTER-IP 10.96.0.1,tcp:443 -exist\ndel KUBE-NODE-PORT-TCP 30443 -exist\n"
        );
        assert!(table.has_vip(&ip("10.96.0.1")));
        assert_same(&table, &one);
        // the service goes, a new one comes: its address bound, entries added
        topology.delete_service("t", "a");
        apply(&mut topology, "c", "10.96.0.3", &[53], &[]);
        let other = view(&topology);
        let delta = table.update(&other, [&port("a", 80), &port("c", 53)]);
        assert_eq!(delta.vips_removed, BTreeSet::from([ip("10.96.0.1")]));
        assert_eq!(delta.vips_added, BTreeSet::from([ip("10.96.0.3")]));
        assert!(
            delta
                .entries_removed
                .contains(&entry("KUBE-LOOP-BACK", "10.244.1.5,tcp:8080,10.244.1.5"))
        );
        assert!(
            delta
                .entries_removed
                .contains(&entry("KUBE-IPVS-IPS", "10.96.0.1"))
        );
        assert!(
            delta
                .entries_added
                .contains(&entry("KUBE-IPVS-IPS", "10.96.0.3"))
        );
        assert_eq!(
            delta.keys,
            BTreeSet::from([
                key("10.96.0.1", 80),
                key("10.0.0.1", 30080),
                key("10.96.0.3", 53),
                key("10.0.0.1", 30053)
            ])
        );
        assert_same(&table, &other);
    }

    #[test]
    fn a_port_that_changes_back_and_forth_in_one_update_changes_nothing() {
        let mut topology = ServiceTopology::new();
        apply(&mut topology, "a", "10.96.0.1", &[80], &[]);
        apply(&mut topology, "b", "10.96.0.1", &[81], &[]);
        let v = view(&topology);
        let mut table = Table::build(&v, "rr", &node_ips(), None);
        // recomputing unchanged ports (both on one address) changes nothing
        let delta = table.update(&v, [&port("a", 80), &port("b", 81)]);
        assert!(delta.vips_added.is_empty() && delta.vips_removed.is_empty());
        assert!(delta.entries_added.is_empty() && delta.entries_removed.is_empty());
        assert_eq!(delta.keys.len(), 4);
        assert_same(&table, &v);
    }

    #[test]
    fn the_rules_of_the_shape_are_the_rules_of_the_whole_table() {
        let ctx = BackendContext::for_tests(IpFamily::V4, NodeInfo::named("n").shared());
        let config = RenderConfig::from_context(&ctx);
        let node_ips = BTreeSet::from([ip("10.0.0.1"), ip("10.244.1.1")]);
        let scenarios = load_scenarios();
        assert!(scenarios.len() > 20);
        for scenario in scenarios {
            for primary in [None, Some(ip("203.0.113.5")), Some(ip("10.0.0.1"))] {
                let view = scenario.view();
                let whole = Desired::of(view, "rr", &node_ips, primary);
                let table = Table::build(view, "rr", &node_ips, primary);
                assert_eq!(
                    rules::iptables_restore(&config, &table.rules_shape(), true),
                    rules::iptables_restore(&config, &whole, true),
                    "{}",
                    scenario.name()
                );
                assert_eq!(
                    table.ipset_restore(),
                    rules::ipset_restore(&rules::ipset_entries(&whole)),
                    "{}",
                    scenario.name()
                );
                let sizes: Vec<(&str, usize)> = rules::ipset_entries(&whole)
                    .iter()
                    .map(|(set, entries)| (*set, entries.len()))
                    .collect();
                assert_eq!(table.set_sizes(), sizes, "{}", scenario.name());
                assert_eq!(table.vips(), whole.vips, "{}", scenario.name());
                assert_eq!(table.services(None), whole.services, "{}", scenario.name());
            }
        }
    }
}
