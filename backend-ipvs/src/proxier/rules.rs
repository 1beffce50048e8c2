//! The ipsets (`ipset restore` input) and iptables rules
//! (`iptables-restore --noflush` input) of upstream's IPVS mode, for the
//! part of it this backend implements: masquerade of off-node ClusterIP
//! traffic, hairpin, and the refusal of unserved ports on service
//! addresses (`KUBE-IPVS-FILTER`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use backend_iptables::render::RenderConfig;

use crate::layout::CHAINS;
use crate::netlink::IpvsProtocol;

use super::desired::Desired;

/// `KUBE-CLUSTER-IP` (`hash:ip,port`).
pub(crate) const CLUSTER_IP_SET: &str = "KUBE-CLUSTER-IP";
/// `KUBE-LOOP-BACK` (`hash:ip,port,ip`).
pub(crate) const LOOP_BACK_SET: &str = "KUBE-LOOP-BACK";
/// `KUBE-IPVS-IPS` (`hash:ip`): every address bound to `kube-ipvs0`.
pub(crate) const IPVS_IPS_SET: &str = "KUBE-IPVS-IPS";

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
    vec![
        (CLUSTER_IP_SET, cluster),
        (LOOP_BACK_SET, loopback),
        (IPVS_IPS_SET, vips),
    ]
}

/// `ipset restore` input that creates the sets if missing and makes their
/// content exactly `entries`.
pub(crate) fn ipset_restore(entries: &[(&'static str, BTreeSet<String>)]) -> String {
    let mut out = String::new();
    for (set, members) in entries {
        let kind = match *set {
            LOOP_BACK_SET => "hash:ip,port,ip",
            IPVS_IPS_SET => "hash:ip",
            _ => "hash:ip,port",
        };
        let _ = writeln!(
            out,
            "create {set} {kind} family inet hashsize 1024 maxelem 65536 -exist"
        );
        let _ = writeln!(out, "flush {set}");
        for m in members {
            let _ = writeln!(out, "add {set} {m}");
        }
    }
    out
}

/// The `iptables-restore --noflush` input: every chain of upstream's IPVS
/// mode declared (so restored whole), with this backend's rules.
pub(crate) fn iptables_restore(config: &RenderConfig, random_fully: bool) -> String {
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
            line("-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN".to_string());
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
            line("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".to_string());
            line("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".to_string());
            // last: accept what IPVS serves, whatever other rules follow
            line(format!("-A KUBE-SERVICES {set} dst,dst -j ACCEPT"));
            line(format!(
                "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set {LOOP_BACK_SET} dst,dst,src -j MASQUERADE"
            ));
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
            line("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP".to_string());
            // a new connection to a service address on a port no service
            // has is refused, so node listeners on 0.0.0.0 never answer
            line(format!(
                "-A KUBE-IPVS-FILTER -m set --match-set {CLUSTER_IP_SET} dst,dst -j RETURN"
            ));
            line(format!(
                "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {IPVS_IPS_SET} dst -j REJECT"
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
            ipset_restore(&ipset_entries(&desired)),
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-CLUSTER-IP\n\
             add KUBE-CLUSTER-IP 10.96.0.10,sctp:9000\n\
             add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n\
             create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-LOOP-BACK\n\
             add KUBE-LOOP-BACK 10.244.1.10,udp:53,10.244.1.10\n\
             create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 -exist\n\
             flush KUBE-IPVS-IPS\n\
             add KUBE-IPVS-IPS 10.96.0.10\n"
        );
    }

    #[test]
    fn off_cluster_sources_are_marked_for_masquerade_per_the_detector() {
        let cidr = LocalTrafficDetector::Cidr("10.244.0.0/16".parse().unwrap());
        let rules = iptables_restore(&config(cidr, false), true);
        assert!(rules.contains("-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"), "{rules}");
        assert!(rules.contains("-j MASQUERADE --random-fully\n"));
        assert!(
            rules.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n"),
            "{rules}"
        );
        let all = iptables_restore(&config(LocalTrafficDetector::None, true), false);
        assert!(all.contains("-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"));
        assert!(!all.contains("--random-fully"));
        let none = iptables_restore(&config(LocalTrafficDetector::None, false), true);
        assert!(
            none.contains("--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ\n"),
            "{none}"
        );
    }

    #[test]
    fn every_upstream_chain_is_declared_and_unserved_ports_are_refused() {
        let rules = iptables_restore(&config(LocalTrafficDetector::None, false), true);
        for (_, chain) in CHAINS {
            assert!(rules.contains(&format!(":{chain} - [0:0]\n")), "{chain}");
        }
        assert!(rules.contains("-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN\n-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT\n"), "{rules}");
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
