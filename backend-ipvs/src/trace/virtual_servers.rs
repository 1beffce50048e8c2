//! [`VirtualServerTable`]: the IPVS virtual servers and their real servers,
//! read over netlink or from `ipvsadm -Sn` output, and how a new connection
//! is scheduled (the iptables tracer's [`VirtualServers`] hook).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use backend_iptables::trace::{Choice, Hop, VirtualServers};

use crate::error::IpvsError;
use crate::netlink::{IpvsNetlink, IpvsProtocol, ServiceFlags};

/// A real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealEntry {
    /// Its address and port.
    pub address: SocketAddr,
    /// Its weight; 0: draining, it takes no new connections.
    pub weight: u32,
    /// Forwarding method flag as `ipvsadm` writes it (`-m`, `-g`, `-i`).
    pub forwarding: String,
}

/// A virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServerEntry {
    /// TCP, UDP or SCTP.
    pub protocol: IpvsProtocol,
    /// The virtual address and port.
    pub address: SocketAddr,
    /// The scheduler (`rr`, `wrr`, `lc`, …).
    pub scheduler: String,
    /// Persistence (session affinity) timeout, when persistent.
    pub persistence: Option<u32>,
    /// The real servers.
    pub reals: Vec<RealEntry>,
}

/// Every virtual server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualServerTable {
    /// The virtual servers.
    pub servers: Vec<VirtualServerEntry>,
}

fn protocol_flag(p: IpvsProtocol) -> &'static str {
    match p {
        IpvsProtocol::Tcp => "-t",
        IpvsProtocol::Udp => "-u",
        IpvsProtocol::Sctp => "--sctp-service",
    }
}

fn protocol_word(p: IpvsProtocol) -> &'static str {
    match p {
        IpvsProtocol::Tcp => "tcp",
        IpvsProtocol::Udp => "udp",
        IpvsProtocol::Sctp => "sctp",
    }
}

fn invalid(line: &str, why: impl std::fmt::Display) -> IpvsError {
    IpvsError::Listing(format!("ipvsadm -Sn: {why} in `{line}`"))
}

impl VirtualServerEntry {
    /// `-A -t 10.96.0.10:80 -s rr [-p 10800]`.
    fn line(&self) -> String {
        let mut out = format!(
            "-A {} {} -s {}",
            protocol_flag(self.protocol),
            self.address,
            self.scheduler
        );
        if let Some(p) = self.persistence {
            let _ = write!(out, " -p {p}");
        }
        out
    }

    fn real_line(&self, real: &RealEntry) -> String {
        format!(
            "-a {} {} -r {} {} -w {}",
            protocol_flag(self.protocol),
            self.address,
            real.address,
            real.forwarding,
            real.weight
        )
    }
}

impl VirtualServerTable {
    /// Reads every virtual server and its real servers over netlink.
    pub fn from_netlink(netlink: &mut IpvsNetlink) -> Result<Self, IpvsError> {
        let mut servers = Vec::new();
        for vs in netlink.services()? {
            let reals = netlink
                .destinations(&vs.key)?
                .into_iter()
                .map(|d| RealEntry {
                    address: SocketAddr::new(d.server.address, d.server.port),
                    weight: d.server.weight,
                    forwarding: match d.server.forwarding {
                        crate::netlink::Forwarding::Masquerade => "-m",
                        crate::netlink::Forwarding::DirectRoute => "-g",
                        crate::netlink::Forwarding::Tunnel => "-i",
                        crate::netlink::Forwarding::Local => "-m",
                    }
                    .to_string(),
                })
                .collect();
            servers.push(VirtualServerEntry {
                protocol: vs.key.protocol,
                address: SocketAddr::new(vs.key.address, vs.key.port),
                scheduler: vs.scheduler.clone(),
                persistence: vs
                    .flags
                    .contains(ServiceFlags::PERSISTENT)
                    .then_some(vs.timeout),
                reals,
            });
        }
        servers.sort_by_key(|s| (s.address, s.protocol));
        Ok(VirtualServerTable { servers })
    }

    /// Parses `ipvsadm -Sn` output (`-A` and `-a` lines).
    pub fn parse_ipvsadm(text: &str) -> Result<Self, IpvsError> {
        let mut servers: Vec<VirtualServerEntry> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let value = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            let (protocol, address) = [
                ("-t", IpvsProtocol::Tcp),
                ("--tcp-service", IpvsProtocol::Tcp),
                ("-u", IpvsProtocol::Udp),
                ("--udp-service", IpvsProtocol::Udp),
                ("--sctp-service", IpvsProtocol::Sctp),
            ]
            .iter()
            .find_map(|(flag, p)| value(flag).map(|a| (*p, a)))
            .ok_or_else(|| {
                invalid(
                    line,
                    "no -t, -u or --sctp-service address (fwmark services are not traced)",
                )
            })?;
            let address: SocketAddr = address
                .parse()
                .map_err(|e| invalid(line, format!("{address:?}: {e}")))?;
            match words.first() {
                Some(&"-A") => servers.push(VirtualServerEntry {
                    protocol,
                    address,
                    scheduler: value("-s").unwrap_or("wlc").to_string(),
                    persistence: value("-p")
                        .map(|p| p.parse().map_err(|e| invalid(line, format!("-p {p}: {e}"))))
                        .transpose()?,
                    reals: Vec::new(),
                }),
                Some(&"-a") => {
                    let real = value("-r").ok_or_else(|| invalid(line, "no -r"))?;
                    let real: SocketAddr = real
                        .parse()
                        .map_err(|e| invalid(line, format!("{real:?}: {e}")))?;
                    let weight = value("-w")
                        .map_or(Ok(1), str::parse)
                        .map_err(|e| invalid(line, format!("-w: {e}")))?;
                    let forwarding = ["-m", "-g", "-i"]
                        .into_iter()
                        .find(|f| words.contains(f))
                        .unwrap_or("-g");
                    let vs = servers
                        .iter_mut()
                        .find(|s| s.protocol == protocol && s.address == address)
                        .ok_or_else(|| invalid(line, "a real server before its virtual server"))?;
                    vs.reals.push(RealEntry {
                        address: real,
                        weight,
                        forwarding: forwarding.to_string(),
                    });
                }
                _ => return Err(invalid(line, "neither -A nor -a")),
            }
        }
        Ok(VirtualServerTable { servers })
    }

    /// As `ipvsadm -Sn` prints it.
    pub fn to_ipvsadm(&self) -> String {
        let mut out = String::new();
        for vs in &self.servers {
            let _ = writeln!(out, "{}", vs.line());
            for real in &vs.reals {
                let _ = writeln!(out, "{}", vs.real_line(real));
            }
        }
        out
    }

    /// The virtual server at `destination:port` over `protocol`.
    pub fn find(
        &self,
        protocol: &str,
        destination: IpAddr,
        port: u16,
    ) -> Option<&VirtualServerEntry> {
        self.servers.iter().find(|s| {
            protocol_word(s.protocol) == protocol
                && s.address.ip() == destination
                && s.address.port() == port
        })
    }
}

impl VirtualServers for VirtualServerTable {
    fn schedule(
        &self,
        protocol: &str,
        destination: IpAddr,
        port: u16,
    ) -> Option<(Vec<Hop>, Vec<Choice>)> {
        let vs = self.find(protocol, destination, port)?;
        let chain = format!("{} {} {}", vs.protocol, vs.address, vs.scheduler);
        let mut hops = vec![Hop {
            depth: 1,
            table: "ipvs".into(),
            chain: chain.clone(),
            rule: None,
            notes: Vec::new(),
        }];
        let takers: Vec<&RealEntry> = vs.reals.iter().filter(|r| r.weight > 0).collect();
        let total: u32 = takers.iter().map(|r| r.weight).sum();
        // Round robin ignores weights (but 0); the weighted schedulers
        // share in proportion to them.
        let share = |r: &RealEntry| match vs.scheduler.as_str() {
            "rr" => 1.0 / takers.len() as f64,
            _ => f64::from(r.weight) / f64::from(total.max(1)),
        };
        hops.push(Hop {
            depth: 1,
            table: "ipvs".into(),
            chain: chain.clone(),
            rule: Some(vs.line()),
            notes: match (vs.persistence, takers.is_empty()) {
                (_, true) => vec![
                    "no real server takes new connections: IPVS refuses it (ICMP port unreachable)"
                        .to_string(),
                ],
                (Some(p), false) => vec![format!(
                    "persistent {p}s (session affinity): a returning client goes back to its real server"
                )],
                (None, false) => Vec::new(),
            },
        });
        for real in &vs.reals {
            let note = if real.weight == 0 {
                "weight 0: draining, takes no new connections".to_string()
            } else {
                format!("weight {}: new connections {:.3}", real.weight, share(real))
            };
            hops.push(Hop {
                depth: 1,
                table: "ipvs".into(),
                chain: chain.clone(),
                rule: Some(vs.real_line(real)),
                notes: vec![note],
            });
        }
        let mut choices = Vec::new();
        if vs.persistence.is_some() {
            choices.extend(takers.iter().map(|r| Choice {
                endpoint: r.address,
                probability: 1.0,
                affinity: true,
            }));
        }
        choices.extend(takers.iter().map(|r| Choice {
            endpoint: r.address,
            probability: share(r),
            affinity: false,
        }));
        Some((hops, choices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "-A -t 10.96.0.10:80 -s rr -p 10800
-a -t 10.96.0.10:80 -r 10.244.1.10:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.2.10:8080 -m -w 0
-A -u 10.96.0.53:53 -s rr
-A -t [fd00::10]:80 -s wrr
-a -t [fd00::10]:80 -r [fd00:244::10]:8080 -m -w 3
-a -t [fd00::10]:80 -r [fd00:244::11]:8080 -m -w 1
";

    #[test]
    fn ipvsadm_save_round_trips() {
        let table = VirtualServerTable::parse_ipvsadm(SAVED).unwrap();
        assert_eq!(table.servers.len(), 3);
        assert_eq!(table.servers[0].persistence, Some(10800));
        assert_eq!(table.to_ipvsadm(), SAVED);
    }

    #[test]
    fn draining_reals_take_no_new_connections_and_weights_share() {
        let table = VirtualServerTable::parse_ipvsadm(SAVED).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (hops, choices) = table.schedule("tcp", ip("10.96.0.10"), 80).unwrap();
        let endpoints: Vec<String> = choices.iter().map(|c| c.endpoint.to_string()).collect();
        // Persistent: the affinity branch and the new-client branch, both
        // to the only real server taking new connections.
        assert_eq!(endpoints, ["10.244.1.10:8080", "10.244.1.10:8080"]);
        assert!(choices[0].affinity && !choices[1].affinity);
        assert!(
            hops.iter()
                .any(|h| h.notes.iter().any(|n| n.contains("draining")))
        );
        // No real server: refused.
        let (_, none) = table.schedule("udp", ip("10.96.0.53"), 53).unwrap();
        assert!(none.is_empty());
        // Weighted.
        let (_, wrr) = table.schedule("tcp", ip("fd00::10"), 80).unwrap();
        let shares: Vec<f64> = wrr.iter().map(|c| c.probability).collect();
        assert_eq!(shares, [0.75, 0.25]);
        // No virtual server there.
        assert!(table.schedule("tcp", ip("10.96.0.10"), 81).is_none());
        assert!(table.schedule("udp", ip("10.96.0.10"), 80).is_none());
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let e = VirtualServerTable::parse_ipvsadm("-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("before its virtual server"), "{e}");
        let e = VirtualServerTable::parse_ipvsadm("-A -f 7 -s rr")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fwmark"), "{e}");
    }
}
