//! The ipvs mode's packet tracer: where a new connection goes through the
//! iptables chains (with their ipset matches), the IPVS virtual server at
//! its destination and that server's real servers, and back out through
//! `POSTROUTING` (masquerade marks, hairpin).
//!
//! The iptables part is the iptables mode's tracer
//! ([`backend_iptables::trace`]) with two extras: the ipsets' contents
//! ([`IpSets`], from `ipset save`) answer `--match-set`, and the virtual
//! servers ([`VirtualServerTable`], read over netlink or from `ipvsadm
//! -Sn`) take the packets delivered locally after the filter chains, as
//! IPVS does at `LOCAL_IN`: real servers in proportion to their weights
//! (round robin: equally), weight 0 draining (no new connections), none
//! taking new connections: refused; persistence is session affinity.
//!
//! - [`dump`]: the combined dump format `kube-proxy trace --rules` reads.
//! - [`live`]: reading the state of the current network namespace.

pub mod dump;
mod ipsets;
pub mod live;
mod virtual_servers;

use std::net::IpAddr;

use backend_iptables::tables::Tables;
use backend_iptables::trace::{Extras, Node, Path, trace_path_with};
use proxy_core::conformance::Packet;

pub use ipsets::{IpSet, IpSets};
pub use virtual_servers::{RealEntry, VirtualServerEntry, VirtualServerTable};

use crate::error::IpvsError;

/// One family's ipvs mode state.
#[derive(Debug, Clone)]
pub struct IpvsRules {
    /// The virtual servers.
    pub virtual_servers: VirtualServerTable,
    /// The ipsets.
    pub sets: IpSets,
    /// `iptables-save` of the nat and filter tables.
    pub tables: Tables,
    /// The addresses bound to `kube-ipvs0` (local, so IPVS sees their
    /// packets).
    pub bound: Vec<IpAddr>,
}

impl IpvsRules {
    /// Traces `packet` (entering on `in_interface` when given) on a node
    /// whose own addresses are `node_ips`. Rules outside `KUBE-*` chains the
    /// tracer does not understand are assumed not to match (a live host's
    /// other firewall).
    pub fn trace_path(
        &self,
        node_ips: &[IpAddr],
        packet: &Packet,
        in_interface: Option<&str>,
    ) -> Result<Path, IpvsError> {
        let mut local_ips = node_ips.to_vec();
        local_ips.extend(self.bound.iter().copied());
        let node = Node { local_ips };
        let extras = Extras {
            sets: Some(&self.sets),
            virtual_servers: Some(&self.virtual_servers),
        };
        trace_path_with(&self.tables, &node, packet, in_interface, true, extras)
            .map_err(|e| IpvsError::Listing(e.to_string()))
    }
}
