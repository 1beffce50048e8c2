//! Reading the ipvs mode's state of the current network namespace: the
//! virtual servers over netlink, `ipset save`, `iptables-save` of the nat
//! and filter tables (through the iptables backend's own wrapper) and the
//! addresses bound to `kube-ipvs0`. Only listings run: nothing changes.

use std::net::IpAddr;
use std::sync::Arc;

use backend_iptables::tables::Tables;
use proxy_core::IpFamily;
use proxy_core::exec::iptables::Iptables;
use proxy_core::exec::{Executor, SystemExecutor};

use super::{IpSets, IpvsRules, VirtualServerTable};
use crate::error::IpvsError;
use crate::host::{Command, Host, SystemHost, run_checked};
use crate::netlink::IpvsNetlink;

/// The raw listings, as [`super::dump::to_dump`] writes them.
#[derive(Debug, Clone)]
pub struct Listings {
    /// `ipvsadm -Sn` (rendered from the netlink answer).
    pub ipvsadm: String,
    /// `ipset save`.
    pub ipset: String,
    /// `iptables-save -t nat` then `-t filter`.
    pub iptables: String,
    /// `kube-ipvs0`'s addresses.
    pub bound: Vec<IpAddr>,
}

/// The addresses of `family` on `kube-ipvs0` (none when it does not exist).
async fn bound(host: &SystemHost, family: IpFamily) -> Result<Vec<IpAddr>, IpvsError> {
    let flag = match family {
        IpFamily::V4 => "-4",
        IpFamily::V6 => "-6",
    };
    let listed = host
        .run(&Command::new(
            "ip",
            [flag, "-o", "addr", "show", "dev", "kube-ipvs0"],
        ))
        .await;
    let Ok(out) = listed else {
        return Ok(Vec::new());
    };
    if !out.success() {
        // No such device: nothing bound.
        return Ok(Vec::new());
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// Every listing of `family`.
pub async fn read_listings(family: IpFamily) -> Result<Listings, IpvsError> {
    let mut netlink = IpvsNetlink::open()?;
    let virtual_servers = VirtualServerTable::from_netlink(&mut netlink)?;
    let mut table = virtual_servers.clone();
    table
        .servers
        .retain(|s| IpFamily::of(&s.address.ip()) == family);
    let host = SystemHost::default();
    let ipset = run_checked(&host, Command::new("ipset", ["save"])).await?;
    let exec: Arc<dyn Executor> = Arc::new(SystemExecutor::default());
    let tools = Iptables::detect(exec, family).await?;
    let mut iptables = String::new();
    for t in ["nat", "filter"] {
        iptables.push_str(&tools.save(Some(t)).await?);
    }
    Ok(Listings {
        ipvsadm: table.to_ipvsadm(),
        ipset,
        iptables,
        bound: bound(&host, family).await?,
    })
}

/// `family`'s state, parsed.
pub async fn read_live(family: IpFamily) -> Result<IpvsRules, IpvsError> {
    let listings = read_listings(family).await?;
    rules_of(&listings)
}

/// Parses `listings`.
pub fn rules_of(listings: &Listings) -> Result<IpvsRules, IpvsError> {
    Ok(IpvsRules {
        virtual_servers: VirtualServerTable::parse_ipvsadm(&listings.ipvsadm)?,
        sets: IpSets::parse(&listings.ipset)?,
        tables: Tables::parse(&listings.iptables)
            .map_err(|e| IpvsError::Listing(format!("iptables-save: {e}")))?,
        bound: listings.bound.clone(),
    })
}
