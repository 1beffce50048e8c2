//! [`NodeTopology`]: the node, its pods and the rest of the world as
//! network namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::backend::{BackendContext, BackendError};
use crate::model::Protocol;
use crate::view::NodeView;

use super::Netns;
use super::addressing::{
    BRIDGE_MAC, FALLBACK_POD_GATEWAY_V4, FALLBACK_POD_GATEWAY_V6, LOCAL_RULE_PREF, NODE_LINK_V6,
    NODE_UPLINK_V4, REMOTE_REPLY_RULE_PREF, REMOTE_REPLY_TABLE, ROUTER_V4, ROUTER_V6,
    UNREACHABLE_TABLE, default_prefix, host_prefix, nodad, pod_gateway, service_cidrs,
};
use super::echo::{EchoServers, Transport};
use super::ip::{BASELINE_SYSCTLS, IpBatch, NODE_SYSCTLS, ip_line, set_sysctls};
use super::source_ports::SourcePorts;

/// One node as network namespaces, grown from the [`NodeView`]s it serves:
///
/// ```text
///  pod netns (one per local endpoint IP / local client IP)
///    eth0 10.244.1.10/24, default via 10.244.1.1
///      | veth<N> (hairpin on)
///  node netns: cbr0 10.244.1.1/24 (bridge) … eth0 <node addresses>/32
///      | uplink; default via 169.254.77.1 / fe80::1
///  lan netns: node0 169.254.77.1, fe80::1; lo: remote endpoints, external
///      clients; routes pod CIDRs and every VIP via the node
/// ```
///
/// `lan` stands for the other nodes, the router and the outside world.
/// Unmatched traffic fails fast: the node routes it to `lan` like a real
/// node routes to its gateway, and `lan` answers whatever comes from the
/// node for an address it does not hold with ICMP host unreachable
/// (`EHOSTUNREACH`); traffic to a node-local port that no backend owns
/// reaches a host echo server (see [`NodeTopology::prepare_send`]).
///
/// Every namespace is anonymous; dropping the topology stops the echo
/// servers and destroys everything.
pub struct NodeTopology {
    // Dropped first: closes every echo socket, which would otherwise keep
    // its namespace alive.
    echo: EchoServers,
    pods: BTreeMap<IpAddr, Pod>,
    node: Netns,
    lan: Netns,
    node_addresses: Vec<IpAddr>,
    pod_cidrs: Vec<IpNet>,
    lan_addresses: BTreeSet<IpAddr>,
    replies_via_node: BTreeSet<IpAddr>,
    vips: BTreeSet<IpAddr>,
    next_veth: usize,
    /// The kernel makes SCTP sockets: endpoints get SCTP echo servers too.
    sctp: bool,
    /// Where the clients' next source port comes from.
    pub(super) source_ports: SourcePorts,
}

/// A pod: its namespace and the host end of its veth.
struct Pod {
    ns: Netns,
    veth: String,
}

/// Where a packet's client socket lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPlace {
    /// The node namespace (a process on the node).
    Node,
    /// The pod namespace holding this IP.
    Pod(IpAddr),
    /// The `lan` namespace (another node, or outside the cluster).
    Lan,
}

impl NodeTopology {
    /// Builds the node and `lan` namespaces for `ctx`: the node's
    /// addresses on the uplink, the bridge with a gateway per pod CIDR of
    /// the node, the sysctls and the routes. No pod yet.
    pub fn new(ctx: &BackendContext) -> Result<Self, BackendError> {
        let netns_error = |what: &str| {
            let what = what.to_string();
            move |e| {
                BackendError::unsupported(format!("cannot create the {what} network namespace"))
                    .with_source(e)
            }
        };
        let node = Netns::new().map_err(netns_error("node"))?;
        let lan = Netns::new().map_err(netns_error("lan"))?;
        set_sysctls(&node, "node", BASELINE_SYSCTLS)?;
        set_sysctls(&node, "node", NODE_SYSCTLS)?;
        set_sysctls(&lan, "lan", BASELINE_SYSCTLS)?;
        // Without forwarding, the kernel drops packets to unreachable
        // routes silently instead of answering with ICMP.
        set_sysctls(
            &lan,
            "lan",
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ],
        )?;
        let topology = NodeTopology {
            echo: EchoServers::new().map_err(|e| {
                BackendError::unsupported("cannot start the echo server runtime").with_source(e)
            })?,
            pods: BTreeMap::new(),
            node,
            lan,
            node_addresses: ctx.node.addresses.clone(),
            pod_cidrs: ctx.node.pod_cidrs.clone(),
            lan_addresses: BTreeSet::new(),
            replies_via_node: BTreeSet::new(),
            vips: BTreeSet::new(),
            next_veth: 0,
            sctp: super::sctp::kernel_has_sctp(),
            source_ports: SourcePorts::default(),
        };
        topology.wire_uplink()?;
        tracing::debug!(node = ?topology.node_addresses, pod_cidrs = ?topology.pod_cidrs, "node topology ready");
        Ok(topology)
    }

    fn wire_uplink(&self) -> Result<(), BackendError> {
        let mut lan = IpBatch::new();
        ip_line!(lan, "link set lo up");
        ip_line!(
            lan,
            "link add node0 type veth peer name eth0 netns {}",
            self.node.path().display()
        );
        ip_line!(lan, "addr add {ROUTER_V4}/32 dev node0");
        ip_line!(lan, "addr add {ROUTER_V6}/64 dev node0 nodad");
        ip_line!(lan, "link set node0 up");
        ip_line!(lan, "route add {NODE_UPLINK_V4}/32 dev node0");
        for &ip in &self.node_addresses {
            ip_line!(lan, "route add {} dev node0", host_prefix(ip));
        }
        for &cidr in &self.pod_cidrs {
            if let Some(via) = self.node_gateway_for(cidr.addr()) {
                ip_line!(lan, "route add {cidr} via {via} dev node0");
            }
        }
        for cidr in service_cidrs() {
            if let Some(via) = self.node_gateway_for(cidr.addr()) {
                ip_line!(lan, "route add {cidr} via {via} dev node0");
            }
        }
        // What the node sends back to lan and lan does not hold is
        // unreachable: unmatched service traffic gets EHOSTUNREACH at once,
        // and a VIP cannot loop between node and lan. Traffic from lan's
        // own clients (iif lo) still follows main towards the node.
        ip_line!(
            lan,
            "route add unreachable 0.0.0.0/0 table {UNREACHABLE_TABLE}"
        );
        ip_line!(lan, "route add unreachable ::/0 table {UNREACHABLE_TABLE}");
        // Remote endpoints answer through the node (see `add_endpoints`):
        // their own rule, ahead of the local table, which moves behind it.
        if let Some(via) = self.node_gateway_for(IpAddr::V4(ROUTER_V4)) {
            ip_line!(
                lan,
                "route add default via {via} dev node0 table {REMOTE_REPLY_TABLE}"
            );
        }
        ip_line!(
            lan,
            "route add ::/0 via {NODE_LINK_V6} dev node0 table {REMOTE_REPLY_TABLE}"
        );
        lan.run(&self.lan, "lan")?;
        for family in [IpBatch::new(), IpBatch::ipv6()] {
            let mut rules = family;
            ip_line!(
                rules,
                "rule add pref 100 iif node0 lookup {UNREACHABLE_TABLE}"
            );
            ip_line!(rules, "rule add pref {LOCAL_RULE_PREF} lookup local");
            ip_line!(rules, "rule del pref 0 lookup local");
            rules.run(&self.lan, "lan")?;
        }

        // The node routes like a real one: everything it does not hold goes
        // to the default gateway. (An `unreachable` route here would stop
        // locally generated packets before the nat OUTPUT hook and forwarded
        // ones before the FORWARD REJECT of services without endpoints.)
        let mut node = IpBatch::new();
        ip_line!(node, "link set lo up");
        // First, so that it is the primary address MASQUERADE picks.
        ip_line!(node, "addr add {NODE_UPLINK_V4}/32 dev eth0");
        for &ip in &self.node_addresses {
            ip_line!(node, "addr add {} dev eth0{}", host_prefix(ip), nodad(ip));
        }
        ip_line!(node, "addr add {NODE_LINK_V6}/64 dev eth0 nodad");
        ip_line!(node, "link set eth0 up");
        ip_line!(node, "route add {ROUTER_V4}/32 dev eth0");
        ip_line!(node, "route add default via {ROUTER_V4} dev eth0");
        ip_line!(node, "route add ::/0 via {ROUTER_V6} dev eth0");
        ip_line!(node, "link add cbr0 address {BRIDGE_MAC} type bridge");
        for &cidr in &self.pod_cidrs {
            let gateway = pod_gateway(cidr);
            ip_line!(
                node,
                "addr add {gateway}/{} dev cbr0{}",
                cidr.prefix_len(),
                nodad(gateway)
            );
        }
        ip_line!(node, "link set cbr0 up");
        node.run(&self.node, "node")
    }

    /// The node namespace: where the backend's rules go.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The `lan` namespace: other nodes, the router, the outside world.
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// The pod namespace holding `ip`, if one was created.
    pub fn pod(&self, ip: IpAddr) -> Option<&Netns> {
        self.pods.get(&ip).map(|p| &p.ns)
    }

    /// The namespace of a [`ClientPlace`], if it exists.
    pub fn place(&self, place: ClientPlace) -> Option<&Netns> {
        match place {
            ClientPlace::Node => Some(&self.node),
            ClientPlace::Pod(ip) => self.pod(ip),
            ClientPlace::Lan => Some(&self.lan),
        }
    }

    /// The node's addresses.
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node_addresses
    }

    /// Grows the topology for `view` (it never shrinks: a removed endpoint
    /// keeps answering, so a backend that still sends to it is caught):
    /// a pod namespace with echo servers per local endpoint IP, an address
    /// on `lan`'s `lo` with echo servers per remote endpoint, routes in
    /// `lan` for every VIP, and the unreachable route in the node for VIPs
    /// outside the ClusterIP ranges.
    pub fn grow(&mut self, view: &NodeView) -> Result<(), BackendError> {
        let mut local = BTreeSet::new();
        let mut remote = BTreeSet::new();
        let mut vips = BTreeSet::new();
        for (_, port) in view.iter() {
            let sp = &port.port;
            vips.insert(sp.cluster_ip);
            vips.extend(sp.external_ips.iter().copied());
            vips.extend(sp.load_balancer_ips.iter().copied());
            for endpoint in port.all_endpoints().filter(|e| e.port != 0) {
                if endpoint.is_local {
                    local.insert(endpoint.socket_addr());
                } else {
                    remote.insert(endpoint.socket_addr());
                }
            }
        }
        self.add_endpoints(&local, &remote)?;
        self.add_vips(&vips)
    }

    /// Adds endpoints with their echo servers (TCP and UDP on each
    /// address): `local` ones in a pod namespace per IP (or in the node
    /// namespace when the IP is a node address: host-network endpoints),
    /// `remote` ones on `lan`'s `lo`. Known ones are skipped.
    ///
    /// What a remote endpoint sends goes through the node, even to a client
    /// that `lan` holds itself: a reply to a connection the node DNATed
    /// without masquerading must pass the node's conntrack to be un-DNATed,
    /// as it would when the client, the remote node and the node under
    /// test are three machines behind one router.
    pub fn add_endpoints(
        &mut self,
        local: &BTreeSet<SocketAddr>,
        remote: &BTreeSet<SocketAddr>,
    ) -> Result<(), BackendError> {
        let pod_ips: BTreeSet<IpAddr> = local
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !self.is_node_address(*ip))
            .collect();
        self.ensure_pods(&pod_ips.into_iter().collect::<Vec<_>>())?;
        let lan_ips: Vec<IpAddr> = remote
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !self.is_node_address(*ip) && !self.pods.contains_key(ip))
            .collect();
        self.ensure_lan_addresses(&lan_ips)?;
        self.route_replies_through_node(&lan_ips)?;
        for &addr in local.iter().chain(remote) {
            self.ensure_echo(addr)?;
        }
        Ok(())
    }

    /// Makes sure a client socket for `source` can exist at `place`, and
    /// that a packet to `destination` that no backend rule takes gives a
    /// distinct answer:
    ///
    /// - `Node`: `source` must be a node address, a pod gateway or loopback;
    /// - `Pod`: a pod namespace with `source` (reused when it is a local
    ///   endpoint: hairpin);
    /// - `Lan`: `source` on `lan`'s `lo`.
    ///
    /// When `destination` is a node-local address (node address, pod
    /// gateway, loopback), a host echo server is bound there in the node
    /// namespace (and kept): "not matched" then shows as an answer from the
    /// destination itself rather than as a refusal, which would look like a
    /// REJECT. It never sees traffic a backend matched: DNAT happens before
    /// the socket lookup and REJECT before delivery. If the port is taken (a
    /// userspace backend listening on it), the server is left out.
    pub fn prepare_send(
        &mut self,
        place: ClientPlace,
        source: IpAddr,
        protocol: Protocol,
        destination: SocketAddr,
    ) -> Result<(), BackendError> {
        match place {
            ClientPlace::Node => {
                if !self.is_node_local(source) {
                    return Err(BackendError::config(format!(
                        "a host packet's source {source} is not an address of the node ({:?}), a pod gateway or loopback",
                        self.node_addresses
                    )));
                }
            }
            ClientPlace::Pod(ip) => self.ensure_pods(&[ip])?,
            ClientPlace::Lan => self.ensure_lan_addresses(&[source])?,
        }
        let transport = match protocol {
            Protocol::Tcp => Transport::Tcp,
            Protocol::Udp => Transport::Udp,
            Protocol::Sctp if self.sctp => Transport::Sctp,
            Protocol::Sctp => return Ok(()),
        };
        if self.is_node_local(destination.ip()) {
            match self.echo.start(&self.node, destination, transport) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tracing::debug!(%destination, "port taken in the node namespace, no host echo server")
                }
                Err(e) => {
                    return Err(BackendError::dataplane(format!(
                        "cannot bind a host echo server on {destination}"
                    ))
                    .with_source(e));
                }
            }
        }
        Ok(())
    }

    fn is_node_address(&self, ip: IpAddr) -> bool {
        self.node_addresses.contains(&ip)
    }

    /// A node address, a pod gateway, or loopback.
    fn is_node_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self.is_node_address(ip)
            || self.pod_cidrs.iter().any(|&c| pod_gateway(c) == ip)
    }

    /// The address `lan` uses to reach `ip`'s family through the node.
    fn node_gateway_for(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.node_addresses.iter().copied().find(IpAddr::is_ipv4),
            IpAddr::V6(_) => Some(IpAddr::V6(NODE_LINK_V6)),
        }
    }

    /// `(gateway, prefix length, inside a pod CIDR)` for a pod IP.
    fn pod_addressing(&self, ip: IpAddr) -> (IpAddr, u8, bool) {
        match self.pod_cidrs.iter().find(|c| c.contains(&ip)) {
            Some(&cidr) => (pod_gateway(cidr), cidr.prefix_len(), true),
            None => match ip {
                IpAddr::V4(_) => (IpAddr::V4(FALLBACK_POD_GATEWAY_V4), 32, false),
                IpAddr::V6(_) => (IpAddr::V6(FALLBACK_POD_GATEWAY_V6), 128, false),
            },
        }
    }

    fn ensure_pods(&mut self, ips: &[IpAddr]) -> Result<(), BackendError> {
        let new: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| !self.pods.contains_key(ip))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut node = IpBatch::new();
        let mut created = Vec::with_capacity(new.len());
        for &ip in &new {
            let ns = Netns::new().map_err(|e| {
                BackendError::unsupported(format!("cannot create the namespace of pod {ip}"))
                    .with_source(e)
            })?;
            set_sysctls(&ns, "pod", BASELINE_SYSCTLS)?;
            let veth = format!("veth{}", self.next_veth);
            self.next_veth += 1;
            ip_line!(
                node,
                "link add {veth} type veth peer name eth0 netns {}",
                ns.path().display()
            );
            ip_line!(node, "link set {veth} master cbr0");
            ip_line!(node, "link set {veth} type bridge_slave hairpin on");
            ip_line!(node, "link set {veth} up");
            let (gateway, _, in_cidr) = self.pod_addressing(ip);
            if !in_cidr {
                ip_line!(node, "route add {} dev cbr0", host_prefix(ip));
                if !self.fallback_gateway_added(gateway) {
                    ip_line!(
                        node,
                        "addr add {} dev cbr0{}",
                        host_prefix(gateway),
                        nodad(gateway)
                    );
                }
            }
            created.push((ip, Pod { ns, veth }));
        }
        node.run(&self.node, "node")?;
        for (ip, pod) in created {
            let (gateway, prefix, in_cidr) = self.pod_addressing(ip);
            let mut batch = IpBatch::new();
            ip_line!(batch, "link set lo up");
            ip_line!(batch, "addr add {ip}/{prefix} dev eth0{}", nodad(ip));
            ip_line!(batch, "link set eth0 up");
            if !in_cidr {
                ip_line!(batch, "route add {} dev eth0", host_prefix(gateway));
            }
            ip_line!(
                batch,
                "route add {} via {gateway} dev eth0",
                default_prefix(ip)
            );
            batch.run(&pod.ns, &format!("pod {ip}"))?;
            tracing::debug!(%ip, veth = %pod.veth, "pod namespace ready");
            self.pods.insert(ip, pod);
        }
        Ok(())
    }

    /// Whether a pod outside the pod CIDRs already brought the fallback
    /// gateway of its family onto `cbr0`.
    fn fallback_gateway_added(&self, gateway: IpAddr) -> bool {
        self.pods.keys().any(|&ip| {
            let (g, _, in_cidr) = self.pod_addressing(ip);
            !in_cidr && g == gateway
        })
    }

    fn route_replies_through_node(&mut self, ips: &[IpAddr]) -> Result<(), BackendError> {
        let mut v4 = IpBatch::new();
        let mut v6 = IpBatch::ipv6();
        let mut added = Vec::new();
        for &ip in ips {
            if self.replies_via_node.contains(&ip) || added.contains(&ip) {
                continue;
            }
            let rules = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            ip_line!(
                rules,
                "rule add pref {REMOTE_REPLY_RULE_PREF} from {ip} iif lo lookup {REMOTE_REPLY_TABLE}"
            );
            added.push(ip);
        }
        v4.run(&self.lan, "lan")?;
        v6.run(&self.lan, "lan")?;
        self.replies_via_node.extend(added);
        Ok(())
    }

    fn ensure_lan_addresses(&mut self, ips: &[IpAddr]) -> Result<(), BackendError> {
        let mut batch = IpBatch::new();
        let mut added = Vec::new();
        for &ip in ips {
            if self.lan_addresses.contains(&ip) || added.contains(&ip) {
                continue;
            }
            ip_line!(batch, "addr add {} dev lo{}", host_prefix(ip), nodad(ip));
            added.push(ip);
        }
        batch.run(&self.lan, "lan")?;
        self.lan_addresses.extend(added);
        Ok(())
    }

    /// Routes VIPs (ClusterIPs, external IPs, load-balancer IPs) from
    /// `lan` through the node. Node addresses, addresses `lan` holds and
    /// known ones are skipped.
    pub fn add_vips(&mut self, vips: &BTreeSet<IpAddr>) -> Result<(), BackendError> {
        let mut lan = IpBatch::new();
        let mut added = Vec::new();
        for &vip in vips {
            if self.vips.contains(&vip)
                || self.is_node_address(vip)
                || self.lan_addresses.contains(&vip)
            {
                continue;
            }
            let Some(via) = self.node_gateway_for(vip) else {
                tracing::warn!(%vip, "the node has no address of this family: VIP not routed from lan");
                continue;
            };
            ip_line!(lan, "route add {} via {via} dev node0", host_prefix(vip));
            added.push(vip);
        }
        lan.run(&self.lan, "lan")?;
        self.vips.extend(added);
        Ok(())
    }

    /// Whether the kernel makes SCTP sockets (else SCTP cannot be probed).
    pub fn has_sctp(&self) -> bool {
        self.sctp
    }

    /// Echo servers (TCP and UDP, and SCTP when the kernel has it) for an
    /// endpoint, in the namespace that holds its IP.
    fn ensure_echo(&mut self, addr: SocketAddr) -> Result<(), BackendError> {
        let ns = if self.is_node_address(addr.ip()) {
            &self.node
        } else if let Some(pod) = self.pods.get(&addr.ip()) {
            &pod.ns
        } else {
            &self.lan
        };
        let sctp = self.sctp.then_some(Transport::Sctp);
        for transport in [Transport::Tcp, Transport::Udp].into_iter().chain(sctp) {
            self.echo.start(ns, addr, transport).map_err(|e| {
                BackendError::dataplane(format!("cannot bind the echo server of endpoint {addr}"))
                    .with_source(e)
            })?;
        }
        Ok(())
    }
}
