//! The contents of our nftables table: which VIP goes where.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use proxy_core::Protocol;

/// The table of each family: `ip kube-proxy-userspace` and
/// `ip6 kube-proxy-userspace`. Nothing else is ever touched.
pub const TABLE: &str = "kube-proxy-userspace";
/// The map `VIP . protocol . port : listener port`.
pub const REDIRECTS: &str = "redirects";
/// The set of VIPs whose service has no endpoints: rejected.
pub const REJECTS: &str = "rejects";

/// A service address as the rules match it: destination address, protocol,
/// destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    /// ClusterIP, external IP or load-balancer IP.
    pub ip: IpAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The service port.
    pub port: u16,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = std::net::SocketAddr::new(self.ip, self.port);
        write!(f, "{} {addr}", self.protocol.lower())
    }
}

/// What the rules do with new traffic to a [`Vip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `redirect to :port`: to the listener of the service port, on the
    /// primary address of the incoming interface (loopback for the host's
    /// own traffic).
    Redirect(u16),
    /// `reject`: the service has no endpoints.
    Reject,
}

/// Every element of one family's table.
pub type Elements = BTreeMap<Vip, Action>;

/// One element.
pub type Entry = (Vip, Action);

pub use proxy_core::exec::nft::family_word;

/// The element changes from `old` to `new`: keys to delete (gone, or with
/// another action) and entries to add (new, or changed).
pub fn diff(old: &Elements, new: &Elements) -> (Vec<Entry>, Vec<Entry>) {
    let deleted = old
        .iter()
        .filter(|(vip, action)| new.get(vip) != Some(action))
        .map(|(vip, action)| (*vip, *action))
        .collect();
    let added = new
        .iter()
        .filter(|(vip, action)| old.get(vip) != Some(action))
        .map(|(vip, action)| (*vip, *action))
        .collect();
    (deleted, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(ip: &str, port: u16) -> Vip {
        Vip {
            ip: ip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn diff_deletes_gone_and_changed_entries_and_adds_new_and_changed_ones() {
        let old = Elements::from([
            (vip("10.96.0.1", 80), Action::Redirect(40000)),
            (vip("10.96.0.2", 80), Action::Redirect(40001)),
            (vip("10.96.0.3", 80), Action::Reject),
        ]);
        let new = Elements::from([
            (vip("10.96.0.1", 80), Action::Redirect(40000)),
            (vip("10.96.0.2", 80), Action::Reject),
            (vip("10.96.0.4", 80), Action::Redirect(40002)),
        ]);
        let (deleted, added) = diff(&old, &new);
        assert_eq!(
            deleted,
            [
                (vip("10.96.0.2", 80), Action::Redirect(40001)),
                (vip("10.96.0.3", 80), Action::Reject)
            ]
        );
        assert_eq!(
            added,
            [
                (vip("10.96.0.2", 80), Action::Reject),
                (vip("10.96.0.4", 80), Action::Redirect(40002))
            ]
        );
        assert_eq!(diff(&new, &new), (Vec::new(), Vec::new()));
    }
}
