//! The ipsets (`ipset restore` input) and iptables rules
//! (`iptables-restore --noflush` input) of upstream's IPVS mode: masquerade,
//! hairpin, node ports, external and load-balancer IPs with source ranges,
//! health-check node ports, and the refusal of unserved ports on service
//! addresses (`KUBE-IPVS-FILTER`).
//!
//! Both are written with upstream's IPv4 set names; an IPv6 backend's sets
//! are `KUBE-6-…` of family `inet6` ([`ipset_name`]), and its rules name
//! those ([`ipset_restore`] and [`iptables_restore`] take the family).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use backend_iptables::render::RenderConfig;
use proxy_core::IpFamily;
use proxy_core::exec::ToolError;
use proxy_core::exec::iptables::Iptables;

use crate::layout::{CHAINS, JUMPS, Jump, ipset_name};
use crate::netlink::IpvsProtocol;

use super::desired::Desired;

/// `KUBE-CLUSTER-IP` (`hash:ip,port`).
pub(crate) const CLUSTER_IP_SET: &str = "KUBE-CLUSTER-IP";
/// `KUBE-LOOP-BACK` (`hash:ip,port,ip`).
pub(crate) const LOOP_BACK_SET: &str = "KUBE-LOOP-BACK";
/// `KUBE-IPVS-IPS` (`hash:ip`): every address bound to `kube-ipvs0`.
pub(crate) const IPVS_IPS_SET: &str = "KUBE-IPVS-IPS";
/// `KUBE-EXTERNAL-IP` (`hash:ip,port`): external IPs, masqueraded.
pub(crate) const EXTERNAL_IP_SET: &str = "KUBE-EXTERNAL-IP";
/// `KUBE-EXTERNAL-IP-LOCAL`: external IPs of `Local` services.
pub(crate) const EXTERNAL_IP_LOCAL_SET: &str = "KUBE-EXTERNAL-IP-LOCAL";
/// `KUBE-LOAD-BALANCER` (`hash:ip,port`): load-balancer IPs.
pub(crate) const LOAD_BALANCER_SET: &str = "KUBE-LOAD-BALANCER";
/// `KUBE-LOAD-BALANCER-LOCAL`: those of `Local` services.
pub(crate) const LOAD_BALANCER_LOCAL_SET: &str = "KUBE-LOAD-BALANCER-LOCAL";
/// `KUBE-LOAD-BALANCER-FW` (`hash:ip,port`): those with source ranges.
pub(crate) const LB_FIREWALL_SET: &str = "KUBE-LOAD-BALANCER-FW";
/// `KUBE-LOAD-BALANCER-SOURCE-CIDR` (`hash:ip,port,net`).
pub(crate) const LB_SOURCE_CIDR_SET: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
/// `KUBE-LOAD-BALANCER-SOURCE-IP` (`hash:ip,port,ip`).
pub(crate) const LB_SOURCE_IP_SET: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
/// `KUBE-HEALTH-CHECK-NODE-PORT` (`bitmap:port`): the health-check node
/// ports of `LoadBalancer` services with `externalTrafficPolicy: Local`,
/// accepted in filter `KUBE-NODE-PORT` (under a restrictive `INPUT`
/// policy the load balancer's probes still reach the health server).
pub(crate) const HEALTH_CHECK_NODE_PORT_SET: &str = "KUBE-HEALTH-CHECK-NODE-PORT";

/// The node-port sets: `(set, protocol, local, comment)`, in upstream's
/// rule order (`ipsetWithIptablesChain`: each `-LOCAL-` set's `RETURN`
/// before its protocol's masquerade).
const NODE_PORT_SETS: [(&str, IpvsProtocol, bool, &str); 6] = [
    (
        "KUBE-NODE-PORT-LOCAL-TCP",
        IpvsProtocol::Tcp,
        true,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-NODE-PORT-TCP",
        IpvsProtocol::Tcp,
        false,
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-UDP",
        IpvsProtocol::Udp,
        true,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-NODE-PORT-UDP",
        IpvsProtocol::Udp,
        false,
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
        IpvsProtocol::Sctp,
        true,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (
        "KUBE-NODE-PORT-SCTP-HASH",
        IpvsProtocol::Sctp,
        false,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
];

/// The entries of a node-port set: every node port of the protocol (the
/// `-LOCAL-` set: those with policy `Local`); SCTP ones per node IP.
fn node_port_entries(desired: &Desired, protocol: IpvsProtocol, local: bool) -> BTreeSet<String> {
    let mut entries = BTreeSet::new();
    for (p, port, is_local) in &desired.node_ports {
        if *p != protocol || (local && !is_local) {
            continue;
        }
        if protocol == IpvsProtocol::Sctp {
            for ip in &desired.node_ips {
                entries.insert(format!("{ip},sctp:{port}"));
            }
        } else {
            entries.insert(port.to_string());
        }
    }
    entries
}

fn proto(p: IpvsProtocol) -> &'static str {
    match p {
        IpvsProtocol::Tcp => "tcp",
        IpvsProtocol::Udp => "udp",
        IpvsProtocol::Sctp => "sctp",
    }
}

/// The set contents of `desired`, as `(set, entries)`.
pub(crate) fn ipset_entries(desired: &Desired) -> Vec<(&'static str, BTreeSet<String>)> {
    let cluster = desired
        .cluster_ips
        .iter()
        .map(|(ip, p, port)| format!("{ip},{}:{port}", proto(*p)))
        .collect();
    let loopback = desired
        .loopback
        .iter()
        .map(|(ip, p, port, src)| format!("{ip},{}:{port},{src}", proto(*p)))
        .collect();
    let vips = desired.vips.iter().map(ToString::to_string).collect();
    let entries = |set: &BTreeSet<((std::net::IpAddr, IpvsProtocol, u16), bool)>,
                   local_only: bool| {
        set.iter()
            .filter(|(_, local)| *local == local_only || !local_only)
            .map(|((ip, p, port), _)| format!("{ip},{}:{port}", proto(*p)))
            .collect::<BTreeSet<String>>()
    };
    let external = |local: bool| {
        desired
            .external_ips
            .iter()
            .filter(|(_, l)| *l == local)
            .map(|((ip, p, port), _)| format!("{ip},{}:{port}", proto(*p)))
            .collect::<BTreeSet<String>>()
    };
    let mut sets = vec![
        (CLUSTER_IP_SET, cluster),
        (LOOP_BACK_SET, loopback),
        (IPVS_IPS_SET, vips),
        (EXTERNAL_IP_SET, external(false)),
        (EXTERNAL_IP_LOCAL_SET, external(true)),
        (LOAD_BALANCER_SET, entries(&desired.load_balancers, false)),
        (
            LOAD_BALANCER_LOCAL_SET,
            entries(&desired.load_balancers, true),
        ),
    ];
    for (set, protocol, local, _) in NODE_PORT_SETS {
        sets.push((set, node_port_entries(desired, protocol, local)));
    }
    let ip_port = |(ip, p, port): &(std::net::IpAddr, IpvsProtocol, u16)| {
        format!("{ip},{}:{port}", proto(*p))
    };
    sets.push((
        LB_FIREWALL_SET,
        desired.lb_firewall.iter().map(ip_port).collect(),
    ));
    sets.push((
        LB_SOURCE_CIDR_SET,
        desired
            .lb_source_cidrs
            .iter()
            .map(|(entry, net)| format!("{},{net}", ip_port(entry)))
            .collect(),
    ));
    sets.push((
        LB_SOURCE_IP_SET,
        desired
            .lb_source_ips
            .iter()
            .map(|entry| format!("{},{}", ip_port(entry), entry.0))
            .collect(),
    ));
    sets.push((
        HEALTH_CHECK_NODE_PORT_SET,
        desired
            .health_check_node_ports
            .iter()
            .map(ToString::to_string)
            .collect(),
    ));
    sets
}

/// `ipset restore` input that creates `family`'s sets if missing and makes
/// their content exactly `entries` (named by their IPv4 names).
pub(crate) fn ipset_restore(
    entries: &[(&'static str, BTreeSet<String>)],
    family: IpFamily,
) -> String {
    let inet = match family {
        IpFamily::V4 => "inet",
        IpFamily::V6 => "inet6",
    };
    let mut out = String::new();
    for (name, members) in entries {
        let hash = |kind: &str| format!("{kind} family {inet} hashsize 1024 maxelem 65536");
        let kind = match *name {
            LOOP_BACK_SET | LB_SOURCE_IP_SET => hash("hash:ip,port,ip"),
            LB_SOURCE_CIDR_SET => hash("hash:ip,port,net"),
            IPVS_IPS_SET => hash("hash:ip"),
            HEALTH_CHECK_NODE_PORT_SET => "bitmap:port range 0-65535".to_string(),
            s if s.starts_with("KUBE-NODE-PORT-") && !s.ends_with("-HASH") => {
                "bitmap:port range 0-65535".to_string()
            }
            _ => hash("hash:ip,port"),
        };
        let set = ipset_name(name, family);
        let _ = writeln!(out, "create {set} {kind} -exist");
        let _ = writeln!(out, "flush {set}");
        for m in members {
            let _ = writeln!(out, "add {set} {m}");
        }
    }
    out
}

/// The `iptables-restore --noflush` input: every chain of upstream's IPVS
/// mode declared (so restored whole), with this backend's rules.
pub(crate) fn iptables_restore(
    config: &RenderConfig,
    desired: &Desired,
    random_fully: bool,
) -> String {
    let mark = &config.mark;
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    for table in ["nat", "filter"] {
        line(format!("*{table}"));
        for (t, chain) in CHAINS {
            if t == table {
                line(format!(":{chain} - [0:0]"));
            }
        }
        if table == "nat" {
            // connections to localhost leave the service chain at once
            let localhost = match config.family {
                IpFamily::V4 => "127.0.0.0/8",
                IpFamily::V6 => "::1/128",
            };
            line(format!("-A KUBE-SERVICES -s {localhost} -j RETURN"));
            // upstream's ipsetWithIptablesChain, in its order
            let sets = ipset_entries(desired);
            let filled = |name: &str| sets.iter().any(|(n, e)| *n == name && !e.is_empty());
            line(format!(
                "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set {LOOP_BACK_SET} dst,dst,src -j MASQUERADE"
            ));
            if filled(LOAD_BALANCER_SET) {
                line(format!(
                    "-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set {LOAD_BALANCER_SET} dst,dst -j KUBE-LOAD-BALANCER"
                ));
            }
            if filled(LOAD_BALANCER_LOCAL_SET) {
                line(format!(
                    "-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set {LOAD_BALANCER_LOCAL_SET} dst,dst -j RETURN"
                ));
            }
            for (set, protocol, local, comment) in NODE_PORT_SETS {
                if node_port_entries(desired, protocol, local).is_empty() {
                    continue;
                }
                let (p, match_type) = match protocol {
                    IpvsProtocol::Sctp => ("sctp", "dst,dst"),
                    other => (proto(other), "dst"),
                };
                let to = if local { "RETURN" } else { "KUBE-MARK-MASQ" };
                line(format!(
                    "-A KUBE-NODE-PORT -p {p} -m comment --comment \"{comment}\" -m set --match-set {set} {match_type} -j {to}"
                ));
            }
            let masq = "-m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\"";
            let set = format!("-m set --match-set {CLUSTER_IP_SET}");
            if config.masquerade_all {
                line(format!(
                    "-A KUBE-SERVICES {masq} {set} dst,dst -j KUBE-MARK-MASQ"
                ));
            } else if let Some(not_local) = config.if_not_local() {
                line(format!(
                    "-A KUBE-SERVICES {not_local} {masq} {set} dst,dst -j KUBE-MARK-MASQ"
                ));
            } else {
                // no detector: masquerade what the node sends from a VIP
                line(format!(
                    "-A KUBE-SERVICES {masq} {set} src,dst -j KUBE-MARK-MASQ"
                ));
            }
            // external IPs: masquerade (unless `Local`), and accept what
            // comes from off the node or is bound to the node anyway
            for (name, comment, masquerade) in [
                (
                    EXTERNAL_IP_SET,
                    "Kubernetes service external ip + port for masquerade and filter purpose",
                    true,
                ),
                (
                    EXTERNAL_IP_LOCAL_SET,
                    "Kubernetes service external ip + port with externalTrafficPolicy=local",
                    false,
                ),
            ] {
                if !filled(name) {
                    continue;
                }
                let args = format!(
                    "-A KUBE-SERVICES -m comment --comment \"{comment}\" -m set --match-set {name} dst,dst"
                );
                if masquerade {
                    line(format!("{args} -j KUBE-MARK-MASQ"));
                }
                line(format!(
                    "{args} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
                ));
                line(format!("{args} -m addrtype --dst-type LOCAL -j ACCEPT"));
            }
            line("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".to_string());
            line("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".to_string());
            // last: accept what IPVS serves, whatever other rules follow
            line(format!("-A KUBE-SERVICES {set} dst,dst -j ACCEPT"));
            if filled(LOAD_BALANCER_SET) {
                line(format!(
                    "-A KUBE-SERVICES -m set --match-set {LOAD_BALANCER_SET} dst,dst -j ACCEPT"
                ));
            }
            line(format!(
                "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
            ));
            line(format!("-A KUBE-POSTROUTING -j MARK --xor-mark {mark}"));
            let fully = if random_fully { " --random-fully" } else { "" };
            line(format!(
                "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{fully}"
            ));
            line(format!("-A KUBE-MARK-MASQ -j MARK --or-mark {mark}"));
        } else {
            // upstream's ipsetWithIptablesChain filter entries, then the drop
            let sets = ipset_entries(desired);
            let filled = |name: &str| sets.iter().any(|(n, e)| *n == name && !e.is_empty());
            if filled(LB_FIREWALL_SET) {
                line(format!(
                    "-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set {LB_FIREWALL_SET} dst,dst -j KUBE-SOURCE-RANGES-FIREWALL"
                ));
            }
            if filled(LB_SOURCE_CIDR_SET) {
                line(format!(
                    "-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source cidr for packet filter purpose\" -m set --match-set {LB_SOURCE_CIDR_SET} dst,dst,src -j RETURN"
                ));
            }
            if filled(LB_SOURCE_IP_SET) {
                line(format!(
                    "-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source IP for packet filter purpose to solve hairpin\" -m set --match-set {LB_SOURCE_IP_SET} dst,dst,src -j RETURN"
                ));
            }
            line("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP".to_string());
            // the node itself may not reach a load balancer whose ranges
            // leave it out (for IPVS, source and destination are the LB IP)
            for (ip, p, port) in &desired.lb_no_node_access {
                line(format!(
                    "-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {p} --vport {port} -j DROP",
                    p = proto(*p)
                ));
            }
            // a new connection to a service address on a port no service
            // has is refused, so node listeners on 0.0.0.0 never answer
            for name in [
                LOAD_BALANCER_SET,
                CLUSTER_IP_SET,
                EXTERNAL_IP_SET,
                EXTERNAL_IP_LOCAL_SET,
            ] {
                line(format!(
                    "-A KUBE-IPVS-FILTER -m set --match-set {name} dst,dst -j RETURN"
                ));
            }
            line(format!(
                "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {IPVS_IPS_SET} dst -j REJECT"
            ));
            line(format!(
                "-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set {HEALTH_CHECK_NODE_PORT_SET} dst -j ACCEPT"
            ));
            line(format!(
                "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
            ));
            line(
                "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                    .to_string(),
            );
        }
        line("COMMIT".to_string());
    }
    match config.family {
        IpFamily::V4 => out,
        IpFamily::V6 => rename_sets(&out, config.family),
    }
}

/// The restore input (`*table`, `-I` lines, `COMMIT`) that inserts the
/// jumps of `JUMPS` missing from `saved` (`(table, iptables-save -t table
/// output)`), in upstream's order: each `-I` prepends, as upstream's
/// `EnsureRule` does one at a time. Empty when none is missing.
fn missing_jumps(saved: &[(&str, String)]) -> String {
    let rule = |j: &Jump| format!("-m comment --comment \"{}\" -j {}", j.comment, j.to);
    let mut input = String::new();
    for (table, text) in saved {
        let present: BTreeSet<&str> = text.lines().map(str::trim_end).collect();
        let mut block = String::new();
        for jump in JUMPS.iter().filter(|j| j.table == *table) {
            if !present.contains(format!("-A {} {}", jump.from, rule(jump)).as_str()) {
                let _ = writeln!(block, "-I {} {}", jump.from, rule(jump));
            }
        }
        if !block.is_empty() {
            let _ = write!(input, "*{table}\n{block}COMMIT\n");
        }
    }
    input
}

/// Ensures upstream's jump rules (`iptablesJumpChain`) with one
/// `iptables-save` per table and one `iptables-restore --noflush` for the
/// missing ones, rather than a `-C` and an `-I` process per rule (18
/// processes, about 1.5 s under the VM's TCG). Returns how many were
/// inserted.
pub(crate) async fn ensure_jumps(iptables: &Iptables) -> Result<usize, ToolError> {
    let mut saved = Vec::new();
    for table in ["nat", "filter"] {
        saved.push((table, iptables.save(Some(table)).await?));
    }
    let input = missing_jumps(&saved);
    if input.is_empty() {
        return Ok(0);
    }
    iptables.restore(&input).await?;
    Ok(input.lines().filter(|l| l.starts_with("-I ")).count())
}

/// `rules` with every `--match-set NAME` naming `family`'s set.
fn rename_sets(rules: &str, family: IpFamily) -> String {
    const MATCH: &str = "--match-set ";
    let mut out = String::with_capacity(rules.len() + 64);
    let mut rest = rules;
    while let Some(at) = rest.find(MATCH) {
        let (head, tail) = rest.split_at(at + MATCH.len());
        out.push_str(head);
        let end = tail.find([' ', '\n']).unwrap_or(tail.len());
        let name = &tail[..end];
        match crate::layout::IPSETS.iter().find(|n| **n == name) {
            Some(known) => out.push_str(&ipset_name(known, family)),
            None => out.push_str(name),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proxy_core::backend::{BackendContext, LocalTrafficDetector};
    use proxy_core::{IpFamily, NodeInfo};

    use super::*;

    fn config(detector: LocalTrafficDetector, masquerade_all: bool) -> RenderConfig {
        let mut ctx = BackendContext::for_tests(IpFamily::V4, NodeInfo::named("n").shared());
        ctx.local_detector = detector;
        ctx.masquerade_all = masquerade_all;
        RenderConfig::from_context(&ctx)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sets_are_created_if_missing_then_filled_exactly() {
        let mut desired = Desired::default();
        desired.vips.insert(ip("10.96.0.10"));
        desired
            .cluster_ips
            .insert((ip("10.96.0.10"), IpvsProtocol::Tcp, 80));
        desired
            .cluster_ips
            .insert((ip("10.96.0.10"), IpvsProtocol::Sctp, 9000));
        desired
            .loopback
            .insert((ip("10.244.1.10"), IpvsProtocol::Udp, 53, ip("10.244.1.10")));
        assert_eq!(
            ipset_restore(&ipset_entries(&desired), IpFamily::V4),
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-CLUSTER-IP\n\
             add KUBE-CLUSTER-IP 10.96.0.10,sctp:9000\n\
             add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n\
             create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOOP-BACK\n\
             add KUBE-LOOP-BACK 10.244.1.10,udp:53,10.244.1.10\n\
             create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-IPVS-IPS\n\
             add KUBE-IPVS-IPS 10.96.0.10\n\
             create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-EXTERNAL-IP\n\
             create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-EXTERNAL-IP-LOCAL\n\
             create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOAD-BALANCER\n\
             create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOAD-BALANCER-LOCAL\n\
             create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535 -exist\n\
             flush KUBE-NODE-PORT-LOCAL-TCP\n\
             create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist\n\
             flush KUBE-NODE-PORT-TCP\n\
             create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535 -exist\n\
             flush KUBE-NODE-PORT-LOCAL-UDP\n\
             create KUBE-NODE-PORT-UDP bitmap:port range 0-65535 -exist\n\
             flush KUBE-NODE-PORT-UDP\n\
             create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-NODE-PORT-LOCAL-SCTP-HASH\n\
             create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-NODE-PORT-SCTP-HASH\n\
             create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOAD-BALANCER-FW\n\
             create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOAD-BALANCER-SOURCE-CIDR\n\
             create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOAD-BALANCER-SOURCE-IP\n\
             create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535 -exist\n\
             flush KUBE-HEALTH-CHECK-NODE-PORT\n"
        );
    }

    #[test]
    fn ipv6_sets_are_upstreams_kube_6_names_of_family_inet6_and_the_rules_use_them() {
        let mut desired = Desired {
            node_ips: BTreeSet::from([ip("fd00::1")]),
            ..Desired::default()
        };
        desired.vips.insert(ip("fd00:96::a"));
        desired
            .cluster_ips
            .insert((ip("fd00:96::a"), IpvsProtocol::Tcp, 80));
        desired.node_ports.insert((IpvsProtocol::Sctp, 30099, true));
        let sets = ipset_restore(&ipset_entries(&desired), IpFamily::V6);
        assert!(sets.contains(
            "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-6-CLUSTER-IP\n\
             add KUBE-6-CLUSTER-IP fd00:96::a,tcp:80\n"
        ), "{sets}");
        assert!(sets.contains(
            "create KUBE-6-NODE-PORT-LOCAL-SCTP-HAS hash:ip,port family inet6 hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-6-NODE-PORT-LOCAL-SCTP-HAS\n\
             add KUBE-6-NODE-PORT-LOCAL-SCTP-HAS fd00::1,sctp:30099\n"
        ), "{sets}");
        assert!(sets.contains("create KUBE-6-NODE-PORT-TCP bitmap:port range 0-65535 -exist\n"));
        assert!(!sets.contains(" inet "), "{sets}");

        let mut ctx = BackendContext::for_tests(IpFamily::V6, NodeInfo::named("n").shared());
        ctx.local_detector = LocalTrafficDetector::None;
        let rules = iptables_restore(&RenderConfig::from_context(&ctx), &desired, true);
        assert!(
            rules.contains("-A KUBE-SERVICES -s ::1/128 -j RETURN\n"),
            "{rules}"
        );
        assert!(rules.contains("-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'\" -m set --match-set KUBE-6-NODE-PORT-LOCAL-SCTP-HAS dst,dst -j RETURN\n"), "{rules}");
        assert!(
            rules.contains("--match-set KUBE-6-CLUSTER-IP src,dst -j KUBE-MARK-MASQ\n"),
            "{rules}"
        );
        // every set a rule names is one the restore creates
        for name in rules.split("--match-set ").skip(1) {
            let name = name.split(' ').next().unwrap();
            assert!(
                sets.contains(&format!("create {name} ")),
                "{name} in {rules}"
            );
        }
    }

    #[test]
    fn only_missing_jumps_are_inserted_in_upstreams_order() {
        let none = missing_jumps(&[("nat", String::new()), ("filter", String::new())]);
        assert_eq!(
            none,
            "*nat\n\
             -I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             COMMIT\n\
             *filter\n\
             -I FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             -I INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT\n\
             -I INPUT -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
             -I FORWARD -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
             -I INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER\n\
             -I OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER\n\
             COMMIT\n"
        );
        // what iptables-save prints for them once they are there
        let saved_nat = "*nat\n:OUTPUT ACCEPT [0:0]\n\
             -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             COMMIT\n";
        let saved_filter = none
            .lines()
            .filter_map(|l| l.strip_prefix("-I "))
            .filter(|l| !l.contains("KUBE-SERVICES") && !l.contains("KUBE-POSTROUTING"))
            .map(|l| format!("-A {l}\n"))
            .collect::<String>();
        assert_eq!(
            missing_jumps(&[("nat", saved_nat.into()), ("filter", saved_filter.clone())]),
            ""
        );
        assert_eq!(
            missing_jumps(&[("nat", String::new()), ("filter", saved_filter)]),
            "*nat\n\
             -I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             COMMIT\n"
        );
    }

    #[test]
    fn health_check_node_ports_are_accepted_in_filter_kube_node_port() {
        let mut desired = Desired::default();
        desired.health_check_node_ports.insert(32000);
        let sets: std::collections::BTreeMap<_, _> = ipset_entries(&desired).into_iter().collect();
        assert_eq!(
            sets["KUBE-HEALTH-CHECK-NODE-PORT"],
            BTreeSet::from(["32000".to_string()])
        );
        let rules = iptables_restore(&config(LocalTrafficDetector::None, false), &desired, true);
        let filter = &rules[rules.find("*filter").unwrap()..];
        assert!(filter.contains("-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT\n"), "{filter}");
    }

    #[test]
    fn node_ports_fill_their_sets_and_get_upstreams_rules() {
        let mut desired = Desired {
            node_ips: BTreeSet::from([ip("10.0.0.1"), ip("10.244.1.1")]),
            ..Desired::default()
        };
        desired.node_ports.insert((IpvsProtocol::Tcp, 30080, true));
        desired.node_ports.insert((IpvsProtocol::Udp, 30053, false));
        desired
            .node_ports
            .insert((IpvsProtocol::Sctp, 30099, false));
        let sets: std::collections::BTreeMap<_, _> = ipset_entries(&desired).into_iter().collect();
        assert_eq!(
            sets["KUBE-NODE-PORT-TCP"],
            BTreeSet::from(["30080".to_string()])
        );
        assert_eq!(
            sets["KUBE-NODE-PORT-LOCAL-TCP"],
            BTreeSet::from(["30080".to_string()])
        );
        assert_eq!(
            sets["KUBE-NODE-PORT-UDP"],
            BTreeSet::from(["30053".to_string()])
        );
        assert!(sets["KUBE-NODE-PORT-LOCAL-UDP"].is_empty());
        assert_eq!(
            sets["KUBE-NODE-PORT-SCTP-HASH"],
            BTreeSet::from([
                "10.0.0.1,sctp:30099".to_string(),
                "10.244.1.1,sctp:30099".to_string()
            ])
        );
        let rules = iptables_restore(&config(LocalTrafficDetector::None, false), &desired, true);
        let nat = &rules[..rules.find("*filter").unwrap()];
        let node_port: Vec<&str> = nat
            .lines()
            .filter(|l| l.starts_with("-A KUBE-NODE-PORT "))
            .collect();
        assert_eq!(
            node_port,
            [
                "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN",
                "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
                "-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ",
                "-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'\" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ",
            ]
        );
    }

    #[test]
    fn off_cluster_sources_are_marked_for_masquerade_per_the_detector() {
        let cidr = LocalTrafficDetector::Cidr("10.244.0.0/16".parse().unwrap());
        let rules = iptables_restore(&config(cidr, false), &Desired::default(), true);
        assert!(rules.contains("-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"), "{rules}");
        assert!(rules.contains("-j MASQUERADE --random-fully\n"));
        assert!(
            rules.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n"),
            "{rules}"
        );
        let all = iptables_restore(
            &config(LocalTrafficDetector::None, true),
            &Desired::default(),
            false,
        );
        assert!(all.contains("-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"));
        assert!(!all.contains("--random-fully"));
        let none = iptables_restore(
            &config(LocalTrafficDetector::None, false),
            &Desired::default(),
            true,
        );
        assert!(
            none.contains("--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ\n"),
            "{none}"
        );
    }

    #[test]
    fn every_upstream_chain_is_declared_and_unserved_ports_are_refused() {
        let rules = iptables_restore(
            &config(LocalTrafficDetector::None, false),
            &Desired::default(),
            true,
        );
        for (_, chain) in CHAINS {
            assert!(rules.contains(&format!(":{chain} - [0:0]\n")), "{chain}");
        }
        assert!(rules.contains("-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN\n-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT\n"), "{rules}");
        assert_eq!(rules.matches("COMMIT\n").count(), 2);
        let nat = &rules[..rules.find("*filter").unwrap()];
        assert!(
            nat.contains(":KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n"),
            "{nat}"
        );
        let services: Vec<&str> = nat
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(
            services.first(),
            Some(&"-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN")
        );
        assert_eq!(
            services.last(),
            Some(&"-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"),
            "upstream's acceptIPVSTraffic comes last"
        );
    }
}
