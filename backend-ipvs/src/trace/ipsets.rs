//! [`IpSets`]: the ipsets as `ipset save` lists them, and the lookup the
//! iptables tracer needs for `-m set --match-set` rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use backend_iptables::trace::{SetLookup, SetProbe};
use ipnet::IpNet;

use crate::error::IpvsError;

/// One dimension of a set type (`hash:ip,port,net` has three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Ip,
    Net,
    Port,
}

/// One ipset: its type's dimensions and its entries, each split by
/// dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// The type, e.g. `hash:ip,port`.
    pub kind: String,
    dims: Vec<Dim>,
    /// The entries as listed (`10.96.0.10,tcp:80`).
    pub entries: BTreeSet<String>,
}

/// Every set of an `ipset save` listing, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSets {
    /// The sets.
    pub sets: BTreeMap<String, IpSet>,
}

fn invalid(line: &str, why: impl std::fmt::Display) -> IpvsError {
    IpvsError::Listing(format!("ipset save: {why} in `{line}`"))
}

fn dims(kind: &str) -> Result<Vec<Dim>, String> {
    let (_, parts) = kind
        .split_once(':')
        .ok_or_else(|| format!("set type {kind:?} has no ':'"))?;
    parts
        .split(',')
        .map(|p| match p {
            "ip" => Ok(Dim::Ip),
            "net" => Ok(Dim::Net),
            "port" => Ok(Dim::Port),
            other => Err(format!(
                "set type {kind:?}: dimension {other:?} is not understood"
            )),
        })
        .collect()
}

impl IpSets {
    /// Parses `ipset save` output (`create NAME TYPE …` and `add NAME
    /// ENTRY …` lines).
    pub fn parse(text: &str) -> Result<Self, IpvsError> {
        let mut sets = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("create"), Some(name), Some(kind)) => {
                    let dims = dims(kind).map_err(|e| invalid(line, e))?;
                    sets.insert(
                        name.to_string(),
                        IpSet {
                            kind: kind.to_string(),
                            dims,
                            entries: BTreeSet::new(),
                        },
                    );
                }
                (Some("add"), Some(name), Some(entry)) => {
                    let set: &mut IpSet = sets
                        .get_mut(name)
                        .ok_or_else(|| invalid(line, format!("set {name} is not created first")))?;
                    set.entries.insert(entry.to_string());
                }
                _ => return Err(invalid(line, "a line that is neither create nor add")),
            }
        }
        Ok(IpSets { sets })
    }
}

/// Whether one entry's part `value` of dimension `dim` holds the packet's
/// field (`source` or not).
fn part_matches(dim: Dim, value: &str, source: bool, probe: &SetProbe) -> bool {
    let ip = if source {
        probe.source
    } else {
        probe.destination
    };
    match dim {
        Dim::Ip => value.parse::<IpAddr>().is_ok_and(|v| v == ip),
        Dim::Net => value
            .parse::<IpNet>()
            .map(|n| n.contains(&ip))
            .or_else(|_| value.parse::<IpAddr>().map(|v| v == ip))
            .unwrap_or(false),
        // Source ports are not traced: kube-proxy matches destination ports.
        Dim::Port if source => false,
        Dim::Port => {
            let (protocol, port) = value.split_once(':').unwrap_or(("tcp", value));
            protocol == probe.protocol && port.parse::<u16>().is_ok_and(|p| p == probe.port)
        }
    }
}

impl SetLookup for IpSets {
    fn contains(&self, name: &str, sources: &[bool], probe: &SetProbe) -> Option<bool> {
        let set = self.sets.get(name)?;
        // bitmap:port holds bare port numbers of any protocol (the rule
        // matches the protocol itself).
        if set.dims == [Dim::Port] {
            let source = sources.first().copied().unwrap_or(false);
            return Some(
                !source
                    && set
                        .entries
                        .iter()
                        .any(|e| e.parse::<u16>().is_ok_and(|p| p == probe.port)),
            );
        }
        Some(set.entries.iter().any(|entry| {
            let parts: Vec<&str> = entry.split(',').collect();
            parts.len() == set.dims.len()
                && set
                    .dims
                    .iter()
                    .zip(&parts)
                    .zip(sources.iter().chain(std::iter::repeat(&false)))
                    .all(|((dim, part), source)| part_matches(*dim, part, *source, probe))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
add KUBE-CLUSTER-IP 10.96.0.53,udp:53
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.244.1.10,tcp:8080,10.244.1.10
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
add KUBE-LOAD-BALANCER-SOURCE-CIDR 192.0.2.10,tcp:80,203.0.113.0/24
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-IPS 10.96.0.10
";

    fn probe(source: &str, destination: &str, protocol: &'static str, port: u16) -> SetProbe {
        SetProbe {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn each_set_type_matches_the_fields_its_flags_name() {
        let sets = IpSets::parse(SAVE).unwrap();
        let dst_dst = [false, false];
        let p = probe("10.244.1.20", "10.96.0.10", "tcp", 80);
        assert_eq!(sets.contains("KUBE-CLUSTER-IP", &dst_dst, &p), Some(true));
        // Another protocol or port, or the source instead of the destination.
        let udp = probe("10.244.1.20", "10.96.0.10", "udp", 80);
        assert_eq!(
            sets.contains("KUBE-CLUSTER-IP", &dst_dst, &udp),
            Some(false)
        );
        assert_eq!(
            sets.contains("KUBE-CLUSTER-IP", &[true, false], &p),
            Some(false)
        );
        // dst,dst,src: a pod reaching itself (hairpin).
        let hairpin = probe("10.244.1.10", "10.244.1.10", "tcp", 8080);
        assert_eq!(
            sets.contains("KUBE-LOOP-BACK", &[false, false, true], &hairpin),
            Some(true)
        );
        let other = probe("10.244.1.11", "10.244.1.10", "tcp", 8080);
        assert_eq!(
            sets.contains("KUBE-LOOP-BACK", &[false, false, true], &other),
            Some(false)
        );
        // A network dimension.
        let inside = probe("203.0.113.9", "192.0.2.10", "tcp", 80);
        let outside = probe("198.51.100.9", "192.0.2.10", "tcp", 80);
        let flags = [false, false, true];
        assert_eq!(
            sets.contains("KUBE-LOAD-BALANCER-SOURCE-CIDR", &flags, &inside),
            Some(true)
        );
        assert_eq!(
            sets.contains("KUBE-LOAD-BALANCER-SOURCE-CIDR", &flags, &outside),
            Some(false)
        );
        // bitmap:port and hash:ip.
        let np = probe("203.0.113.9", "10.0.0.1", "tcp", 30080);
        assert_eq!(
            sets.contains("KUBE-NODE-PORT-TCP", &[false], &np),
            Some(true)
        );
        assert_eq!(sets.contains("KUBE-IPVS-IPS", &[false], &p), Some(true));
        assert_eq!(sets.contains("KUBE-IPVS-IPS", &[false], &np), Some(false));
        assert_eq!(sets.contains("NO-SUCH-SET", &[false], &p), None);
    }

    #[test]
    fn bad_listings_are_errors_naming_the_line() {
        let e = IpSets::parse("add X 1.2.3.4").unwrap_err().to_string();
        assert!(
            e.contains("add X 1.2.3.4") && e.contains("not created"),
            "{e}"
        );
        let e = IpSets::parse("create X list:set").unwrap_err().to_string();
        assert!(e.contains("list:set"), "{e}");
    }
}
