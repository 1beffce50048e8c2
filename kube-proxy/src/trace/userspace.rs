//! The userspace mode's state: its listener table, read from the metrics
//! server's `/proxyListeners` (or a saved copy of it), and the redirect
//! rules as the kernel holds them (`nft -j list table ip|ip6
//! kube-proxy-userspace`). The listeners live in kube-proxy's process, so
//! unlike the other modes a live trace needs the proxy running.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use backend_userspace::{KernelRedirects, ListenerTable};
use proxy_core::conformance::Outcome;
use proxy_core::exec::nft;
use proxy_core::{IpFamily, Protocol};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::error::InspectError;
use super::report::{ChoiceInfo, HopInfo};

/// `metricsBindAddress`'s default, where the listener table is served.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:10249";
/// The metrics server's route of the listener table.
pub const LISTENERS_PATH: &str = "/proxyListeners";
/// How long to wait for the metrics server.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One family's userspace state.
#[derive(Debug, Clone)]
pub struct UserspaceRules {
    /// The listener table.
    pub table: ListenerTable,
    /// The redirect table's elements in the kernel; `None`: not read (a
    /// dump), the table's own record is used.
    pub kernel: Option<KernelRedirects>,
}

/// Whether `text` is a listener table document (`/proxyListeners` output,
/// or one family's table).
pub fn is_listing(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| {
        v.get("mode").and_then(Value::as_str) == Some("userspace") || v.get("listeners").is_some()
    })
}

/// `family`'s table in a `/proxyListeners` document (or a single table).
pub fn parse(text: &str, family: IpFamily) -> Result<ListenerTable, InspectError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| InspectError::Rules(format!("the listener table is not JSON: {e}")))?;
    let table = match doc.get("families") {
        Some(families) => families.get(family.as_str()).cloned().ok_or_else(|| {
            InspectError::Rules(format!(
                "the listener table has no {family} family (the proxy serves {})",
                families
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ))
        })?,
        None => doc,
    };
    let table: ListenerTable = serde_json::from_value(table)
        .map_err(|e| InspectError::Rules(format!("the listener table cannot be read: {e}")))?;
    if table.family != family.as_str() {
        return Err(InspectError::Rules(format!(
            "the listener table is of {}, not {family}",
            table.family
        )));
    }
    Ok(table)
}

/// GETs `path` from the metrics server at `addr`: `(status, body)`.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), std::io::Error> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:.80}")))?;
    Ok((status, body.to_string()))
}

/// The `/proxyListeners` document of the proxy whose metrics server is at
/// `addr`.
pub async fn fetch(addr: SocketAddr) -> Result<String, InspectError> {
    let what = format!("userspace listener table from http://{addr}{LISTENERS_PATH}");
    let (status, body) = get(addr, LISTENERS_PATH).await.map_err(|e| InspectError::Read {
        what: what.clone(),
        detail: format!(
            "{e} (is kube-proxy running here in userspace mode? pass --metrics-address if its metricsBindAddress is not {DEFAULT_METRICS_ADDRESS})"
        ),
    })?;
    match status {
        200 => Ok(body),
        404 => {
            let mode = get(addr, "/proxyMode")
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
                .map_or_else(|| "another mode".to_string(), |(_, m)| m.trim().to_string());
            Err(InspectError::Mode(format!(
                "the kube-proxy at {addr} runs in {mode} mode, not userspace: it keeps its rules in the kernel (pass --proxy-mode {mode})"
            )))
        }
        other => Err(InspectError::Read {
            what,
            detail: format!("HTTP status {other}: {}", body.trim()),
        }),
    }
}

/// The userspace mode's redirect table.
const USERSPACE_TABLE: &str = "kube-proxy-userspace";

/// The redirect table's elements of `family` in the kernel; empty when the
/// table is absent (nothing is redirected then).
async fn kernel(family: IpFamily) -> Result<KernelRedirects, InspectError> {
    let word = nft::family_word(family);
    let Some(exists) = super::live::nft_has_table(family, USERSPACE_TABLE).await? else {
        return Err(InspectError::Mode(
            "the listener table says redirect rules are on, but no nft is in PATH to read them (install the nftables package)".into(),
        ));
    };
    if !exists {
        return Ok(KernelRedirects::default());
    }
    let objects = super::live::nft_list(&["table", word, USERSPACE_TABLE])
        .await?
        .unwrap_or_default();
    let json = serde_json::json!({ "nftables": objects }).to_string();
    backend_userspace::kernel_redirects(&json)
        .map_err(|e| InspectError::Rules(e.to_string()))
        .map(Option::unwrap_or_default)
}

/// `family`'s live state: the table from the metrics server at `addr`,
/// and, when it redirects, the kernel's redirect elements.
pub async fn read_live(addr: SocketAddr, family: IpFamily) -> Result<UserspaceRules, InspectError> {
    let table = parse(&fetch(addr).await?, family)?;
    let kernel = if table.redirecting {
        Some(kernel(family).await?)
    } else {
        None
    };
    Ok(UserspaceRules { table, kernel })
}

/// Walks a connection through `rules`: its hops (a chain-entry hop before
/// the first step of each chain or listener), choices and outcome.
pub fn trace(
    rules: &UserspaceRules,
    local_ips: &[IpAddr],
    protocol: Protocol,
    to: SocketAddr,
    from_host: bool,
) -> (Vec<HopInfo>, Vec<ChoiceInfo>, Outcome) {
    let path = rules
        .table
        .trace(protocol, to, from_host, local_ips, rules.kernel.as_ref());
    let mut hops: Vec<HopInfo> = Vec::new();
    for h in path.hops {
        let entered = hops
            .last()
            .is_some_and(|last| last.table == h.table && last.chain == h.chain);
        if h.rule.is_some() && !entered {
            hops.push(HopInfo::enter(h.depth, &h.table, &h.chain));
        }
        hops.push(h);
    }
    (hops, path.choices, path.verdict.into())
}
