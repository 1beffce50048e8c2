//! `kube-proxy diff` for the ipvs mode: the wanted state of
//! [`IpvsBackend::wanted`] (virtual servers with their real servers, ipset
//! entries and `kube-ipvs0` addresses per service port, the mode's chains)
//! against the live one (netlink, `ipset save`, `iptables-save`,
//! `kube-ipvs0`), as [`backend_ipvs::wanted`] compares them. A real server
//! at weight 0 that is not wanted drains: no difference.

use std::collections::BTreeSet;
use std::sync::Arc;

use backend_ipvs::trace::IpvsRules;
use backend_ipvs::wanted::{WantedState, differences};
use backend_ipvs::{IpvsBackend, SystemHost};
use proxy_core::backend::BackendContext;
use proxy_core::exec::SystemExecutor;
use proxy_core::{IpFamily, NodeView, ProxyMode};

use super::DiffReport;
use crate::trace::InspectError;

/// What the ipvs mode wants for `view` on this node (its addresses read
/// from the current network namespace).
pub fn wanted(ctx: &BackendContext, view: &NodeView) -> Result<WantedState, InspectError> {
    let backend = IpvsBackend::new(
        ctx,
        Arc::new(SystemExecutor::default()),
        Arc::new(SystemHost::default()),
    )
    .map_err(|e| InspectError::Rules(format!("building the ipvs backend: {e}")))?;
    let addresses = backend_ipvs::wanted::node_addresses().map_err(|e| InspectError::Read {
        what: "the node's addresses".into(),
        detail: e.to_string(),
    })?;
    Ok(backend.wanted(view, addresses))
}

/// The report of `wanted` against `live`.
pub fn report(family: IpFamily, wanted: &WantedState, live: &IpvsRules) -> DiffReport {
    let want = wanted.model();
    let have = wanted.live_model(live);
    let compared = want
        .keys()
        .chain(have.keys())
        .collect::<BTreeSet<_>>()
        .len();
    let differences = differences(&want, &have);
    DiffReport {
        mode: ProxyMode::Ipvs.to_string(),
        family: family.to_string(),
        compared,
        differences,
    }
}
