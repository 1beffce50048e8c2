/// What a backend can express. Plain data: the conformance suite reads it to
/// decide which scenarios apply, and prints why it skips the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Serves IPv6 services.
    pub ipv6: bool,
    /// Proxies SCTP.
    pub sctp: bool,
    /// Captures traffic sent to ClusterIPs.
    pub cluster_ip: bool,
    /// Captures traffic sent to node ports.
    pub node_port: bool,
    /// Captures traffic sent to external IPs and load-balancer IPs.
    pub external_ip: bool,
    /// Enforces `loadBalancerSourceRanges`.
    pub source_ranges: bool,
    /// Implements ClientIP session affinity.
    pub session_affinity: bool,
    /// Endpoints see the client's own IP when upstream would not masquerade.
    pub preserves_client_ip: bool,
    /// Rejects traffic for services without endpoints (rather than dropping
    /// or ignoring it).
    pub reject: bool,
    /// Tells traffic from local pods apart (detect-local modes).
    pub detect_local: bool,
}

impl Capabilities {
    /// Everything upstream's iptables mode can do.
    pub const ALL: Capabilities = Capabilities {
        ipv6: true,
        sctp: true,
        cluster_ip: true,
        node_port: true,
        external_ip: true,
        source_ranges: true,
        session_affinity: true,
        preserves_client_ip: true,
        reject: true,
        detect_local: true,
    };

    /// Whether `capability` is supported.
    pub fn supports(&self, capability: Capability) -> bool {
        match capability {
            Capability::Ipv6 => self.ipv6,
            Capability::Sctp => self.sctp,
            Capability::ClusterIp => self.cluster_ip,
            Capability::NodePort => self.node_port,
            Capability::ExternalIp => self.external_ip,
            Capability::SourceRanges => self.source_ranges,
            Capability::SessionAffinity => self.session_affinity,
            Capability::PreservesClientIp => self.preserves_client_ip,
            Capability::Reject => self.reject,
            Capability::DetectLocal => self.detect_local,
        }
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// One field of [`Capabilities`], by name; scenario files list the ones
/// they need (`requires: [session_affinity]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// [`Capabilities::ipv6`].
    Ipv6,
    /// [`Capabilities::sctp`].
    Sctp,
    /// [`Capabilities::cluster_ip`].
    ClusterIp,
    /// [`Capabilities::node_port`].
    NodePort,
    /// [`Capabilities::external_ip`].
    ExternalIp,
    /// [`Capabilities::source_ranges`].
    SourceRanges,
    /// [`Capabilities::session_affinity`].
    SessionAffinity,
    /// [`Capabilities::preserves_client_ip`].
    PreservesClientIp,
    /// [`Capabilities::reject`].
    Reject,
    /// [`Capabilities::detect_local`].
    DetectLocal,
}
