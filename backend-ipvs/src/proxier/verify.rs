//! The periodic verify ([`Backend::dataplane_lost`](proxy_core::Backend::dataplane_lost),
//! every `syncPeriod`): reads the IPVS table and the ipsets' entry counts
//! over netlink and compares them with the table of the last sync. It writes nothing and runs no command;
//! drift makes the runtime run a full sync, which repairs everything
//! (ipsets and rules included).
//!
//! Every check lists the virtual servers (one netlink dump), the ipset
//! headers (one `NETLINK_NETFILTER` dump) and the real
//! servers of [`VERIFY_BATCH`] of them, a rotating window, so at 10,000
//! services every real server is looked at within 40 checks while a check
//! stays a few hundred netlink requests.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;
use proxy_core::IpFamily;

use crate::error::IpvsError;
use crate::layout::ipset_name;
use crate::netlink::{IpvsNetlink, ServiceKey};

use super::ipset_sizes;
use super::plan::same_service;
use super::table::Table;

/// How many virtual servers' real servers one check reads.
pub(crate) const VERIFY_BATCH: usize = 256;

/// What differs between the kernel and `table` (`None`: nothing found),
/// with the real servers of the window after `cursor` (which moves on).
/// The table's addresses and node IPs say which virtual servers are ours;
/// real servers in `draining` may be there without being wanted.
pub(crate) fn drift(
    ipvs: &mut IpvsNetlink,
    table: &Table,
    draining: &HashMap<(ServiceKey, IpAddr, u16), Instant>,
    cursor: &mut Option<ServiceKey>,
    family: IpFamily,
    exclude: &[IpNet],
) -> Result<Option<String>, IpvsError> {
    let listed = ipvs.services()?;
    let mut seen = HashSet::with_capacity(listed.len());
    for have in &listed {
        let key = have.key;
        let ours = (table.has_vip(&key.address) || table.node_ips().contains(&key.address))
            && !super::excluded(exclude, &key.address);
        match table.service(&key) {
            Some(want) if !same_service(have, &want.service) => {
                return Ok(Some(format!("virtual server {key} was changed")));
            }
            Some(_) => {
                seen.insert(key);
            }
            None if ours => return Ok(Some(format!("virtual server {key} is not ours"))),
            None => {}
        }
    }
    if seen.len() != table.service_count() {
        let missing = table
            .services_after(None, usize::MAX)
            .into_iter()
            .find(|(k, _)| !seen.contains(k))
            .map_or_else(String::new, |(k, _)| k.to_string());
        return Ok(Some(format!("virtual server {missing} is missing")));
    }
    // the ipsets: each holds as many entries as the table puts in it (an
    // entry deleted from outside shows; one replaced by another does not)
    let sizes = ipset_sizes::set_sizes().map_err(|source| IpvsError::Netlink {
        operation: "list the ipsets".into(),
        source,
    })?;
    for (set, want) in table.set_sizes() {
        let set = ipset_name(set, family);
        match sizes.get(set.as_ref()) {
            None => return Ok(Some(format!("ipset {set} is missing"))),
            Some(have) if *have as usize != want => {
                return Ok(Some(format!(
                    "ipset {set} holds {have} entries, not {want}"
                )));
            }
            Some(_) => {}
        }
    }
    let window = table.services_after(cursor.as_ref(), VERIFY_BATCH);
    *cursor = if window.len() < VERIFY_BATCH {
        None
    } else {
        window.last().map(|(k, _)| *k)
    };
    for (key, want) in window {
        let have = ipvs.destinations(&key)?;
        for server in want.servers.values() {
            match have
                .iter()
                .find(|d| (d.server.address, d.server.port) == (server.address, server.port))
            {
                None => {
                    return Ok(Some(format!(
                        "real server {}:{} of {key} is missing",
                        server.address, server.port
                    )));
                }
                Some(d) if d.server != *server => {
                    return Ok(Some(format!(
                        "real server {}:{} of {key} was changed",
                        server.address, server.port
                    )));
                }
                Some(_) => {}
            }
        }
        for d in &have {
            let (address, port) = (d.server.address, d.server.port);
            if !want.servers.contains_key(&(address, port))
                && !draining.contains_key(&(key, address, port))
            {
                return Ok(Some(format!(
                    "real server {address}:{port} of {key} is not ours"
                )));
            }
        }
    }
    Ok(None)
}
