//! Redirect mode: with `CAP_NET_ADMIN`, nftables rules send traffic for
//! ClusterIPs, external IPs and load-balancer IPs to a listener the backend
//! opened for that service port (an ephemeral port on the unspecified
//! address), as upstream's old userspace mode did with iptables `REDIRECT`.
//!
//! - [`mode`]: when it is on ([`RedirectMode`]).
//! - [`table`]: what the table holds (VIP → listener port, or reject).
//! - [`json`]: transactions in the `nftables` crate's JSON schema.
//! - [`rules`]: the table as last written, and the writes of a sync.
//! - [`text`]: the table as an nft script, for dry runs.

pub(crate) mod json;
pub(crate) mod mode;
pub(crate) mod rules;
pub(crate) mod table;
pub(crate) mod text;

pub use mode::RedirectMode;
pub use table::Vip;
pub(crate) mod state;
