//! Upstream's chain and set names: `service-HASH8-ns/svc/proto/port`,
//! `endpoint-HASH8-ns/svc/proto/port__ip/port`, ...

use std::net::SocketAddr;

use proxy_core::ServicePortName;
use sha2::{Digest, Sha256};

/// The longest comment nft accepts (`NFTNL_UDATA_COMMENT_MAXLEN`): its
/// parser refuses a longer one, and with it the whole transaction. Element
/// comments (the service port name `ns/svc:port`, up to 191 bytes for
/// API-valid names) are cut to it by [`proxy_core::model::rule_comment`]:
/// the first 119 bytes, `~` and a hash of the whole name.
pub const COMMENT_MAX: usize = 128;

/// nft's maximum object name length (`NFT_NAME_MAXLEN - 1`).
const NAME_LENGTH_MAX: usize = 256;
/// Longest prefix (`firewall-`, ...) including its hyphen.
const PREFIX_LENGTH_MAX: usize = 16;
const BASE_LENGTH_MAX: usize = NAME_LENGTH_MAX - PREFIX_LENGTH_MAX;

/// `HASH8-name`, truncated to 240 characters with `...` (upstream's
/// `hashAndTruncate`): HASH8 is the first 8 characters of the base32 of the
/// SHA-256 of `name`.
///
/// A byte nft does not take in an unquoted name (anything but ASCII
/// letters, digits and `/-_.`; API-valid names have none) becomes `_` in
/// the text; the hash is of `name` as it is, so names stay distinct.
pub fn hash_and_truncate(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let encoded = data_encoding::BASE32.encode(&digest);
    let text: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = format!("{}-{}", &encoded[..8], text);
    if out.len() > BASE_LENGTH_MAX {
        let mut cut = BASE_LENGTH_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// The chain names of one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNames {
    /// `ns/svc/proto/port`, the string the names are derived from.
    base: String,
    /// `service-…`: load-balances over the cluster endpoints.
    pub cluster: String,
    /// `local-…`: load-balances over the local endpoints.
    pub local: String,
    /// `external-…`: external destinations (node ports, external and LB IPs).
    pub external: String,
    /// `firewall-…`: `loadBalancerSourceRanges`.
    pub firewall: String,
}

impl PortNames {
    /// The names of `port`.
    pub fn new(port: &ServicePortName) -> Self {
        let base = format!(
            "{}/{}/{}/{}",
            port.service.namespace,
            port.service.name,
            port.protocol.lower(),
            port.port
        );
        let hashed = hash_and_truncate(&base);
        PortNames {
            cluster: format!("service-{hashed}"),
            local: format!("local-{hashed}"),
            external: format!("external-{hashed}"),
            firewall: format!("firewall-{hashed}"),
            base,
        }
    }

    /// `HASH8-ns/svc/proto/port__ip/port` for an endpoint (IPv6 colons become dots).
    fn endpoint_base(&self, endpoint: SocketAddr) -> String {
        let ip = endpoint.ip().to_string().replace(':', ".");
        hash_and_truncate(&format!("{}__{}/{}", self.base, ip, endpoint.port()))
    }

    /// `endpoint-…`: the per-endpoint chain (used with session affinity).
    pub fn endpoint(&self, endpoint: SocketAddr) -> String {
        format!("endpoint-{}", self.endpoint_base(endpoint))
    }

    /// `affinity-…`: the per-endpoint affinity set.
    pub fn affinity(&self, endpoint: SocketAddr) -> String {
        format!("affinity-{}", self.endpoint_base(endpoint))
    }
}

/// Whether `chain` is a per-service chain (they, and only they, contain `/`).
pub fn is_service_chain(chain: &str) -> bool {
    chain.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::Protocol;

    fn port(ns: &str, name: &str) -> PortNames {
        PortNames::new(&ServicePortName::new(ns, name, "p80", Protocol::Tcp))
    }

    #[test]
    fn service_chain_names_match_upstream_golden_output() {
        assert_eq!(
            port("ns1", "svc1").cluster,
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            port("ns2", "svc2").external,
            "external-42NFTM6N-ns2/svc2/tcp/p80"
        );
        assert_eq!(
            port("ns5", "svc5").firewall,
            "firewall-HVFWP5L3-ns5/svc5/tcp/p80"
        );
        assert_eq!(port("ns4", "svc4").local, "local-LAUZTJTB-ns4/svc4/tcp/p80");
    }

    #[test]
    fn endpoint_and_affinity_names_match_upstream_golden_output() {
        let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            port("ns1", "svc1").endpoint(ep("10.180.0.1:80")),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        assert_eq!(
            port("ns2", "svc2").endpoint(ep("10.180.0.2:80")),
            "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"
        );
        assert_eq!(
            port("ns5", "svc5").affinity(ep("10.180.0.3:80")),
            "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
        );
    }

    #[test]
    fn ipv6_endpoint_colons_become_dots() {
        let name = port("ns1", "svc1").endpoint("[fd00:10:180::1]:80".parse().unwrap());
        assert!(
            name.ends_with("-ns1/svc1/tcp/p80__fd00.10.180..1/80"),
            "{name}"
        );
    }

    #[test]
    fn long_names_are_truncated_with_an_ellipsis() {
        let long = "x".repeat(300);
        let out = hash_and_truncate(&long);
        assert_eq!(out.len(), BASE_LENGTH_MAX);
        assert!(out.ends_with("..."));
    }

    #[test]
    fn characters_nft_names_cannot_hold_become_underscores() {
        let odd = port("ns", "we\"b c;x");
        assert!(
            odd.cluster.ends_with("-ns/we_b_c_x/tcp/p80"),
            "{}",
            odd.cluster
        );
        assert_ne!(
            odd.cluster,
            port("ns", "we_b_c_x").cluster,
            "the hash differs"
        );
    }

    #[test]
    fn maximum_length_api_names_fit_nft_names() {
        let p = PortNames::new(&ServicePortName::new(
            &"n".repeat(63),
            &"s".repeat(63),
            &"p".repeat(63),
            Protocol::Sctp,
        ));
        let ep: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let (endpoint, affinity) = (p.endpoint(ep), p.affinity(ep));
        for name in [
            p.cluster, p.local, p.external, p.firewall, endpoint, affinity,
        ] {
            assert!(name.len() < NAME_LENGTH_MAX, "{} bytes: {name}", name.len());
        }
    }

    #[test]
    fn only_per_service_chains_contain_a_slash() {
        assert!(is_service_chain(&port("a", "b").cluster));
        assert!(!is_service_chain("services"));
    }
}
