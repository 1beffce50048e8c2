//! The path a traced packet takes through our nftables table: chains
//! entered, rules matched, map lookups and DNAT choices. What `kube-proxy
//! trace` prints.

use proxy_core::conformance::Outcome;
pub use proxy_core::trace::{Choice, Hop};

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
