//! # backend-userspace
//!
//! The `userspace` proxy mode: kube-proxy itself listens on the service
//! addresses it can serve and forwards each connection to an endpoint. It
//! needs no privileges and no kernel rules, so it runs where the other modes
//! cannot: unprivileged hosts, laptops, tests, localhost node ports.
//!
//! - **Listeners**: a Tokio TCP listener or UDP socket per service address:
//!   the node port on every node-port address (the unspecified address when
//!   `nodePortAddresses` is empty), and ClusterIPs, external IPs and
//!   load-balancer IPs when they are assigned to this host.
//! - **Balancing**: round robin over the endpoints the
//!   [`NodeView`](proxy_core::NodeView) chose ([`ServicePortView`](proxy_core::ServicePortView)
//!   targets), the next endpoint when a connect fails, ClientIP affinity;
//!   `Reject` targets reset each TCP connection at once (UDP: nothing
//!   listens, the kernel answers port unreachable); `Drop` targets hold the
//!   connection unanswered, like a dropped SYN.
//! - **UDP**: a session per client address, ended after
//!   `userspace.udpIdleTimeout` (250 ms by default) without traffic.
//! - **Speed**: `splice(2)` on Linux with the `splice` feature, otherwise
//!   `copy_bidirectional` with 64 KiB buffers; `TCP_NODELAY` on both sides.
//!
//! See the crate README for what it cannot do ([`CAPABILITIES`]).

mod backend;
mod balancer;
mod error;
mod factory;
mod forward;
mod host;
mod listener;
mod options;
mod plan;
mod route;
mod sockets;
mod tcp;
mod trace;
mod udp;

pub use backend::{CAPABILITIES, ListenerFailure, UserspaceBackend};
pub use error::UserspaceError;
pub use factory::UserspaceFactory;
pub use forward::Forwarding;
pub use host::HostAddresses;
pub use options::Options;
pub use plan::{ListenerKey, ListenerSpec, NodePortAddresses, TrafficClass};
pub use trace::Verdict;

#[cfg(test)]
mod testutil;
