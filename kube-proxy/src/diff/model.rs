//! One family's rules of one mode, grouped by the service port they serve:
//! the unit `kube-proxy diff` compares.
//!
//! - iptables: the `KUBE-*` chains the mode writes. Rules of per-service
//!   chains (`KUBE-SVC-`, `KUBE-SVL-`, `KUBE-SEP-`, `KUBE-EXT-`, `KUBE-FW-`)
//!   belong to the service port their comments name; rules of the shared
//!   chains to the port their own comment names, else to "(shared)". Rules
//!   are compared by meaning (matches and target as the tracer parses
//!   them), so `iptables-save`'s spelling (`-m tcp`, `/32`) is no
//!   difference.
//! - nftables: every rule and set/map element of our table; chains named
//!   after a service port belong to it, elements to the service port of the
//!   chain they jump to or of their comment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::trace::Rules;

/// What is compared of one service port (or of the shared rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Canonical key → the rule as listed.
    pub rules: BTreeMap<String, String>,
    /// DNAT destinations.
    pub endpoints: BTreeSet<SocketAddr>,
}

/// Groups by service port name; "(shared)" for the rest.
pub type Model = BTreeMap<String, Group>;

/// The key of rules that serve no single service port.
pub const SHARED: &str = "(shared)";

/// A `namespace/name:port` token of a comment (the service port name as
/// upstream's comments spell it).
#[cfg(feature = "iptables")]
fn service_port_in(comment: &str) -> Option<String> {
    comment
        .split_whitespace()
        .find(|t| match (t.find('/'), t.find(':')) {
            (Some(slash), Some(colon)) => slash < colon && slash > 0,
            _ => false,
        })
        .map(str::to_string)
}

#[cfg(feature = "iptables")]
fn comment_of(args: &[String]) -> Option<&str> {
    args.iter()
        .position(|a| a == "--comment")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[cfg(feature = "iptables")]
const SERVICE_CHAIN_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "KUBE-FW-",
];

/// The model of iptables state: `chains` names the shared chains to
/// compare (the desired state's), plus every per-service chain.
#[cfg(feature = "iptables")]
fn iptables_model(
    tables: &backend_iptables::tables::Tables,
    shared_chains: &BTreeSet<(String, String)>,
) -> Model {
    use backend_iptables::trace::{Action, parse};
    let mut model = Model::new();
    for table in ["nat", "filter"] {
        let Some(t) = tables.table(table) else {
            continue;
        };
        for (name, chain) in &t.chains {
            let per_service = SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p));
            if !per_service && !shared_chains.contains(&(table.to_string(), name.clone())) {
                continue;
            }
            let chain_port = chain
                .rules
                .iter()
                .find_map(|r| comment_of(&r.args).and_then(service_port_in));
            for rule in &chain.rules {
                let port = if per_service {
                    chain_port.clone()
                } else {
                    comment_of(&rule.args).and_then(service_port_in)
                };
                let group = model
                    .entry(port.unwrap_or_else(|| SHARED.to_string()))
                    .or_default();
                let text = format!("-t {table} -A {name} {}", rule.text());
                let key = match parse(&rule.args) {
                    Ok(parsed) => {
                        if let Action::Dnat(to) = parsed.action {
                            group.endpoints.insert(to);
                        }
                        let mut conds: Vec<String> =
                            parsed.conds.iter().map(|c| format!("{c:?}")).collect();
                        conds.sort();
                        // `--or-mark M` is listed as `--set-xmark M/M`: a
                        // mark action is compared by what it does to each bit.
                        let action = match parsed.action {
                            Action::Mark { or, xor, and_not } => {
                                let f = |m: u32| ((m | or) & !and_not) ^ xor;
                                format!("MARK {:#x} {:#x}", f(0), f(u32::MAX))
                            }
                            other => format!("{other:?}"),
                        };
                        format!("{table} {name} {conds:?} {action}")
                    }
                    Err(_) => text.clone(),
                };
                group.rules.insert(key, text);
            }
        }
    }
    model
}

/// The service port a chain of our nftables table is named after
/// (`service-HASH-ns/name/proto/port`, `endpoint-HASH-ns/name/proto/port__ip/port`).
#[cfg(feature = "nftables")]
fn nft_chain_port(chain: &str) -> Option<String> {
    if !chain.contains('/') {
        return None;
    }
    let mut parts = chain.splitn(3, '-');
    let (_, _, rest) = (parts.next()?, parts.next()?, parts.next()?);
    Some(rest.split("__").next().unwrap_or(rest).to_string())
}

/// The group of a set or map element: the service port of the chain it
/// jumps to, or of its comment; else the service address it is keyed by
/// (`10.96.0.10:80/tcp`: the shared load-balancing chains and maps name
/// no service); else "(shared)".
#[cfg(feature = "nftables")]
pub fn element_group(
    key_type: backend_nftables::ir::KeyType,
    key: &backend_nftables::ir::ElemKey,
    value: Option<&backend_nftables::ir::ElemValue>,
    comment: Option<&str>,
) -> String {
    use backend_nftables::ir::{ElemKey, ElemValue, KeyType};
    if let Some(port) = value.and_then(ElemValue::target).and_then(nft_chain_port) {
        return port;
    }
    if let Some(c) = comment {
        return c.to_string();
    }
    match (key, key_type) {
        (ElemKey::AddrProtoPort(a, p, n), _) => {
            format!("{}/{}", std::net::SocketAddr::new(*a, *n), p.lower())
        }
        (ElemKey::LoadBalance(a, n, _), KeyType::LoadBalance(p)) => {
            format!("{}/{}", std::net::SocketAddr::new(*a, *n), p.lower())
        }
        _ => SHARED.to_string(),
    }
}

#[cfg(feature = "nftables")]
fn nftables_model(
    table: Option<&backend_nftables::fake::FakeTable>,
    family: proxy_core::IpFamily,
) -> Model {
    use backend_nftables::ir::{ElemValue, RuleDisplay, Stmt};
    let mut model = Model::new();
    let Some(table) = table else {
        return model;
    };
    for (name, chain) in &table.chains {
        // An empty regular chain does nothing (a stale chain waits, flushed,
        // for its delayed deletion).
        if chain.rules.is_empty() && chain.def.base.is_none() {
            continue;
        }
        let port = nft_chain_port(name).unwrap_or_else(|| SHARED.to_string());
        let group = model.entry(port).or_default();
        group
            .rules
            .insert(format!("chain {name}"), format!("chain {name}"));
        for rule in &chain.rules {
            for s in &rule.stmts {
                if let Stmt::Dnat(to) = s {
                    group.endpoints.insert(*to);
                }
            }
            let text = format!("rule {name} {}", RuleDisplay { family, rule });
            group.rules.insert(text.clone(), text);
        }
    }
    for (name, set) in &table.sets {
        for (key, (value, comment)) in &set.elements {
            let port = element_group(set.def.key, key, value.as_ref(), comment.as_deref());
            let group = model.entry(port).or_default();
            if let Some(ElemValue::Endpoint(to)) = value {
                group.endpoints.insert(*to);
            }
            let text = match value {
                Some(v) => format!("element {name} {{ {key:?} : {v:?} }}"),
                None => format!("element {name} {{ {key:?} }}"),
            };
            group.rules.insert(text.clone(), text);
        }
    }
    model
}

/// The models of `desired` and `live` (the same mode).
pub fn models(desired: &Rules, live: &Rules, family: proxy_core::IpFamily) -> (Model, Model) {
    let _ = family;
    match (desired, live) {
        #[cfg(feature = "iptables")]
        (Rules::Iptables(want), Rules::Iptables(have)) => {
            let shared: BTreeSet<(String, String)> = ["nat", "filter"]
                .iter()
                .filter_map(|t| want.table(t).map(|tab| (t, tab)))
                .flat_map(|(t, tab)| {
                    tab.chains
                        .keys()
                        .filter(|c| c.starts_with("KUBE-"))
                        .map(|c| (t.to_string(), c.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            (iptables_model(want, &shared), iptables_model(have, &shared))
        }
        #[cfg(feature = "nftables")]
        (Rules::Nftables(want), Rules::Nftables(have)) => (
            nftables_model(want.as_ref(), family),
            nftables_model(have.as_ref(), family),
        ),
        #[cfg(feature = "userspace")]
        (Rules::Userspace(want), Rules::Userspace(have)) => {
            (super::userspace::model(want), super::userspace::model(have))
        }
        #[allow(unreachable_patterns)]
        _ => (Model::new(), Model::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "iptables")]
    #[test]
    fn service_port_names_are_found_in_comments() {
        assert_eq!(
            service_port_in("default/web:http cluster IP").as_deref(),
            Some("default/web:http")
        );
        assert_eq!(
            service_port_in("masquerade traffic for ns/a:p external destinations").as_deref(),
            Some("ns/a:p")
        );
        assert_eq!(service_port_in("fd00::/64 block"), None);
    }

    #[cfg(feature = "nftables")]
    #[test]
    fn nft_chains_name_their_service_port() {
        assert_eq!(
            nft_chain_port("service-H6RVQ3OX-quickstart/hello/tcp/http").as_deref(),
            Some("quickstart/hello/tcp/http")
        );
        assert_eq!(
            nft_chain_port("endpoint-ABCD1234-ns/web/tcp/http__10.0.0.1/80").as_deref(),
            Some("ns/web/tcp/http")
        );
        assert_eq!(nft_chain_port("services"), None);
    }
}
