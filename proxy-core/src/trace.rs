//! What a packet tracer records (feature `trace`): the steps of a traced
//! packet's path and the endpoints a DNAT (or balancer) may pick. Every
//! backend's tracer records these, and `kube-proxy trace` prints them.

use std::net::SocketAddr;

/// One step of a traced packet's path: a chain (or listener, virtual
/// server) entered, or a rule in it that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    /// How deep in jumps, as the backend counts (the iptables tracer
    /// counts its built-in chains as 1, the nftables one its base chains
    /// as 0).
    pub depth: usize,
    /// The table: `nat`, `filter`, `kube-proxy`, `ipvs`, `listeners`, ….
    pub table: String,
    /// The chain (or listener, virtual server, service port).
    pub chain: String,
    /// The rule that matched, as the kernel (or the backend) lists it;
    /// `None` when the hop is the chain being entered.
    pub rule: Option<String>,
    /// What the match means: DNAT target and probability, affinity, marks.
    pub notes: Vec<String>,
}

impl Hop {
    /// `chain` of `table` being entered, `depth` jumps deep.
    pub fn enter(depth: usize, table: &str, chain: &str) -> Self {
        Hop {
            depth,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: None,
            notes: Vec::new(),
        }
    }

    /// `rule` of `chain` in `table` matched, `depth` jumps deep, meaning
    /// `notes`.
    pub fn rule(depth: usize, table: &str, chain: &str, rule: String, notes: Vec<String>) -> Self {
        Hop {
            depth,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: Some(rule),
            notes,
        }
    }
}

/// One endpoint a DNAT (or the balancer) may send the packet to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Choice {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// The chance that a new client (no affinity entry) lands here; for an
    /// affinity choice, the chance among remembered clients.
    pub probability: f64,
    /// Whether this choice is reached through a session-affinity check (a
    /// client seen recently goes here).
    pub affinity: bool,
}
