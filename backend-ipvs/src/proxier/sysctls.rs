//! The sysctls upstream's IPVS mode sets (`pkg/proxy/ipvs/proxier.go`),
//! written in the calling thread's network namespace.

use std::path::Path;

use proxy_core::IpFamily;

use crate::error::IpvsError;

/// `(key, value, required)`: a required one failing fails the sync.
const SYSCTLS: [(&str, &str, bool); 6] = [
    // let iptables NAT (masquerade) see IPVS connections
    ("net/ipv4/vs/conntrack", "1", true),
    // drop a connection whose real server was deleted on its next packet
    ("net/ipv4/vs/expire_nodest_conn", "1", true),
    ("net/ipv4/vs/expire_quiescent_template", "1", true),
    // reuse of a source port goes to a new real server
    ("net/ipv4/vs/conn_reuse_mode", "0", false),
    ("net/ipv4/ip_forward", "1", true),
    ("net/bridge/bridge-nf-call-iptables", "1", false),
];

/// `ipvs.strictARP`: answer ARP only for addresses on the asking
/// interface, and announce the best local address (so `kube-ipvs0`'s
/// addresses are never announced).
const STRICT_ARP: [(&str, &str, bool); 2] = [
    ("net/ipv4/conf/all/arp_ignore", "1", true),
    ("net/ipv4/conf/all/arp_announce", "2", true),
];

/// What an IPv6 backend needs besides: forwarding (upstream's IPVS
/// sysctls live under `net/ipv4/vs` for both families, and `ip_forward`
/// does not cover IPv6), and bridged IPv6 traffic through ip6tables.
const IPV6: [(&str, &str, bool); 2] = [
    ("net/ipv6/conf/all/forwarding", "1", true),
    ("net/bridge/bridge-nf-call-ip6tables", "1", false),
];

/// Writes every sysctl whose value differs (with `strict_arp`, also
/// upstream's strict-ARP pair; for IPv6, also [`IPV6`]'s).
pub(crate) fn apply(strict_arp: bool, family: IpFamily) -> Result<(), IpvsError> {
    let strict: &[(&str, &str, bool)] = if strict_arp { &STRICT_ARP } else { &[] };
    let v6: &[(&str, &str, bool)] = if family == IpFamily::V6 { &IPV6 } else { &[] };
    for &(key, value, required) in SYSCTLS.iter().chain(strict).chain(v6) {
        let path = Path::new("/proc/sys").join(key);
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
            continue;
        }
        if let Err(source) = std::fs::write(&path, value) {
            if required {
                return Err(IpvsError::Sysctl {
                    key: key.replace('/', "."),
                    source,
                });
            }
            tracing::warn!(key, %source, "cannot set sysctl");
        }
    }
    Ok(())
}
