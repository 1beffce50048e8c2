//! What the e2e bench reads back from the kernel to prove that the rules
//! are there, run from a thread inside the proxy's namespace.
//!
//! iptables mode reads only the chains a change touched
//! (`iptables -w -t nat -S <chain>`: iptables-nft 1.8.9 then fetches that
//! chain alone, not the table); never `iptables-save`, which beside a
//! 10k-Service table ran for minutes and once crashed: each change is read
//! back on its own.
//! nftables mode reads the proxy's whole table (`nft list table ip
//! kube-proxy`, minutes at 100k): once per kind of change, for all of them.
#![allow(dead_code)] // each bench uses a subset

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::Command;

use backend_iptables::names::{KUBE_NODEPORTS, KUBE_SERVICES, PortChains};
use proxy_core::exec::nft_netlink;
use proxy_core::{IpFamily, Protocol, ServicePortName};

use super::lean_api::NS;

/// The Services' port name and the endpoints' port (see `lean_api`).
const PORT_NAME: &str = "http";
const TARGET_PORT: u16 = 8080;

/// The proxy mode whose rules are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Iptables,
    Nftables,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "iptables" => Some(Mode::Iptables),
            "nftables" => Some(Mode::Nftables),
            _ => None,
        }
    }

    /// The table whose chain names [`chain_names`] lists.
    fn table(self) -> &'static str {
        match self {
            Mode::Iptables => "nat",
            Mode::Nftables => "kube-proxy",
        }
    }
}

/// One change the bench made, as the kernel must show it once programmed.
#[derive(Clone, Debug)]
pub enum Change {
    /// Service `service` load-balances to `ip` (a new endpoint address).
    Endpoint { service: String, ip: Ipv4Addr },
    /// Service `service` exists with its ClusterIP and endpoints.
    ServiceAdded {
        service: String,
        cluster_ip: Ipv4Addr,
        endpoints: Vec<Ipv4Addr>,
    },
    /// Service `service`'s ClusterIP is no longer served.
    ServiceRemoved {
        service: String,
        cluster_ip: Ipv4Addr,
    },
    /// LoadBalancer Service `service` has node port `port`.
    NodePort { service: String, port: u16 },
}

/// The iptables chains of Service `service`'s port.
fn port_chains(service: &str) -> (ServicePortName, PortChains) {
    let port = ServicePortName::new(NS, service, PORT_NAME, Protocol::Tcp);
    let chains = PortChains::new(&port);
    (port, chains)
}

/// `KUBE-SVC-…` of Service `service` and `KUBE-SEP-…` of each of `ips`.
pub fn iptables_chains(service: &str, ips: &[Ipv4Addr]) -> (String, Vec<String>) {
    let (port, chains) = port_chains(service);
    let seps = ips
        .iter()
        .map(|ip| chains.endpoint_chain_of(&port, &format!("{ip}:{TARGET_PORT}")))
        .collect();
    (chains.svc, seps)
}

/// `iptables -w -t nat -S chain`: the chain's rules, `None` when it does
/// not exist.
fn nat_chain(chain: &str) -> Result<Option<String>, String> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", chain])
        .output()
        .map_err(|e| format!("iptables -S {chain}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else if stderr.contains("No chain") || stderr.contains("incompatible") {
        // iptables-nft 1.8.9 says "chain `X' in table `nat' is
        // incompatible" of a chain that does not exist.
        Ok(None)
    } else {
        Err(format!("iptables -S {chain}: {}", stderr.trim()))
    }
}

/// `nft list table ip kube-proxy`.
fn nft_table() -> Result<String, String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "kube-proxy"])
        .output()
        .map_err(|e| format!("nft list table: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft list table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every dotted-quad token of `text`.
pub fn addresses(text: &str) -> HashSet<Ipv4Addr> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Every integer token of `text`.
pub fn numbers(text: &str) -> HashSet<u32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Whether a rule of `rules` matches destination `ip` and jumps to `chain`.
fn has_jump(rules: &str, ip: Ipv4Addr, chain: &str) -> bool {
    let dest = format!("-d {ip}/32 ");
    let jump = format!("-j {chain}");
    rules
        .lines()
        .any(|l| l.contains(&dest) && l.trim_end().ends_with(&jump))
}

/// Whether `mode`'s reads are cheap enough to read back each change as it
/// is made ([`shows`]); otherwise [`shows_all`] reads a kind's changes at
/// once.
pub fn reads_each(mode: Mode) -> bool {
    mode == Mode::Iptables
}

/// Whether the kernel shows `change`.
pub fn shows(mode: Mode, change: &Change) -> Result<bool, String> {
    Ok(shows_all(mode, std::slice::from_ref(change))?[0])
}

/// Whether the kernel shows each of `changes` (nftables: one read of the
/// table for all).
pub fn shows_all(mode: Mode, changes: &[Change]) -> Result<Vec<bool>, String> {
    match mode {
        Mode::Iptables => changes.iter().map(iptables_shows).collect(),
        Mode::Nftables => {
            let table = nft_table()?;
            let (found, ports) = (addresses(&table), numbers(&table));
            Ok(changes
                .iter()
                .map(|change| nft_shows(&found, &ports, change))
                .collect())
        }
    }
}

fn nft_shows(found: &HashSet<Ipv4Addr>, ports: &HashSet<u32>, change: &Change) -> bool {
    match change {
        Change::Endpoint { ip, .. } => found.contains(ip),
        Change::ServiceAdded {
            cluster_ip,
            endpoints,
            ..
        } => found.contains(cluster_ip) && endpoints.iter().all(|e| found.contains(e)),
        Change::ServiceRemoved { cluster_ip, .. } => !found.contains(cluster_ip),
        Change::NodePort { port, .. } => ports.contains(&u32::from(*port)),
    }
}

/// Reads the chains `change` touched (`iptables -S <chain>`).
fn iptables_shows(change: &Change) -> Result<bool, String> {
    Ok(match change {
        Change::Endpoint { service, ip } => {
            // The Service's chain jumps to the endpoint's chain, which
            // DNATs to the new address.
            let (svc, seps) = iptables_chains(service, &[*ip]);
            let jumps = nat_chain(&svc)?.unwrap_or_default();
            jumps.contains(&format!("-j {}", seps[0]))
                && nat_chain(&seps[0])?
                    .unwrap_or_default()
                    .contains(&format!("--to-destination {ip}:{TARGET_PORT}"))
        }
        Change::ServiceAdded {
            service,
            cluster_ip,
            endpoints,
        } => {
            let (svc, seps) = iptables_chains(service, endpoints);
            let Some(jumps) = nat_chain(&svc)? else {
                return Ok(false);
            };
            seps.iter().all(|sep| jumps.contains(&format!("-j {sep}")))
                && has_jump(
                    &nat_chain(KUBE_SERVICES)?.unwrap_or_default(),
                    *cluster_ip,
                    &svc,
                )
        }
        Change::ServiceRemoved {
            service,
            cluster_ip,
        } => {
            let (svc, _) = iptables_chains(service, &[]);
            !has_jump(
                &nat_chain(KUBE_SERVICES)?.unwrap_or_default(),
                *cluster_ip,
                &svc,
            )
        }
        Change::NodePort { service, port } => {
            let (_, chains) = port_chains(service);
            let dport = format!("--dport {port} ");
            let jump = format!("-j {}", chains.ext);
            nat_chain(KUBE_NODEPORTS)?
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(&dport) && l.trim_end().ends_with(&jump))
        }
    })
}

/// The names of the proxy's chains (of the nat table in iptables mode),
/// through the netlink dump (names only: no rule is decoded).
pub fn chain_names(mode: Mode) -> Result<HashSet<String>, String> {
    nft_netlink::chain_names(IpFamily::V4, mode.table())
        .map(|names| names.into_iter().collect())
        .map_err(|e| format!("netlink chain dump: {e}"))
}

/// What the floor's copy must share with the proxy's ruleset to be of
/// the same size: iptables, the rules of `KUBE-SERVICES` (one per
/// ClusterIP, LB IP, ...); nftables, the chain names (netlink).
pub fn fingerprint(mode: Mode) -> Result<HashSet<String>, String> {
    match mode {
        Mode::Iptables => Ok(nat_chain(KUBE_SERVICES)?
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()),
        Mode::Nftables => chain_names(mode),
    }
}

/// One Service the cold start must have programmed.
pub struct Expected {
    pub service: String,
    pub cluster_ip: Ipv4Addr,
    pub endpoints: Vec<Ipv4Addr>,
}

/// How many Services' endpoints [`complete`] reads in iptables mode.
const ENDPOINT_SAMPLE: usize = 100;

/// Whether the kernel holds every Service of `expected` (iptables: with
/// the endpoints of a sample of them; nftables: with every endpoint).
/// iptables: `KUBE-SERVICES` sends every ClusterIP to its Service's
/// `KUBE-SVC-…` (the kernel refuses a jump to a missing chain, so every
/// such chain exists), and for [`ENDPOINT_SAMPLE`] Services spread over
/// `expected` the `KUBE-SVC-…` jumps to the `KUBE-SEP-…` of each endpoint
/// (named by a hash of its `ip:port`). Not every endpoint: that would mean
/// reading every chain, the whole table; the netlink dump of the chain
/// names took minutes for 330k chains (kernel time, likely quadratic).
/// nftables: every address is in the table.
pub fn complete(mode: Mode, expected: &[Expected]) -> Result<bool, String> {
    match mode {
        Mode::Iptables => {
            let services = nat_chain(KUBE_SERVICES)?.unwrap_or_default();
            let jumps: HashSet<(Ipv4Addr, &str)> = services
                .lines()
                .filter_map(|l| {
                    let ip = l.split_once("-d ")?.1.split_once("/32")?.0.parse().ok()?;
                    let chain = l.rsplit_once("-j ")?.1.trim();
                    Some((ip, chain))
                })
                .collect();
            let all_services = expected.iter().all(|s| {
                let (svc, _) = iptables_chains(&s.service, &[]);
                jumps.contains(&(s.cluster_ip, svc.as_str()))
            });
            if !all_services {
                return Ok(false);
            }
            let step = expected.len().div_ceil(ENDPOINT_SAMPLE).max(1);
            for s in expected.iter().step_by(step).chain(expected.last()) {
                let (svc, seps) = iptables_chains(&s.service, &s.endpoints);
                let rules = nat_chain(&svc)?.unwrap_or_default();
                if !seps.iter().all(|sep| rules.contains(&format!("-j {sep}"))) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Mode::Nftables => {
            let found = addresses(&nft_table()?);
            Ok(expected.iter().all(|s| {
                found.contains(&s.cluster_ip) && s.endpoints.iter().all(|e| found.contains(e))
            }))
        }
    }
}
