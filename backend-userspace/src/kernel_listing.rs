//! Reading the redirect table back from the kernel: `nft -j list table
//! ip|ip6 kube-proxy-userspace` into [`KernelRedirects`], so a trace
//! follows the elements the kernel holds, not the ones the backend
//! believes it wrote.

use std::net::IpAddr;

use proxy_core::Protocol;
use serde_json::Value;

use crate::error::UserspaceError;
use crate::redirect::Vip;
use crate::redirect::table::{REDIRECTS, REJECTS, TABLE};
use crate::trace::KernelRedirects;

fn invalid(detail: impl Into<String>) -> UserspaceError {
    UserspaceError::Listing(detail.into())
}

/// An element's value, without the `{"elem": {"val": …}}` wrapper nft adds
/// to elements with comments or timeouts.
fn unwrap_elem(value: &Value) -> &Value {
    value
        .get("elem")
        .and_then(|e| e.get("val"))
        .unwrap_or(value)
}

fn protocol(value: &Value) -> Option<Protocol> {
    match value {
        Value::String(s) => match s.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        },
        Value::Number(n) => match n.as_u64()? {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        },
        _ => None,
    }
}

/// `{"concat": ["10.96.0.10", "tcp", 80]}` as a [`Vip`].
fn vip(value: &Value) -> Result<Vip, UserspaceError> {
    let parts = unwrap_elem(value)
        .get("concat")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            invalid(format!(
                "element key {value} is not address . protocol . port"
            ))
        })?;
    let [ip, proto, port] = parts.as_slice() else {
        return Err(invalid(format!("element key {value} has not three parts")));
    };
    let ip: IpAddr = ip
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("element key {value}: {ip} is not an address")))?;
    let protocol = protocol(proto)
        .ok_or_else(|| invalid(format!("element key {value}: unknown protocol {proto}")))?;
    let port = port
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| invalid(format!("element key {value}: {port} is not a port")))?;
    Ok(Vip { ip, protocol, port })
}

/// The elements of our table in `nft -j list …` output; `None` when the
/// listing has no `kube-proxy-userspace` table.
pub fn kernel_redirects(json: &str) -> Result<Option<KernelRedirects>, UserspaceError> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| invalid(format!("nft printed something that is not JSON: {e}")))?;
    let objects = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no \"nftables\" array in the listing"))?;
    let ours = |o: &Value| o.get("table").and_then(Value::as_str) == Some(TABLE);
    let has_table = objects
        .iter()
        .filter_map(|o| o.get("table"))
        .any(|t| t.get("name").and_then(Value::as_str) == Some(TABLE));
    if !has_table {
        return Ok(None);
    }
    let mut out = KernelRedirects::default();
    for object in objects {
        if let Some(map) = object.get("map").filter(|m| ours(m))
            && map.get("name").and_then(Value::as_str) == Some(REDIRECTS)
        {
            for element in map
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let pair = element.as_array().map(Vec::as_slice);
                let Some([key, port]) = pair else {
                    return Err(invalid(format!("map element {element} is not [key, port]")));
                };
                let port = port
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| {
                        invalid(format!("map element {element}: {port} is not a port"))
                    })?;
                out.redirects.insert(vip(key)?, port);
            }
        }
        if let Some(set) = object.get("set").filter(|s| ours(s))
            && set.get("name").and_then(Value::as_str) == Some(REJECTS)
        {
            for element in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.rejects.insert(vip(element)?);
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "kube-proxy-userspace", "handle": 1}}, {"map": {"family": "ip", "name": "redirects", "table": "kube-proxy-userspace", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 1, "map": "inet_service", "elem": [[{"concat": ["10.96.0.11", "udp", 53]}, 40124], [{"elem": {"val": {"concat": ["10.96.0.10", "tcp", 80]}, "comment": "ns/svc"}}, 40123]]}}, {"set": {"family": "ip", "name": "rejects", "table": "kube-proxy-userspace", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2, "elem": [{"concat": ["10.96.0.12", "tcp", 80]}]}}]}"#;

    fn v(ip: &str, protocol: Protocol, port: u16) -> Vip {
        Vip {
            ip: ip.parse().unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn elements_are_read_back() {
        let k = kernel_redirects(LISTING).unwrap().unwrap();
        assert_eq!(
            k.redirects.get(&v("10.96.0.10", Protocol::Tcp, 80)),
            Some(&40123)
        );
        assert_eq!(
            k.redirects.get(&v("10.96.0.11", Protocol::Udp, 53)),
            Some(&40124)
        );
        assert_eq!(k.redirects.len(), 2);
        assert!(k.rejects.contains(&v("10.96.0.12", Protocol::Tcp, 80)));
        assert_eq!(k.rejects.len(), 1);
    }

    #[test]
    fn a_listing_without_our_table_is_none_and_garbage_an_error() {
        assert_eq!(
            kernel_redirects(r#"{"nftables": [{"metainfo": {}}]}"#).unwrap(),
            None
        );
        let e = kernel_redirects("table ip x {}").unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        let bad = LISTING.replace("\"udp\", 53", "\"udp\", 99999");
        let e = kernel_redirects(&bad).unwrap_err().to_string();
        assert!(e.contains("99999"), "{e}");
    }
}
