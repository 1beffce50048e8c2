//! `kube-proxy trace`: where does this packet go, and why? Walks one first
//! packet through the live rules of the current network namespace (or a
//! dump) with the backend's own tracer, and prints each chain entered, the
//! rules that matched as the kernel lists them, DNAT choices with their
//! probabilities, affinity and masquerade marks, and the verdict.
//!
//! Modes: iptables (`iptables-save`), nftables (`nft -j list`), ipvs (the
//! virtual servers over netlink, `ipset save`, `iptables-save`, the
//! `kube-ipvs0` addresses) and userspace (the listener table the proxy
//! serves at `/proxyListeners` on its metrics address, plus its redirect
//! rules from `nft -j list`).
//!
//! It changes nothing; it needs no running kube-proxy except in userspace
//! mode, whose listeners live in the proxy's process. Reading the kernel's
//! rules needs the privileges `iptables-save`/`nft list`/`ipset` need.

pub mod error;
pub mod live;
pub mod report;
#[cfg(feature = "userspace")]
pub mod userspace;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use proxy_core::conformance::{Origin, Packet};
use proxy_core::{IpFamily, Protocol, ProxyMode};

pub use error::InspectError;
pub use live::Rules;
pub use report::{ChoiceInfo, HopInfo, PacketInfo, TraceReport};

/// Exit code of `trace` and `diff` when they cannot answer.
pub const EXIT_ERROR: u8 = 2;

fn protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(format!("unknown protocol {text:?} (tcp, udp or sctp)")),
    }
}

fn mode(text: &str) -> Result<ProxyMode, String> {
    text.parse::<ProxyMode>().map_err(|e| e.to_string())
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable.
    Text,
    /// One JSON object.
    Json,
}

/// `kube-proxy trace`'s command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kube-proxy trace",
    about = "Trace where a new connection goes through kube-proxy's rules in this network namespace (or a dump). Changes nothing."
)]
pub struct TraceArgs {
    /// Protocol: tcp, udp or sctp.
    #[arg(long, default_value = "tcp", value_parser = protocol)]
    pub proto: Protocol,
    /// Source IP of the packet. A node address (or loopback) without
    /// --in-interface means the node itself sends it.
    #[arg(long, value_name = "IP")]
    pub from: IpAddr,
    /// Destination IP:port (IPv6: `[addr]:port`).
    #[arg(long, value_name = "IP:PORT")]
    pub to: SocketAddr,
    /// The mode whose rules to read (default: the one installed).
    #[arg(long, value_name = "MODE", value_parser = mode)]
    pub proxy_mode: Option<ProxyMode>,
    /// The interface the packet arrives on (e.g. eth0 for traffic from
    /// outside, the pod bridge or veth for pod traffic).
    #[arg(long, value_name = "IF")]
    pub in_interface: Option<String>,
    /// Read rules from this file instead of the kernel: `iptables-save`
    /// (or `ip6tables-save`) output, `nft -j list ruleset` output, the
    /// userspace mode's `/proxyListeners` JSON, or ipvs mode's dump (`###
    /// ipvsadm -Sn`, `### ipset save`, `### iptables-save` and `###
    /// kube-ipvs0` sections, each followed by that command's output).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// With --rules: the node's own addresses (repeatable); live tracing
    /// reads them from the interfaces.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// userspace mode: the proxy's metricsBindAddress, where its listener
    /// table is served (`/proxyListeners`).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:10249")]
    pub metrics_address: SocketAddr,
}

/// A packet to trace, as the command line gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Protocol.
    pub protocol: Protocol,
    /// Source.
    pub from: IpAddr,
    /// Destination.
    pub to: SocketAddr,
    /// Input interface.
    pub in_interface: Option<String>,
}

impl Request {
    /// The packet and the interface it enters on: sent by the host when the
    /// source is local and no interface is given; otherwise arriving on the
    /// given interface (or an unnamed one).
    fn packet(&self, local_ips: &[IpAddr]) -> (Packet, Option<String>) {
        let local = self.from.is_loopback() || local_ips.contains(&self.from);
        let origin = if self.in_interface.is_none() && local {
            Origin::Host
        } else {
            Origin::External
        };
        let iif = match origin {
            Origin::Host => None,
            _ => Some(self.in_interface.clone().unwrap_or_default()),
        };
        (
            Packet {
                origin,
                source: self.from,
                protocol: self.protocol,
                destination: self.to.ip(),
                port: self.to.port(),
            },
            iif,
        )
    }
}

/// The iptables tracer (and the ipvs one on it) counts its built-in
/// chains as depth 1; the report counts from 0.
#[cfg(any(feature = "iptables", feature = "ipvs"))]
fn depth_from_zero(hops: Vec<HopInfo>) -> Vec<HopInfo> {
    hops.into_iter()
        .map(|h| HopInfo {
            depth: h.depth.saturating_sub(1),
            ..h
        })
        .collect()
}

fn family_of(ip: IpAddr) -> IpFamily {
    if ip.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

/// Traces `request` through `rules` (of `mode`) on a node whose addresses
/// are `local_ips`.
pub fn trace_rules(
    rules: &Rules,
    mode: ProxyMode,
    local_ips: &[IpAddr],
    request: &Request,
) -> Result<TraceReport, InspectError> {
    let family = family_of(request.to.ip());
    if family_of(request.from) != family {
        return Err(InspectError::Usage(format!(
            "--from {} and --to {} are of different IP families",
            request.from, request.to
        )));
    }
    let (packet, iif) = request.packet(local_ips);
    let (hops, choices, outcome) = match rules {
        #[cfg(feature = "iptables")]
        Rules::Iptables(tables) => {
            let node = backend_iptables::trace::Node {
                local_ips: local_ips.to_vec(),
            };
            let path =
                backend_iptables::trace::trace_path_lenient(tables, &node, &packet, iif.as_deref())
                    .map_err(|e| InspectError::Rules(e.to_string()))?;
            (depth_from_zero(path.hops), path.choices, path.outcome)
        }
        #[cfg(feature = "nftables")]
        Rules::Nftables(table) => match table {
            None => (
                Vec::new(),
                Vec::new(),
                proxy_core::conformance::Outcome::NotMatched,
            ),
            Some(table) => {
                let tracer = backend_nftables::fake::Tracer::new(table, family, local_ips.to_vec());
                let path = tracer.trace_path(&packet, iif.as_deref());
                (path.hops, path.choices, path.outcome)
            }
        },
        #[cfg(feature = "ipvs")]
        Rules::Ipvs(rules) => {
            let path = rules
                .trace_path(local_ips, &packet, iif.as_deref())
                .map_err(|e| InspectError::Rules(e.to_string()))?;
            (depth_from_zero(path.hops), path.choices, path.outcome)
        }
        #[cfg(feature = "userspace")]
        Rules::Userspace(rules) => userspace::trace(
            rules,
            local_ips,
            request.protocol,
            request.to,
            packet.origin == Origin::Host,
        ),
    };
    Ok(TraceReport {
        mode: mode.to_string(),
        family: family.to_string(),
        packet: PacketInfo {
            protocol: request.protocol.lower().to_string(),
            from: request.from,
            to: request.to,
            origin: packet.origin,
            in_interface: iif,
        },
        hops,
        choices,
        outcome,
    })
}

/// Traces `request` through the live rules of the current network
/// namespace (mode `wanted`, or the one installed).
pub async fn trace_live(
    wanted: Option<ProxyMode>,
    request: &Request,
) -> Result<TraceReport, InspectError> {
    trace_live_at(wanted, request, None).await
}

/// [`trace_live`], reading the userspace mode's listener table from the
/// metrics server at `metrics` (default `127.0.0.1:10249`).
pub async fn trace_live_at(
    wanted: Option<ProxyMode>,
    request: &Request,
    metrics: Option<SocketAddr>,
) -> Result<TraceReport, InspectError> {
    let mode = match wanted {
        Some(mode) => mode,
        None => live::choose_mode(None, &live::detect_live().await?)?,
    };
    let rules = live::read_live_at(mode, family_of(request.to.ip()), metrics).await?;
    let local = proxy_core::runtime::host_addresses().map_err(|e| InspectError::Read {
        what: "the node's addresses".into(),
        detail: e.to_string(),
    })?;
    trace_rules(&rules, mode, &local, request)
}

async fn execute(args: &TraceArgs) -> Result<TraceReport, InspectError> {
    let request = Request {
        protocol: args.proto,
        from: args.from,
        to: args.to,
        in_interface: args.in_interface.clone(),
    };
    match &args.rules {
        Some(path) => {
            let (mode, rules) = live::read_file(path, args.proxy_mode, family_of(args.to.ip()))?;
            trace_rules(&rules, mode, &args.node_ips, &request)
        }
        None => trace_live_at(args.proxy_mode, &request, Some(args.metrics_address)).await,
    }
}

/// Prints `text`; a closed pipe (`| head`) is not an error.
pub(crate) fn write_stdout(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Runs a single-threaded runtime for a listing command.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, InspectError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(future))
        .map_err(|e| InspectError::Read {
            what: "an async runtime".into(),
            detail: e.to_string(),
        })
}

/// `kube-proxy trace ARGS`: prints the report; exit 0 when traced, 2 when
/// the rules could not be read.
pub fn main(args: &[String]) -> ExitCode {
    let args = match crate::parse_subcommand::<TraceArgs>("trace", args) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match block_on(execute(&args)).and_then(|r| r) {
        Ok(report) => {
            let text = match args.output {
                Format::Text => report.text(),
                Format::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => json + "\n",
                    Err(e) => {
                        eprintln!("kube-proxy trace: {e}");
                        return ExitCode::from(EXIT_ERROR);
                    }
                },
            };
            write_stdout(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kube-proxy trace: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
