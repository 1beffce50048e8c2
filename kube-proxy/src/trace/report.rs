//! One traced packet, whatever the mode: what `kube-proxy trace` prints as
//! text or JSON.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use proxy_core::conformance::{Origin, Outcome};
/// One step of the path; one endpoint a DNAT may pick: as every tracer
/// records them (depth counted from 0 here).
pub use proxy_core::trace::{Choice as ChoiceInfo, Hop as HopInfo};

/// The packet that was traced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PacketInfo {
    /// `tcp`, `udp`, `sctp`.
    pub protocol: String,
    /// Source address.
    pub from: IpAddr,
    /// Destination.
    pub to: SocketAddr,
    /// Where it enters: `host` (sent by the node itself), else it arrives
    /// on `in_interface`.
    pub origin: Origin,
    /// The input interface (`None` for host traffic; empty when unknown).
    pub in_interface: Option<String>,
}

/// A traced packet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceReport {
    /// The mode whose rules were walked.
    pub mode: String,
    /// `IPv4` or `IPv6`.
    pub family: String,
    /// The packet.
    pub packet: PacketInfo,
    /// The path.
    pub hops: Vec<HopInfo>,
    /// DNAT choices.
    pub choices: Vec<ChoiceInfo>,
    /// The verdict.
    pub outcome: Outcome,
}

impl TraceReport {
    /// The verdict in one sentence.
    pub fn verdict(&self) -> String {
        match &self.outcome {
            Outcome::Forwarded {
                endpoints,
                masqueraded,
            } => format!(
                "FORWARDED to {} ({})",
                endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                if self.mode == "userspace" {
                    "the proxy connects from a node address"
                } else if *masqueraded {
                    "source masqueraded to a node address"
                } else {
                    "client source address kept"
                }
            ),
            Outcome::Dropped => "DROPPED by the proxy's rules".to_string(),
            Outcome::Rejected => {
                "REJECTED by the proxy's rules (ICMP unreachable / TCP reset)".to_string()
            }
            Outcome::NotMatched => {
                "NOT A SERVICE ADDRESS: no proxy rule changes this packet".to_string()
            }
        }
    }

    /// The report as text: the path indented by jump depth, then the DNAT
    /// choices and the verdict.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let p = &self.packet;
        let entry = match (&p.origin, p.in_interface.as_deref()) {
            (Origin::Host, _) => "sent by the node itself".to_string(),
            (_, Some("")) | (_, None) => {
                "arriving on an unnamed interface (pass --in-interface)".to_string()
            }
            (_, Some(i)) => format!("arriving on {i}"),
        };
        let _ = writeln!(
            out,
            "{} {} -> {}, {entry}; {} mode, {}",
            p.protocol, p.from, p.to, self.mode, self.family
        );
        for hop in &self.hops {
            let indent = "  ".repeat(hop.depth);
            match &hop.rule {
                None => {
                    let _ = writeln!(out, "{indent}chain {}/{}", hop.table, hop.chain);
                }
                Some(rule) => {
                    let _ = writeln!(out, "{indent}  match: {rule}");
                    for note in &hop.notes {
                        let _ = writeln!(out, "{indent}    => {note}");
                    }
                }
            }
        }
        if !self.choices.is_empty() {
            let _ = writeln!(
                out,
                "{}",
                if self.mode == "userspace" {
                    "Endpoint choices (round robin):"
                } else {
                    "DNAT choices:"
                }
            );
            for c in &self.choices {
                let _ = writeln!(
                    out,
                    "  {:<28} {}",
                    c.endpoint.to_string(),
                    if c.affinity {
                        "session affinity: a returning client".to_string()
                    } else {
                        format!("probability {:.3}", c.probability)
                    },
                );
            }
        }
        let _ = writeln!(out, "verdict: {}", self.verdict());
        out
    }
}
