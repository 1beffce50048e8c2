//! The per-mode sections (`iptables`, `ipvs`, `nftables`, `userspace`,
//! `winkernel`) and the `conntrack` and `detectLocal` sections.
//!
//! Fields are declared in the alphabetical order upstream writes them in.
//! `Default` is Go's zero value; upstream's defaults are applied by
//! [`KubeProxyConfiguration`](super::KubeProxyConfiguration) (see `defaults.rs`).

use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::fields;

/// `iptables`: the iptables mode (also used by ipvs for the masquerade mark
/// and `masqueradeAll`, as upstream does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct IptablesConfiguration {
    /// `localhostNodePorts`: whether NodePorts are reachable on 127.0.0.1
    /// (IPv4 only; default true).
    pub localhost_node_ports: Option<bool>,
    /// `masqueradeAll`: masquerade every packet sent to a ClusterIP.
    pub masquerade_all: bool,
    /// `masqueradeBit`: the fwmark bit marking packets to masquerade, in
    /// [0, 31] (default 14, i.e. mark `0x4000`).
    pub masquerade_bit: Option<i32>,
    /// `minSyncPeriod`: the minimum time between syncs (default 1s; a zero
    /// value is replaced by the default, as upstream does).
    #[serde(deserialize_with = "fields::iptables_min_sync_period")]
    pub min_sync_period: Duration,
    /// `syncPeriod`: the maximum time between full resyncs (default 30s).
    #[serde(deserialize_with = "fields::iptables_sync_period")]
    pub sync_period: Duration,
}

/// `ipvs`: the IPVS mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct IpvsConfiguration {
    /// `excludeCIDRs`: virtual servers in these CIDRs are left alone when
    /// cleaning up (`null` by default).
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
    /// `minSyncPeriod`: the minimum time between syncs (default 0s).
    #[serde(deserialize_with = "fields::ipvs_min_sync_period")]
    pub min_sync_period: Duration,
    /// `scheduler`: the IPVS scheduler; empty means `rr` (see
    /// [`KubeProxyConfiguration::effective_scheduler`](super::KubeProxyConfiguration::effective_scheduler)).
    pub scheduler: String,
    /// `strictARP`: set `arp_ignore=1` and `arp_announce=2`.
    #[serde(rename = "strictARP")]
    pub strict_arp: bool,
    /// `syncPeriod`: the period of full resyncs (default 30s).
    #[serde(deserialize_with = "fields::ipvs_sync_period")]
    pub sync_period: Duration,
    /// `tcpFinTimeout`: IPVS timeout of TCP sessions after a FIN; 0 leaves
    /// the kernel's value.
    #[serde(deserialize_with = "fields::ipvs_tcp_fin_timeout")]
    pub tcp_fin_timeout: Duration,
    /// `tcpTimeout`: IPVS timeout of idle TCP sessions; 0 leaves the
    /// kernel's value.
    #[serde(deserialize_with = "fields::ipvs_tcp_timeout")]
    pub tcp_timeout: Duration,
    /// `udpTimeout`: IPVS timeout of UDP sessions; 0 leaves the kernel's value.
    #[serde(deserialize_with = "fields::ipvs_udp_timeout")]
    pub udp_timeout: Duration,
}

/// `nftables`: the nftables mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NftablesConfiguration {
    /// `masqueradeAll`: masquerade every packet sent to a ClusterIP.
    pub masquerade_all: bool,
    /// `masqueradeBit`: the mark bit for masquerading, in [0, 31] (default 14).
    pub masquerade_bit: Option<i32>,
    /// `minSyncPeriod`: the minimum time between syncs (default 1s).
    #[serde(deserialize_with = "fields::nftables_min_sync_period")]
    pub min_sync_period: Duration,
    /// `syncPeriod`: the maximum time between full resyncs (default 30s).
    #[serde(deserialize_with = "fields::nftables_sync_period")]
    pub sync_period: Duration,
}

/// `userspace`: **our own section**; upstream v1alpha1 has no such section
/// (upstream removed userspace mode in v1.26, when it used the `iptables`
/// periods and a top-level `udpIdleTimeout`). Upstream kube-proxy rejects a
/// file that has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UserspaceConfiguration {
    /// `maxUDPSessions` (default 4096): the most UDP sessions one UDP
    /// listener (a service port on one address) keeps. A new client beyond
    /// it first closes the sessions idle the longest (up to 1/16 of the cap
    /// at once, so that a flood of new clients costs constant time each).
    /// Each session holds a socket and a task; the cap bounds them however
    /// many client ports a flood uses, and per listener, so that one
    /// flooded service never evicts another's sessions.
    #[serde(rename = "maxUDPSessions")]
    pub max_udp_sessions: Option<i32>,
    /// `minSyncPeriod`: the minimum time between syncs (default 1s).
    #[serde(deserialize_with = "fields::userspace_min_sync_period")]
    pub min_sync_period: Duration,
    /// `syncPeriod`: the maximum time between full resyncs (default 30s).
    #[serde(deserialize_with = "fields::userspace_sync_period")]
    pub sync_period: Duration,
    /// `udpIdleTimeout`: how long an idle proxied UDP session is kept
    /// (default 250ms, as upstream's old userspace proxier).
    #[serde(deserialize_with = "fields::userspace_udp_idle_timeout")]
    pub udp_idle_timeout: Duration,
    /// `redirectServiceIPs` (default true): when the process has
    /// `CAP_NET_ADMIN` and `nft` is installed, install nftables redirect
    /// rules (tables `ip/ip6 kube-proxy-userspace`) so that traffic to
    /// ClusterIPs, external IPs and load-balancer IPs reaches the proxy.
    /// False serves only node ports and addresses local to the host, and
    /// never changes the kernel's rules.
    #[serde(rename = "redirectServiceIPs")]
    pub redirect_service_ips: Option<bool>,
}

/// `winkernel`: Windows HNS settings. Parsed and kept; unused on Linux.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WinkernelConfiguration {
    /// `enableDSR`: create HNS policies with direct server return.
    #[serde(rename = "enableDSR")]
    pub enable_dsr: bool,
    /// `forwardHealthCheckVip`: forward the service VIP for the health check port.
    pub forward_health_check_vip: bool,
    /// `networkName`: the HNS network to create endpoints and policies in.
    pub network_name: String,
    /// `rootHnsEndpointName`: the HNS endpoint attached to the root namespace.
    pub root_hns_endpoint_name: String,
    /// `sourceVip`: the source VIP used for NAT when load balancing.
    pub source_vip: String,
}

/// `conntrack`: conntrack sysctls set at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ConntrackConfiguration {
    /// `maxPerCore`: connections tracked per CPU (default 32768); 0 leaves
    /// `nf_conntrack_max` alone and ignores `min`.
    pub max_per_core: Option<i32>,
    /// `min`: the lower bound of `nf_conntrack_max` (default 131072).
    pub min: Option<i32>,
    /// `tcpBeLiberal`: set `nf_conntrack_tcp_be_liberal=1`.
    pub tcp_be_liberal: bool,
    /// `tcpCloseWaitTimeout`: `nf_conntrack_tcp_timeout_close_wait`
    /// (default 1h); 0 leaves the kernel's value.
    #[serde(deserialize_with = "fields::conntrack_tcp_close_wait_timeout")]
    pub tcp_close_wait_timeout: Option<Duration>,
    /// `tcpEstablishedTimeout`: `nf_conntrack_tcp_timeout_established`
    /// (default 24h); 0 leaves the kernel's value.
    #[serde(deserialize_with = "fields::conntrack_tcp_established_timeout")]
    pub tcp_established_timeout: Option<Duration>,
    /// `udpStreamTimeout`: `nf_conntrack_udp_timeout_stream`; 0 leaves the
    /// kernel's value.
    #[serde(deserialize_with = "fields::conntrack_udp_stream_timeout")]
    pub udp_stream_timeout: Duration,
    /// `udpTimeout`: `nf_conntrack_udp_timeout`; 0 leaves the kernel's value.
    #[serde(deserialize_with = "fields::conntrack_udp_timeout")]
    pub udp_timeout: Duration,
}

/// `detectLocal`: the settings of the interface-based `detectLocalMode`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DetectLocalConfiguration {
    /// `bridgeInterface`: the bridge local pods are attached to
    /// (required by `BridgeInterface` mode).
    pub bridge_interface: String,
    /// `interfaceNamePrefix`: the name prefix of local pods' interfaces
    /// (required by `InterfaceNamePrefix` mode).
    pub interface_name_prefix: String,
}
