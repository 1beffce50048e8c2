//! What `kube-proxy diff` reports per service port, whichever mode
//! compared: shared by the modes' comparisons (the binary's for iptables,
//! nftables and userspace; backend-ipvs's for ipvs) so every report has one
//! shape.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// How one service port differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Wanted, but none of its rules are in the kernel.
    Missing,
    /// In the kernel, but not wanted.
    Extra,
    /// Both, with differences.
    Different,
}

/// One service port (or the shared rules) that differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortDiff {
    /// `namespace/name:port` (iptables, ipvs) or `namespace/name/proto/port`
    /// (nftables); "(shared)" for the rules of no single service port; for
    /// ipvs also `ADDRESS:PORT/PROTO` of a virtual server no port wants.
    pub service_port: String,
    /// How it differs.
    pub status: Status,
    /// Endpoints wanted but not programmed (ipvs: real servers not taking
    /// new connections).
    pub missing_endpoints: BTreeSet<SocketAddr>,
    /// Endpoints programmed but not wanted.
    pub extra_endpoints: BTreeSet<SocketAddr>,
    /// Rules (and set elements, virtual servers, addresses) wanted but
    /// absent.
    pub missing_rules: Vec<String>,
    /// Rules present but not wanted.
    pub extra_rules: Vec<String>,
}
