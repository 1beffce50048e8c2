//! A small typed client for the kernel's IPVS generic-netlink family
//! (`IPVS`, `include/uapi/linux/ip_vs.h`): virtual servers and their real
//! servers (get, new, set, delete), flush, and the tcp/tcpfin/udp timeouts,
//! for IPv4 and IPv6, TCP, UDP and SCTP.
//!
//! Built on `netlink-packet-core` and `netlink-sys`, the crates the
//! conntrack client already uses; the generic-netlink header (4 bytes) and
//! the family lookup (`CTRL_CMD_GETFAMILY`) are done here rather than with
//! another crate.
//!
//! - `attribute`: netlink attributes, encoded and decoded (nested or not);
//! - `message`: a generic-netlink message (command, version, attributes);
//! - `types`: [`VirtualServer`], [`RealServer`], … and their attributes;
//! - `client`: [`IpvsNetlink`], the socket and the requests;
//! - `route`: [`RouteNetlink`], `kube-ipvs0` and addresses over rtnetlink
//!   (`netlink-packet-route`'s types);
//! - `exchange`: one request and its answers, for both.

pub(crate) mod attribute;
mod client;
mod exchange;
pub(crate) mod message;
mod route;
mod types;

pub use client::IpvsNetlink;
pub use route::{LinkAddress, RouteNetlink};
pub use types::{
    Destination, Forwarding, IpvsProtocol, RealServer, ServiceFlags, ServiceKey, Timeouts,
    VirtualServer,
};
