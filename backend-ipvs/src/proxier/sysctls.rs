//! The sysctls upstream's IPVS mode sets (`pkg/proxy/ipvs/proxier.go`),
//! written in the calling thread's network namespace.

use std::path::Path;

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

/// Writes every sysctl whose value differs.
pub(crate) fn apply() -> Result<(), IpvsError> {
    for (key, value, required) in SYSCTLS {
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
