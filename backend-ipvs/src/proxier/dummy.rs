//! `kube-ipvs0`: the dummy link every service address is bound to, so the
//! node accepts packets for them and IPVS (at `LOCAL_IN`) sees them.
//! Upstream leaves it down; a local address works on a down link.
//!
//! The link is shared by the IPv4 and the IPv6 backend of a dual-stack
//! node: each reads and changes only its own family's addresses, and
//! either may create the link.
//!
//! Everything goes over rtnetlink ([`RouteNetlink`]), in the calling
//! thread's network namespace: no `ip` process, no text to parse.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proxy_core::IpFamily;

use crate::error::IpvsError;
use crate::layout::DUMMY_DEVICE;
use crate::netlink::RouteNetlink;

/// Creates `kube-ipvs0` unless it exists (also when the other family's
/// backend created it meanwhile) and returns the addresses of `family`
/// bound to it.
pub(crate) fn ensure_device(family: IpFamily) -> Result<BTreeSet<IpAddr>, IpvsError> {
    let mut route = RouteNetlink::open()?;
    let index = route.ensure_dummy(DUMMY_DEVICE)?;
    Ok(route
        .addresses()?
        .into_iter()
        .filter(|a| a.index == index && is_service_address(&a.address, family))
        .map(|a| a.address)
        .collect())
}

/// Whether `ip` is a service address this family's backend may manage:
/// of `family`, and not IPv6 link-local (the kernel's own `fe80::` address
/// of the link, should it be up).
fn is_service_address(ip: &IpAddr, family: IpFamily) -> bool {
    IpFamily::of(ip) == family && !is_link_local_v6(ip)
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

/// The node's addresses node ports are served on, as upstream's IPVS
/// proxier takes them: every link's but `kube-ipvs0`'s, without loopback
/// and IPv6 link-local addresses.
pub(crate) fn node_addresses() -> Result<BTreeSet<IpAddr>, IpvsError> {
    let mut route = RouteNetlink::open()?;
    let dummy = route.link_index(DUMMY_DEVICE)?;
    Ok(route
        .addresses()?
        .into_iter()
        .filter(|a| Some(a.index) != dummy)
        .map(|a| a.address)
        .filter(|ip| !ip.is_loopback() && !is_link_local_v6(ip))
        .collect())
}

/// Binds `add` to `kube-ipvs0` and unbinds `remove` (as host addresses,
/// IPv6 ones without duplicate address detection); returns how many
/// addresses changed.
pub(crate) fn rebind(
    add: &BTreeSet<IpAddr>,
    remove: &BTreeSet<IpAddr>,
) -> Result<usize, IpvsError> {
    if add.is_empty() && remove.is_empty() {
        return Ok(0);
    }
    let mut route = RouteNetlink::open()?;
    let index = route.ensure_dummy(DUMMY_DEVICE)?;
    for ip in add {
        route.add_address(index, *ip)?;
    }
    for ip in remove {
        route.delete_address(index, *ip)?;
    }
    Ok(add.len() + remove.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_manages_its_own_addresses_but_never_link_local_ones() {
        let v6: IpAddr = "fd00::a".parse().unwrap();
        assert!(is_service_address(&v6, IpFamily::V6));
        assert!(!is_service_address(&v6, IpFamily::V4));
        let v4: IpAddr = "10.96.0.10".parse().unwrap();
        assert!(is_service_address(&v4, IpFamily::V4));
        assert!(!is_service_address(&v4, IpFamily::V6));
        assert!(!is_service_address(
            &"fe80::1".parse().unwrap(),
            IpFamily::V6
        ));
    }
}
