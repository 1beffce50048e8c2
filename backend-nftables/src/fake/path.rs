//! The path a traced packet takes through our nftables table: chains
//! entered, rules matched, map lookups and DNAT choices. What `kube-proxy
//! trace` prints.

use std::net::SocketAddr;

use proxy_core::conformance::Outcome;

/// One step of a packet's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// How deep in jumps (a base chain is 0).
    pub depth: usize,
    /// The chain.
    pub chain: String,
    /// The rule that matched, as `nft list` prints it; `None` when the hop
    /// is the chain being entered.
    pub rule: Option<String>,
    /// What the match means: map lookups, DNAT target and probability,
    /// affinity, marks.
    pub notes: Vec<String>,
}

/// One endpoint a DNAT may send the packet to.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// The chance that a new client (no affinity entry) lands here; for an
    /// affinity choice, the chance among remembered clients.
    pub probability: f64,
    /// Whether this DNAT is reached through a session-affinity lookup (a
    /// client seen recently goes here).
    pub affinity: bool,
}

/// A traced packet: its path and where it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Every chain entered and rule matched, in order (each once, though
    /// random choices walk the rest of the path once per branch).
    pub hops: Vec<Hop>,
    /// Every endpoint a DNAT may pick, with its chance.
    pub choices: Vec<Choice>,
    /// What happens to the packet (every branch folded, as
    /// [`Tracer::trace`](super::Tracer::trace) gives it).
    pub outcome: Outcome,
}
