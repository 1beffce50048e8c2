//! The reference interpreter: what upstream kube-proxy in iptables mode does
//! with a packet, given the [`NodeView`] and the [`BackendContext`].
//!
//! It follows upstream's rules (`pkg/proxy/iptables/proxier.go`) rather than
//! any backend's data structures, so that a scenario file, the core's
//! [`NodeView`] and this interpreter can check each other:
//!
//! 1. **Capture** (nat `KUBE-SERVICES`): a packet to a ClusterIP, external
//!    IP or load-balancer IP on a service port's port and protocol, or to a
//!    node port on an address that serves node ports
//!    ([`BackendContext::node_port_cidrs`], `localhostNodePorts` for
//!    127.0.0.0/8, never `::1`).
//! 2. **Internal traffic** (ClusterIP) follows [`ServicePortView::internal`]:
//!    `Reject` (no endpoints at all), `Drop` (`internalTrafficPolicy: Local`
//!    without local endpoints) or the endpoints of the target. It is
//!    masqueraded with `masqueradeAll`, or, when a local-traffic detector is
//!    configured, when the detector does not call the packet local.
//! 3. **External traffic** (node port, external IP, load-balancer IP):
//!    `Reject` without endpoints; load-balancer IPs with
//!    `loadBalancerSourceRanges` drop sources outside the ranges (node ports
//!    bypass them; the load-balancer IPs themselves are allowed as sources
//!    when a range holds the node's primary IP). `externalTrafficPolicy:
//!    Cluster` masquerades and uses the cluster endpoints. `Local`
//!    short-circuits local pod traffic (only with a detector) to the cluster
//!    endpoints unmasqueraded, and host traffic (`--src-type LOCAL`) to the
//!    cluster endpoints masqueraded; everything else goes to the local
//!    endpoints unmasqueraded, or is dropped when there are none.
//! 4. **Hairpin**: every endpoint chain masquerades packets whose source is
//!    the endpoint itself.
//! 5. A node port without usable endpoints is rejected or dropped on *any*
//!    local address (the filter rules match `--dst-type LOCAL`), even one
//!    that does not serve node ports.
//!
//! **Hairpin with several endpoints.** The masquerade decision is taken per
//! endpoint: only the endpoint equal to the source masquerades. When the
//! candidate endpoints disagree, the packet has no single expected outcome;
//! [`Trace::ambiguous`] says so, [`expected`] reports the decision of the
//! endpoints that are *not* the source, and scenario files must not contain
//! such packets (the oracle test enforces it): give hairpin cases a single
//! endpoint.
//!
//! **Known differences with a real kernel, avoided by the scenarios.**
//! Host-originated packets to an external IP or load-balancer IP of a
//! service *without endpoints* are not rejected by real iptables (the filter
//! `KUBE-EXTERNAL-SERVICES` chain is not hooked into OUTPUT), while this
//! interpreter and upstream's own test tracer say `rejected`. With the
//! interface-based detectors, upstream nftables (`iif`) and iptables
//! (`! -i`) disagree on host-originated ClusterIP traffic; scenarios of those
//! modes send from pods and external clients only.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use crate::backend::{BackendContext, LocalTrafficDetector};
use crate::model::{Endpoint, ServicePortName};
use crate::view::{NodeView, ServicePortView, Target};

use super::packet::{Origin, Outcome, Packet};

/// Which kind of service address a packet was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A ClusterIP.
    ClusterIp,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// A load-balancer ingress IP.
    LoadBalancerIp,
    /// A node port on a local address.
    NodePort,
}

/// The outcome of a packet and how the interpreter got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// What happens to the packet.
    pub outcome: Outcome,
    /// The service port that captured the packet, if any.
    pub service_port: Option<ServicePortName>,
    /// What kind of address the packet was captured on.
    pub destination: Option<Destination>,
    /// Why, in upstream's terms (for failure messages).
    pub reason: &'static str,
    /// Whether the candidate endpoints disagree about masquerading (hairpin
    /// to one of several endpoints); see the module documentation.
    pub ambiguous: bool,
    /// Whether the local-traffic detector took part in the decision.
    pub used_detector: bool,
}

/// The outcome upstream iptables-mode kube-proxy gives `packet`.
pub fn expected(view: &NodeView, ctx: &BackendContext, packet: &Packet) -> Outcome {
    trace(view, ctx, packet).outcome
}

/// [`expected`], with the service port, the kind of destination and the
/// reason.
pub fn trace(view: &NodeView, ctx: &BackendContext, packet: &Packet) -> Trace {
    let mut t = Trace {
        outcome: Outcome::NotMatched,
        service_port: None,
        destination: None,
        reason: "no service address matches",
        ambiguous: false,
        used_detector: false,
    };
    if !ctx.family.contains(&packet.source) || !ctx.family.contains(&packet.destination) {
        t.reason = "not of this backend's IP family";
        return t;
    }

    // Service VIPs: ClusterIP, external IPs, load-balancer IPs. A valid
    // topology has no two ports on the same VIP, port and protocol.
    for (name, spv) in view.iter() {
        let port = &spv.port;
        if port.protocol != packet.protocol || port.port != packet.port {
            continue;
        }
        let destination = if port.cluster_ip == packet.destination {
            Destination::ClusterIp
        } else if port.external_ips.contains(&packet.destination) {
            Destination::ExternalIp
        } else if port.load_balancer_ips.contains(&packet.destination) {
            Destination::LoadBalancerIp
        } else {
            continue;
        };
        t.service_port = Some(name.clone());
        t.destination = Some(destination);
        if destination == Destination::ClusterIp {
            internal(spv, ctx, packet, &mut t);
        } else {
            external(spv, destination, ctx, packet, &mut t);
        }
        return t;
    }

    // Node ports: the last rule of KUBE-SERVICES, on local addresses only.
    if !is_local_address(ctx, &packet.destination) {
        return t;
    }
    let node_port = view.iter().find(|(_, spv)| {
        spv.port.protocol == packet.protocol && spv.port.node_port == Some(packet.port)
    });
    let Some((name, spv)) = node_port else {
        return t;
    };
    t.service_port = Some(name.clone());
    t.destination = Some(Destination::NodePort);
    if serves_node_ports(ctx, &packet.destination) {
        external(spv, Destination::NodePort, ctx, packet, &mut t);
    } else {
        // Not captured in nat; only the filter rules (`--dst-type LOCAL`)
        // for ports without usable endpoints apply.
        t.outcome = match spv.external {
            Target::Reject => Outcome::Rejected,
            Target::Drop => Outcome::Dropped,
            Target::Cluster | Target::Local => Outcome::NotMatched,
        };
        t.reason = "node port on an address that does not serve node ports";
    }
    t
}

/// ClusterIP traffic.
fn internal(spv: &ServicePortView, ctx: &BackendContext, packet: &Packet, t: &mut Trace) {
    match spv.internal {
        Target::Reject => {
            t.outcome = Outcome::Rejected;
            t.reason = "no endpoints: REJECT in filter KUBE-SERVICES";
        }
        Target::Drop => {
            t.outcome = Outcome::Dropped;
            t.reason =
                "internalTrafficPolicy Local without local endpoints: DROP in filter KUBE-SERVICES";
        }
        target @ (Target::Cluster | Target::Local) => {
            let masquerade = if ctx.masquerade_all {
                t.reason = "cluster IP, masqueradeAll";
                true
            } else if ctx.local_detector.is_some() {
                t.used_detector = true;
                let local = is_local_traffic(ctx, packet);
                t.reason = if local {
                    "cluster IP from a local pod (detect-local)"
                } else {
                    "cluster IP from a non-local source (detect-local): masquerade"
                };
                !local
            } else {
                t.reason = "cluster IP, no local-traffic detector: never masqueraded";
                false
            };
            forward(spv.endpoints_for(target), masquerade, packet, t);
        }
    }
}

/// NodePort, external IP and load-balancer IP traffic.
fn external(
    spv: &ServicePortView,
    destination: Destination,
    ctx: &BackendContext,
    packet: &Packet,
    t: &mut Trace,
) {
    let port = &spv.port;
    if spv.external == Target::Reject {
        t.outcome = Outcome::Rejected;
        t.reason = "no endpoints: REJECT in filter KUBE-EXTERNAL-SERVICES";
        return;
    }
    if destination == Destination::LoadBalancerIp && !port.load_balancer_source_ranges.is_empty() {
        let ranges = &port.load_balancer_source_ranges;
        let allow_from_node = ctx
            .node
            .primary_ip(ctx.family)
            .is_some_and(|node_ip| ranges.iter().any(|r| r.contains(&node_ip)));
        let allowed = ranges.iter().any(|r| r.contains(&packet.source))
            || (allow_from_node && port.load_balancer_ips.contains(&packet.source));
        if !allowed {
            t.outcome = Outcome::Dropped;
            t.reason =
                "source outside loadBalancerSourceRanges: DROP in filter KUBE-PROXY-FIREWALL";
            return;
        }
    }
    if !port.external_policy_local() {
        t.reason = "external destination, externalTrafficPolicy Cluster: masquerade";
        forward(&spv.cluster, true, packet, t);
        return;
    }
    if ctx.local_detector.is_some() {
        t.used_detector = true;
        if is_local_traffic(ctx, packet) {
            t.reason =
                "externalTrafficPolicy Local, pod traffic short-circuited to the cluster endpoints";
            forward(&spv.cluster, false, packet, t);
            return;
        }
    }
    if packet.origin == Origin::Host || is_local_address(ctx, &packet.source) {
        t.reason = "externalTrafficPolicy Local, host traffic: masquerade, cluster endpoints";
        forward(&spv.cluster, true, packet, t);
        return;
    }
    match spv.external {
        Target::Local => {
            t.reason = "externalTrafficPolicy Local: local endpoints, client IP preserved";
            forward(&spv.local, false, packet, t);
        }
        _ => {
            t.outcome = Outcome::Dropped;
            t.reason = "externalTrafficPolicy Local without local endpoints: DROP in filter KUBE-EXTERNAL-SERVICES";
        }
    }
}

/// DNAT to one of `endpoints`; each endpoint chain also masquerades a
/// packet whose source is that endpoint (hairpin).
fn forward(endpoints: &[Endpoint], masquerade: bool, packet: &Packet, t: &mut Trace) {
    if endpoints.is_empty() {
        // A NodeView never targets an empty endpoint list; upstream would
        // have no chain to jump to.
        t.outcome = Outcome::Rejected;
        t.reason = "no endpoints in the targeted list (inconsistent view)";
        return;
    }
    let hairpin = |e: &Endpoint| e.ip == packet.source;
    let all_hairpin = endpoints.iter().all(hairpin);
    let any_hairpin = endpoints.iter().any(hairpin);
    t.ambiguous = !masquerade && any_hairpin && !all_hairpin;
    t.outcome = Outcome::Forwarded {
        endpoints: endpoints
            .iter()
            .map(Endpoint::socket_addr)
            .collect::<BTreeSet<SocketAddr>>(),
        masqueraded: masquerade || all_hairpin,
    };
}

/// Upstream's `LocalTrafficDetector.IfLocal()` for `packet`.
fn is_local_traffic(ctx: &BackendContext, packet: &Packet) -> bool {
    match &ctx.local_detector {
        LocalTrafficDetector::None => false,
        LocalTrafficDetector::Cidr(net) => net.contains(&packet.source),
        LocalTrafficDetector::BridgeInterface(name) => {
            packet.origin.in_interface() == Some(name.as_str())
        }
        LocalTrafficDetector::InterfaceNamePrefix(prefix) => packet
            .origin
            .in_interface()
            .is_some_and(|i| i.starts_with(prefix.as_str())),
    }
}

/// `-m addrtype --dst-type LOCAL`: a node address or a loopback address.
fn is_local_address(ctx: &BackendContext, ip: &IpAddr) -> bool {
    ctx.node.addresses.contains(ip) || ctx.family.loopback_net().contains(ip)
}

/// Whether node ports are served on local address `ip`.
fn serves_node_ports(ctx: &BackendContext, ip: &IpAddr) -> bool {
    if !is_local_address(ctx, ip) {
        return false;
    }
    // IPv6 never serves node ports on ::1; IPv4 only with localhostNodePorts.
    if ctx.family.loopback_net().contains(ip) && !ctx.localhost_node_ports {
        return false;
    }
    match &ctx.node_port_cidrs {
        None => true,
        Some(cidrs) => cidrs.iter().any(|n| n.contains(ip)),
    }
}
