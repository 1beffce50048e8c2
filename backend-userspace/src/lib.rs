//! # backend-userspace
//!
//! The `userspace` proxy mode: kube-proxy itself listens on the service
//! addresses it can serve and forwards each connection to an endpoint. It
//! needs no privileges and no kernel rules for node ports, so it runs where
//! the other modes cannot: unprivileged hosts, laptops, tests, localhost
//! node ports; with `CAP_NET_ADMIN` it also captures VIP traffic.
//!
//! - **Listeners**: a Tokio TCP listener or UDP socket per service address:
//!   the node port on every node-port address (the unspecified address when
//!   `nodePortAddresses` is empty), and ClusterIPs, external IPs and
//!   load-balancer IPs when they are assigned to this host.
//! - **Redirect rules** ([`RedirectMode`]): with `CAP_NET_ADMIN` and `nft`,
//!   the tables `ip`/`ip6 kube-proxy-userspace` redirect every ClusterIP,
//!   external IP and load-balancer IP to a listener per service port
//!   (an ephemeral port on the unspecified address), as upstream's old
//!   userspace mode did with iptables; VIPs of services without endpoints
//!   are rejected by the rules.
//! - **Balancing**: round robin over the endpoints the
//!   [`NodeView`](proxy_core::NodeView) chose ([`ServicePortView`](proxy_core::ServicePortView)
//!   targets), the next endpoint when a connect fails, ClientIP affinity;
//!   `Reject` targets reset each TCP connection at once (UDP: nothing
//!   listens, the kernel answers port unreachable); `Drop` targets hold the
//!   connection unanswered, like a dropped SYN.
//! - **UDP**: a session per client address, ended after
//!   `userspace.udpIdleTimeout` (250 ms by default) without traffic.
//! - **Speed**: `splice(2)` for bulk on Linux (default feature `splice`),
//!   otherwise `copy_bidirectional` with 64 KiB buffers; `TCP_NODELAY` on
//!   both sides.
//!
//! See the crate README for what it cannot do ([`CAPABILITIES`]).
#![warn(missing_docs)]

mod backend;
mod balancer;
mod error;
mod factory;
#[cfg(feature = "fake")]
pub mod fake;
mod forward;
mod host;
mod kernel_listing;
mod listener;
mod options;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod pktinfo;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "pktinfo_unsupported.rs"]
mod pktinfo;
mod plan;
mod redirect;
mod route;
mod sockets;
mod table;
mod tcp;
mod trace;
mod udp;

pub use backend::{CAPABILITIES, CAPABILITIES_WITH_REDIRECT, ListenerFailure, UserspaceBackend};
pub use error::UserspaceError;
pub use factory::UserspaceFactory;
pub use forward::Forwarding;
pub use host::HostAddresses;
pub use kernel_listing::kernel_redirects;
pub use options::Options;
pub use plan::{ListenerKey, ListenerSpec, NodePortAddresses, RedirectSpec, TrafficClass};
pub use redirect::{RedirectMode, Vip};
pub use table::{
    Class, ListenerTable, TableBalancer, TableFailure, TableListener, TableRedirect,
    TableRedirectListener, TableTarget,
};
pub use trace::{Choice, Hop, KernelRedirects, Path, Verdict};

#[cfg(test)]
mod testutil;
