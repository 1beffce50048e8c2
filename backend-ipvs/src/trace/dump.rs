//! The ipvs mode's dump: one text file holding everything the tracer reads,
//! so a broken node's state can be traced elsewhere (`kube-proxy trace
//! --rules FILE`). Sections start with a `### ` line naming the command
//! whose output follows:
//!
//! ```text
//! ### ipvsadm -Sn
//! -A -t 10.96.0.10:80 -s rr
//! -a -t 10.96.0.10:80 -r 10.244.1.10:8080 -m -w 1
//! ### ipset save
//! create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
//! add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
//! ### iptables-save
//! *nat
//! …
//! COMMIT
//! ### kube-ipvs0
//! 10.96.0.10
//! ```
//!
//! Made on a node with
//! `{ echo '### ipvsadm -Sn'; ipvsadm -Sn; echo '### ipset save'; ipset save;
//! echo '### iptables-save'; iptables-save; echo '### kube-ipvs0';
//! ip -o addr show dev kube-ipvs0 | awk '{split($4,a,"/"); print a[1]}'; } > node.ipvs`
//! (or [`to_dump`]).

use std::net::IpAddr;

use backend_iptables::tables::Tables;

use super::{IpSets, IpvsRules, VirtualServerTable};
use crate::error::IpvsError;

/// The section headers, in the order [`to_dump`] writes them.
pub const SECTIONS: [&str; 4] = [
    "### ipvsadm -Sn",
    "### ipset save",
    "### iptables-save",
    "### kube-ipvs0",
];

/// Whether `text` is an ipvs mode dump.
pub fn is_dump(text: &str) -> bool {
    text.lines().any(|l| l.trim_end() == SECTIONS[0])
}

/// Writes the dump of the three listings and the bound addresses.
pub fn to_dump(ipvsadm: &str, ipset: &str, iptables: &str, bound: &[IpAddr]) -> String {
    let mut out = String::new();
    for (header, body) in SECTIONS.iter().zip([ipvsadm, ipset, iptables]) {
        out.push_str(header);
        out.push('\n');
        out.push_str(body);
        if !body.is_empty() && !body.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(SECTIONS[3]);
    out.push('\n');
    for ip in bound {
        out.push_str(&format!("{ip}\n"));
    }
    out
}

/// Reads a dump.
pub fn parse(text: &str) -> Result<IpvsRules, IpvsError> {
    let mut bodies: [String; 4] = Default::default();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if let Some(i) = SECTIONS.iter().position(|s| line.trim_end() == *s) {
            current = Some(i);
            continue;
        }
        match current {
            Some(i) => {
                bodies[i].push_str(line);
                bodies[i].push('\n');
            }
            None if line.trim().is_empty() || line.starts_with('#') => {}
            None => {
                return Err(IpvsError::Listing(format!(
                    "the ipvs dump must start with a section line ({}), not `{line}`",
                    SECTIONS[0]
                )));
            }
        }
    }
    let [ipvsadm, ipset, iptables, bound] = bodies;
    let tables = Tables::parse(&iptables)
        .map_err(|e| IpvsError::Listing(format!("the iptables-save section: {e}")))?;
    let bound = bound
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<IpAddr>().map_err(|e| {
                IpvsError::Listing(format!(
                    "the kube-ipvs0 section: {l:?} is not an address: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IpvsRules {
        virtual_servers: VirtualServerTable::parse_ipvsadm(&ipvsadm)?,
        sets: IpSets::parse(&ipset)?,
        tables,
        bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::Protocol;
    use proxy_core::conformance::{Origin, Outcome, Packet};

    /// Upstream's shape, shortened: a ClusterIP marked for masquerade from
    /// outside the pod CIDR and accepted, two real servers (one draining).
    const IPTABLES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-IPVS-FILTER - [0:0]
-A INPUT -s 198.51.100.0/24 -j DROP
-A INPUT -j KUBE-IPVS-FILTER
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
";

    fn dump() -> String {
        to_dump(
            "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.10:8080 -m -w 1\n-a -t 10.96.0.10:80 -r 10.244.2.10:8080 -m -w 0\n-A -t 10.96.0.11:80 -s rr\n",
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\nadd KUBE-CLUSTER-IP 10.96.0.10,tcp:80\nadd KUBE-CLUSTER-IP 10.96.0.11,tcp:80\ncreate KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536\nadd KUBE-LOOP-BACK 10.244.1.10,tcp:8080,10.244.1.10\ncreate KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536\nadd KUBE-IPVS-IPS 10.96.0.10\nadd KUBE-IPVS-IPS 10.96.0.11\nadd KUBE-IPVS-IPS 10.96.0.12\n",
            IPTABLES,
            &[
                "10.96.0.10".parse().unwrap(),
                "10.96.0.11".parse().unwrap(),
                "10.96.0.12".parse().unwrap(),
            ],
        )
    }

    fn packet(source: &str, destination: &str, port: u16) -> Packet {
        Packet {
            origin: Origin::External,
            source: source.parse().unwrap(),
            protocol: Protocol::Tcp,
            destination: destination.parse().unwrap(),
            port,
        }
    }

    fn forwarded(outcome: &Outcome) -> (Vec<String>, bool) {
        match outcome {
            Outcome::Forwarded {
                endpoints,
                masqueraded,
            } => (
                endpoints.iter().map(ToString::to_string).collect(),
                *masqueraded,
            ),
            other => panic!("not forwarded: {other}"),
        }
    }

    #[test]
    fn a_dump_traces_set_matches_virtual_servers_and_masquerade_marks() {
        let rules = parse(&dump()).unwrap();
        let node = ["10.0.0.1".parse().unwrap()];
        // From outside the pod CIDR: marked, to the one real server taking
        // new connections, masqueraded.
        let path = rules
            .trace_path(
                &node,
                &packet("203.0.113.10", "10.96.0.10", 80),
                Some("eth0"),
            )
            .unwrap();
        assert_eq!(
            forwarded(&path.outcome),
            (vec!["10.244.1.10:8080".to_string()], true)
        );
        assert!(
            path.hops
                .iter()
                .any(|h| h.table == "ipvs" && h.notes.iter().any(|n| n.contains("draining")))
        );
        // From a pod: not marked; hairpin to itself is masqueraded by the
        // loop-back set.
        let pod = rules
            .trace_path(&node, &packet("10.244.3.7", "10.96.0.10", 80), Some("cbr0"))
            .unwrap();
        assert_eq!(
            forwarded(&pod.outcome),
            (vec!["10.244.1.10:8080".to_string()], false)
        );
        let hairpin = rules
            .trace_path(
                &node,
                &packet("10.244.1.10", "10.96.0.10", 80),
                Some("cbr0"),
            )
            .unwrap();
        assert!(forwarded(&hairpin.outcome).1);
        // A virtual server without real servers refuses; an IPVS address
        // without a service port there is rejected by KUBE-IPVS-FILTER; an
        // address nobody serves is not matched.
        let empty = rules
            .trace_path(&node, &packet("10.244.3.7", "10.96.0.11", 80), Some("cbr0"))
            .unwrap();
        assert_eq!(empty.outcome, Outcome::Rejected);
        let filtered = rules
            .trace_path(&node, &packet("10.244.3.7", "10.96.0.12", 80), Some("cbr0"))
            .unwrap();
        assert_eq!(filtered.outcome, Outcome::Rejected);
        let nothing = rules
            .trace_path(&node, &packet("10.244.3.7", "192.0.2.99", 80), Some("cbr0"))
            .unwrap();
        assert_eq!(nothing.outcome, Outcome::NotMatched);
        // Accepted in nat, the packet still meets the filter table.
        let blocked = rules
            .trace_path(
                &node,
                &packet("198.51.100.9", "10.96.0.10", 80),
                Some("eth0"),
            )
            .unwrap();
        assert_eq!(blocked.outcome, Outcome::Dropped);
    }

    #[test]
    fn a_dump_round_trips_and_bad_ones_name_the_section() {
        assert!(is_dump(&dump()));
        assert!(!is_dump("*nat\nCOMMIT\n"));
        let e = parse("-A -t 1.2.3.4:80 -s rr\n").unwrap_err().to_string();
        assert!(e.contains("### ipvsadm -Sn"), "{e}");
        let e = parse(&dump().replace("10.96.0.12\n", "ten\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kube-ipvs0") && e.contains("ten"), "{e}");
    }
}
