//! Reading kube-proxy's rules: from the kernel of the current network
//! namespace (`iptables-save`/`ip6tables-save` through the iptables
//! backend's own tool wrapper, `nft -j list`, ipvs mode's state through
//! `backend_ipvs::trace::live`, the userspace mode's listener table from
//! its metrics server), or from a dump file; and telling which mode
//! installed them.
//!
//! Nothing here changes the dataplane: only listing commands run.

use std::path::Path;

use proxy_core::backend::CommandLimits;
use proxy_core::exec::nft::{self, Nft};
use proxy_core::{IpFamily, ProxyMode};

use super::error::InspectError;

/// Our nftables table (nftables mode).
const NFT_TABLE: &str = "kube-proxy";
/// The userspace mode's redirect table.
const USERSPACE_TABLE: &str = "kube-proxy-userspace";

/// One family's rules of one mode, parsed.
#[derive(Debug, Clone)]
pub enum Rules {
    /// `iptables-save` of the nat and filter tables.
    #[cfg(feature = "iptables")]
    Iptables(backend_iptables::tables::Tables),
    /// Our nftables table; `None` when it does not exist.
    #[cfg(feature = "nftables")]
    Nftables(Option<backend_nftables::fake::FakeTable>),
    /// The userspace mode's listener table and redirect elements.
    #[cfg(feature = "userspace")]
    Userspace(Box<super::userspace::UserspaceRules>),
    /// The ipvs mode's virtual servers, ipsets and iptables chains.
    #[cfg(feature = "ipvs")]
    Ipvs(Box<backend_ipvs::trace::IpvsRules>),
}

/// What kube-proxy rules exist in this namespace, per mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Modes whose rules were found (either family).
    pub modes: Vec<ProxyMode>,
}

/// Whether `iptables-save` output holds iptables mode's chains (and not
/// ipvs mode's, which share `KUBE-SERVICES`).
fn iptables_mode_in(save: &str) -> Option<ProxyMode> {
    let has_services = save.lines().any(|l| l.starts_with(":KUBE-SERVICES "));
    let ipvs = save.lines().any(|l| {
        l.starts_with(":KUBE-LOAD-BALANCER ") || l.contains("--match-set KUBE-CLUSTER-IP ")
    });
    match (has_services, ipvs) {
        (_, true) => Some(ProxyMode::Ipvs),
        (true, false) => Some(ProxyMode::Iptables),
        (false, false) => None,
    }
}

/// The tables in `objects` (of `nft -j list …`), as `(family, name)`.
fn nft_tables(objects: &[serde_json::Value]) -> Vec<(String, String)> {
    objects
        .iter()
        .filter_map(|o| o.get("table"))
        .filter_map(|t| {
            Some((
                t.get("family")?.as_str()?.to_string(),
                t.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The objects of an `nft -j list …` dump.
fn nft_listing(json: &str) -> Result<Vec<serde_json::Value>, InspectError> {
    nft::parse_listing(json)
        .map_err(|e| InspectError::Rules(format!("nft printed something that is not JSON: {e}")))
}

/// Whether table `name` of `family` exists, asked with one netlink request
/// (never a listing of the whole ruleset); `Ok(None)` when nft, which
/// reads the table afterwards, is not installed.
pub(crate) async fn nft_has_table(
    family: IpFamily,
    name: &str,
) -> Result<Option<bool>, InspectError> {
    let nft = Nft::new(CommandLimits::default());
    if !nft.is_installed() {
        return Ok(None);
    }
    nft.has_table(family, name)
        .await
        .map(Some)
        .map_err(|e| InspectError::from_tool("nftables ruleset", &e.to_string()))
}

/// `nft -j list <what…>` through the shared nft driver; `Ok(None)` when nft
/// is not installed.
pub(crate) async fn nft_list(
    what: &[&str],
) -> Result<Option<Vec<serde_json::Value>>, InspectError> {
    let nft = Nft::new(CommandLimits::default());
    if !nft.is_installed() {
        return Ok(None);
    }
    nft.list(what)
        .await
        .map(Some)
        .map_err(|e| InspectError::from_tool("nftables ruleset", &e.to_string()))
}

/// `iptables-save` of `family`'s nat and filter tables, through the
/// iptables backend's wrapper (variant detection as the backend does).
#[cfg(feature = "iptables")]
async fn iptables_save(family: IpFamily) -> Result<Option<String>, InspectError> {
    use std::sync::Arc;

    use proxy_core::exec::iptables::Iptables;
    use proxy_core::exec::{Executor, SystemExecutor};
    let what = "iptables rules";
    let exec: Arc<dyn Executor> = Arc::new(SystemExecutor::default());
    let tools = match Iptables::detect(exec, family).await {
        Ok(tools) => tools,
        Err(e) if e.not_installed() => return Ok(None),
        Err(e) => return Err(InspectError::from_tool(what, &e.to_string())),
    };
    let mut out = String::new();
    for table in ["nat", "filter"] {
        let saved = tools
            .save(Some(table))
            .await
            .map_err(|e| InspectError::from_tool(what, &e.to_string()))?;
        out.push_str(&saved);
    }
    Ok(Some(out))
}

#[cfg(not(feature = "iptables"))]
async fn iptables_save(_family: IpFamily) -> Result<Option<String>, InspectError> {
    Ok(None)
}

/// Which modes' rules exist in the current network namespace.
pub async fn detect_live() -> Result<Installed, InspectError> {
    let mut modes = Vec::new();
    for (table, mode) in [
        (NFT_TABLE, ProxyMode::Nftables),
        (USERSPACE_TABLE, ProxyMode::Userspace),
    ] {
        for family in IpFamily::ALL {
            if nft_has_table(family, table).await? == Some(true) && !modes.contains(&mode) {
                modes.push(mode);
            }
        }
    }
    for family in IpFamily::ALL {
        if let Some(save) = iptables_save(family).await?
            && let Some(mode) = iptables_mode_in(&save)
            && !modes.contains(&mode)
        {
            modes.push(mode);
        }
    }
    modes.sort();
    Ok(Installed { modes })
}

/// Picks the mode to read: `wanted`, or the only one installed.
pub fn choose_mode(
    wanted: Option<ProxyMode>,
    installed: &Installed,
) -> Result<ProxyMode, InspectError> {
    if let Some(mode) = wanted {
        return Ok(mode);
    }
    match installed.modes.as_slice() {
        [] => Err(InspectError::Mode(
            "no kube-proxy rules in this network namespace (no nftables table kube-proxy, no iptables chain KUBE-SERVICES); is kube-proxy running here? pass --rules FILE to read a dump".into(),
        )),
        [mode] => Ok(*mode),
        several => Err(InspectError::Mode(format!(
            "rules of several modes are installed ({}): leftovers of a previous mode? pick one with --proxy-mode",
            several.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Refuses modes whose rules this build cannot walk.
fn unsupported(mode: ProxyMode) -> InspectError {
    InspectError::Mode(match mode {
        ProxyMode::Ipvs => "ipvs mode is not compiled into this binary".to_string(),
        ProxyMode::Userspace => "userspace mode is not compiled into this binary".to_string(),
        other => format!("{other} mode is not compiled into this binary or has no rules to read"),
    })
}

/// `family`'s rules of `mode`, read from the kernel (the userspace mode's
/// listener table from the metrics server at its default address).
pub async fn read_live(mode: ProxyMode, family: IpFamily) -> Result<Rules, InspectError> {
    read_live_at(mode, family, None).await
}

/// `family`'s rules of `mode`, read from the kernel; the userspace mode's
/// listener table from the metrics server at `metrics` (default
/// `127.0.0.1:10249`).
pub async fn read_live_at(
    mode: ProxyMode,
    family: IpFamily,
    metrics: Option<std::net::SocketAddr>,
) -> Result<Rules, InspectError> {
    let _ = metrics;
    match mode {
        #[cfg(feature = "ipvs")]
        ProxyMode::Ipvs => backend_ipvs::trace::live::read_live(family)
            .await
            .map(|r| Rules::Ipvs(Box::new(r)))
            .map_err(|e| InspectError::from_tool("IPVS state", &e.to_string())),
        #[cfg(feature = "userspace")]
        ProxyMode::Userspace => {
            let addr = match metrics {
                Some(addr) => addr,
                None => super::userspace::DEFAULT_METRICS_ADDRESS
                    .parse()
                    .map_err(|e| InspectError::Usage(format!("{e}")))?,
            };
            super::userspace::read_live(addr, family)
                .await
                .map(|r| Rules::Userspace(Box::new(r)))
        }
        #[cfg(feature = "iptables")]
        ProxyMode::Iptables => {
            let save = iptables_save(family).await?.ok_or_else(|| {
                InspectError::Mode(
                    "no iptables-save found in PATH (install the iptables package)".into(),
                )
            })?;
            parse(ProxyMode::Iptables, family, &save)
        }
        #[cfg(feature = "nftables")]
        ProxyMode::Nftables => {
            let Some(exists) = nft_has_table(family, NFT_TABLE).await? else {
                return Err(InspectError::Mode(
                    "no nft found in PATH (install the nftables package)".into(),
                ));
            };
            if !exists {
                return Ok(Rules::Nftables(None));
            }
            let fam = nft::family_word(family);
            let objects = nft_list(&["table", fam, NFT_TABLE])
                .await?
                .unwrap_or_default();
            let json = serde_json::json!({ "nftables": objects }).to_string();
            parse(ProxyMode::Nftables, family, &json)
        }
        other => Err(unsupported(other)),
    }
}

/// The mode a dump file's text was taken from: nft JSON, or
/// `iptables-save` output.
pub fn mode_of_dump(text: &str) -> Result<ProxyMode, InspectError> {
    #[cfg(feature = "userspace")]
    if super::userspace::is_listing(text) {
        return Ok(ProxyMode::Userspace);
    }
    #[cfg(feature = "ipvs")]
    if backend_ipvs::trace::dump::is_dump(text) {
        return Ok(ProxyMode::Ipvs);
    }
    if text.trim_start().starts_with('{') {
        let tables = nft_tables(&nft_listing(text)?);
        if tables.iter().any(|(_, n)| n == NFT_TABLE) {
            return Ok(ProxyMode::Nftables);
        }
        if tables.iter().any(|(_, n)| n == USERSPACE_TABLE) {
            return Err(InspectError::Mode(
                "this is the userspace mode's redirect table; its listeners live in kube-proxy: save `curl http://127.0.0.1:10249/proxyListeners` instead".into(),
            ));
        }
        return Err(InspectError::Mode(
            "the nft listing holds no table named kube-proxy (save it with `nft -j list ruleset`)"
                .into(),
        ));
    }
    match iptables_mode_in(text) {
        Some(ProxyMode::Iptables) => Ok(ProxyMode::Iptables),
        Some(ProxyMode::Ipvs) => Err(InspectError::Mode(
            "ipvs mode's chains, without its virtual servers and ipsets: save the combined dump (`### ipvsadm -Sn`, `### ipset save`, `### iptables-save`, `### kube-ipvs0` sections; see `kube-proxy trace --help`)".into(),
        )),
        Some(other) => Err(unsupported(other)),
        None => Err(InspectError::Mode(
            "the file is neither `nft -j list ruleset` output nor iptables-save output with a KUBE-SERVICES chain".into(),
        )),
    }
}

/// Reads a dump file of `family`'s rules; the mode comes from its content
/// unless `wanted` says.
pub fn read_file(
    path: &Path,
    wanted: Option<ProxyMode>,
    family: IpFamily,
) -> Result<(ProxyMode, Rules), InspectError> {
    let text = std::fs::read_to_string(path).map_err(|source| InspectError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = match wanted {
        Some(mode) => mode,
        None => mode_of_dump(&text)?,
    };
    Ok((mode, parse(mode, family, &text)?))
}

/// Parses `text` as `mode`'s listing of `family`.
pub fn parse(mode: ProxyMode, family: IpFamily, text: &str) -> Result<Rules, InspectError> {
    match mode {
        #[cfg(feature = "iptables")]
        ProxyMode::Iptables => backend_iptables::tables::Tables::parse(text)
            .map(Rules::Iptables)
            .map_err(|e| InspectError::Rules(format!("cannot parse the iptables rules: {e}"))),
        #[cfg(feature = "nftables")]
        ProxyMode::Nftables => backend_nftables::fake::table_from_json(text, family)
            .map(Rules::Nftables)
            .map_err(|e| InspectError::Rules(e.to_string())),
        #[cfg(feature = "ipvs")]
        ProxyMode::Ipvs => backend_ipvs::trace::dump::parse(text)
            .map(|r| Rules::Ipvs(Box::new(r)))
            .map_err(|e| InspectError::Rules(format!("cannot read the ipvs dump: {e}"))),
        #[cfg(feature = "userspace")]
        ProxyMode::Userspace => super::userspace::parse(text, family).map(|table| {
            Rules::Userspace(Box::new(super::userspace::UserspaceRules {
                table,
                kernel: None,
            }))
        }),
        other => {
            let _ = (family, text);
            Err(unsupported(other))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipvs_chains_are_told_from_iptables_mode() {
        assert_eq!(
            iptables_mode_in("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"),
            Some(ProxyMode::Iptables)
        );
        assert_eq!(
            iptables_mode_in("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\nCOMMIT\n"),
            Some(ProxyMode::Ipvs)
        );
        assert_eq!(
            iptables_mode_in("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"),
            None
        );
    }

    #[test]
    fn several_modes_need_a_choice() {
        let both = Installed {
            modes: vec![ProxyMode::Iptables, ProxyMode::Nftables],
        };
        let e = choose_mode(None, &both).unwrap_err().to_string();
        assert!(
            e.contains("iptables, nftables") && e.contains("--proxy-mode"),
            "{e}"
        );
        assert_eq!(
            choose_mode(Some(ProxyMode::Nftables), &both).unwrap(),
            ProxyMode::Nftables
        );
        assert!(choose_mode(None, &Installed::default()).is_err());
    }
}
