//! Chain names: upstream's fixed chains and the hashed per-service ones.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

use proxy_core::{Endpoint, ServicePortName};

/// nat and filter: entry point of service traffic.
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// filter: rejects/drops external traffic of services without usable endpoints.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// nat: node ports; filter: health-check node ports.
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// nat: masquerades marked traffic.
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// nat: marks traffic for masquerade.
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// filter: accepts forwarded service traffic, drops INVALID.
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
/// filter: drops load-balancer traffic not allowed by source ranges.
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// filter: kubelet's anti-martian chain (CVE-2020-8558 guard for localhost node ports).
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";
/// mangle, nat, filter: empty chain whose disappearance reveals a flush.
pub const KUBE_PROXY_CANARY: &str = proxy_core::exec::iptables::OWN_HINT_CHAIN;

/// Prefix of the chain load-balancing over `Cluster` endpoints.
pub const SVC_PREFIX: &str = "KUBE-SVC-";
/// Prefix of the chain load-balancing over `Local` endpoints.
pub const SVL_PREFIX: &str = "KUBE-SVL-";
/// Prefix of the chain handling external destinations.
pub const EXT_PREFIX: &str = "KUBE-EXT-";
/// Prefix of the chain enforcing `loadBalancerSourceRanges`.
pub const FW_PREFIX: &str = "KUBE-FW-";
/// Prefix of the per-endpoint DNAT chain.
pub const SEP_PREFIX: &str = "KUBE-SEP-";

/// The longest `--comment` `xt_comment` holds (`XT_MAX_COMMENT_LEN - 1`);
/// iptables silently cuts a longer one, so that `iptables-save` would no
/// longer show what was written.
pub const COMMENT_MAX: usize = 255;
/// The most a comment adds around a service port name: `other traffic to
/// NAME will be dropped by KUBE-PROXY-FIREWALL` (56 bytes), or
/// `NAME -> [IPv6]:port` (51).
pub const COMMENT_OVERHEAD_MAX: usize = 56;
/// The longest service port name (`ns/svc:port`) put into a comment:
/// longer ones (none the API server accepts: at most 63 + 1 + 63 + 1 + 63 =
/// 191 bytes) are cut with a hash by [`proxy_core::model::rule_comment`], so
/// that every comment stays within [`COMMENT_MAX`].
pub const NAME_IN_COMMENT_MAX: usize = COMMENT_MAX - COMMENT_OVERHEAD_MAX;

/// Whether `chain` is a per-service chain (the ones stale-chain deletion may remove).
pub fn is_service_chain(chain: &str) -> bool {
    [SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX]
        .iter()
        .any(|p| chain.starts_with(p))
}

/// `base32(sha256(text))[..16]`, upstream's `portProtoHash`.
fn hash16(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    // 10 bytes are exactly 16 base32 characters: the prefix of the full encoding.
    BASE32.encode(&digest[..10])
}

/// The hashed chain names of one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChains {
    /// `ns/name:port` as upstream prints it.
    pub name: String,
    /// `KUBE-SVC-…`.
    pub svc: String,
    /// `KUBE-SVL-…`.
    pub svl: String,
    /// `KUBE-EXT-…`.
    pub ext: String,
    /// `KUBE-FW-…`.
    pub fw: String,
}

impl PortChains {
    /// The chain names of `port`.
    pub fn new(port: &ServicePortName) -> Self {
        let name = port.to_string();
        let hash = hash16(&[&name, port.protocol.lower()]);
        PortChains {
            svc: format!("{SVC_PREFIX}{hash}"),
            svl: format!("{SVL_PREFIX}{hash}"),
            ext: format!("{EXT_PREFIX}{hash}"),
            fw: format!("{FW_PREFIX}{hash}"),
            name,
        }
    }

    /// `KUBE-SEP-…` of `endpoint` (hashed with its `ip:port` text, IPv6 in brackets).
    pub fn endpoint_chain(&self, port: &ServicePortName, endpoint: &Endpoint) -> String {
        self.endpoint_chain_of(port, &endpoint.to_string())
    }

    /// `KUBE-SEP-…` of the endpoint printed as `endpoint` (`ip:port`).
    pub fn endpoint_chain_of(&self, port: &ServicePortName, endpoint: &str) -> String {
        format!(
            "{SEP_PREFIX}{}",
            hash16(&[&self.name, port.protocol.lower(), endpoint])
        )
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::Protocol;

    use super::*;

    fn port(ns: &str, svc: &str, p: &str) -> ServicePortName {
        ServicePortName::new(ns, svc, p, Protocol::Tcp)
    }

    #[test]
    fn service_chain_hash_matches_upstream_examples() {
        assert_eq!(
            PortChains::new(&port("ns1", "svc1", "p80")).svc,
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            PortChains::new(&port("ns2", "svc2", "p80")).svc,
            "KUBE-SVC-GNZBNJ2PO5MGZ6GT"
        );
        assert_eq!(
            PortChains::new(&port("ns5", "svc5", "p80")).fw,
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
        assert_eq!(
            PortChains::new(&port("ns3", "svc3", "p80")).ext,
            "KUBE-EXT-X27LE4BHSL4DOUIK"
        );
    }

    #[test]
    fn endpoint_chain_hash_matches_upstream_examples() {
        let p = port("ns1", "svc1", "p80");
        let chains = PortChains::new(&p);
        assert_eq!(
            chains.endpoint_chain_of(&p, "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            chains.endpoint_chain_of(&p, "10.180.2.1:80"),
            "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"
        );
    }

    #[test]
    fn chain_names_fit_iptables_whatever_the_name() {
        // XT_EXTENSION_MAXNAMELEN - 1: the longest chain name iptables takes.
        const CHAIN_MAX: usize = 28;
        for p in [
            port(&"n".repeat(63), &"s".repeat(63), &"p".repeat(63)),
            port("n\"s", "a b\nc", "x;y"),
        ] {
            let chains = PortChains::new(&p);
            let sep =
                chains.endpoint_chain_of(&p, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
            for chain in [&chains.svc, &chains.svl, &chains.ext, &chains.fw, &sep] {
                assert!(chain.len() <= CHAIN_MAX, "{chain}");
                assert!(
                    chain
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'),
                    "{chain}"
                );
            }
        }
    }

    #[test]
    fn only_per_service_prefixes_are_service_chains() {
        assert!(is_service_chain("KUBE-SEP-SXIVWICOYRO3J4NJ"));
        assert!(is_service_chain("KUBE-FW-NUKIZ6OKUXPJNT4C"));
        assert!(!is_service_chain(KUBE_SERVICES));
        assert!(!is_service_chain(KUBE_MARK_MASQ));
    }
}
