//! `kube-ipvs0`: the dummy link every service address is bound to, so the
//! node accepts packets for them and IPVS (at `LOCAL_IN`) sees them.
//! Upstream leaves it down; a local address works on a down link.
//!
//! The link is shared by the IPv4 and the IPv6 backend of a dual-stack
//! node: each reads and changes only its own family's addresses, and
//! either may create the link.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proxy_core::IpFamily;
use proxy_core::exec::{Command, Executor};

use crate::error::IpvsError;
use crate::layout::DUMMY_DEVICE;

async fn run(exec: &dyn Executor, command: Command) -> Result<String, IpvsError> {
    crate::host::stdout_of(&command, exec.run(&command).await)
}

/// Creates `kube-ipvs0` unless it exists (also when the other family's
/// backend created it meanwhile).
pub(crate) async fn ensure_device(exec: &dyn Executor) -> Result<(), IpvsError> {
    let show = Command::new("ip", ["-o", "link", "show", "dev", DUMMY_DEVICE]);
    if exec.run(&show).await.is_ok_and(|o| o.success()) {
        return Ok(());
    }
    let added = run(
        exec,
        Command::new("ip", ["link", "add", DUMMY_DEVICE, "type", "dummy"]),
    )
    .await;
    match added {
        Err(_) if exec.run(&show).await.is_ok_and(|o| o.success()) => Ok(()),
        other => other.map(drop),
    }
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

/// The addresses of `family` bound to `kube-ipvs0` (from `ip -j addr`).
pub(crate) async fn bound(
    exec: &dyn Executor,
    family: IpFamily,
) -> Result<BTreeSet<IpAddr>, IpvsError> {
    let command = Command::new("ip", ["-j", "addr", "show", "dev", DUMMY_DEVICE]);
    let json = run(exec, command.clone()).await?;
    let all = parse_addresses(&json).ok_or_else(|| IpvsError::Command {
        command: command.to_string(),
        status: "unreadable output".into(),
        stderr: json.chars().take(200).collect(),
    })?;
    Ok(all
        .into_iter()
        .filter(|ip| is_service_address(ip, family))
        .collect())
}

/// The node's addresses node ports are served on, as upstream's IPVS
/// proxier takes them: every link's but `kube-ipvs0`'s, without loopback
/// and IPv6 link-local addresses.
pub(crate) async fn node_addresses(exec: &dyn Executor) -> Result<BTreeSet<IpAddr>, IpvsError> {
    let command = Command::new("ip", ["-j", "addr", "show"]);
    let json = run(exec, command.clone()).await?;
    let addresses = parse_link_addresses(&json).ok_or_else(|| IpvsError::Command {
        command: command.to_string(),
        status: "unreadable output".into(),
        stderr: json.chars().take(200).collect(),
    })?;
    Ok(addresses
        .into_iter()
        .filter(|(link, ip)| link != DUMMY_DEVICE && !ip.is_loopback() && !is_link_local_v6(ip))
        .map(|(_, ip)| ip)
        .collect())
}

/// The `local` addresses of `ip -j addr show` output.
fn parse_addresses(json: &str) -> Option<BTreeSet<IpAddr>> {
    Some(
        parse_link_addresses(json)?
            .into_iter()
            .map(|(_, ip)| ip)
            .collect(),
    )
}

/// `(link name, address)` of `ip -j addr show` output.
fn parse_link_addresses(json: &str) -> Option<Vec<(String, IpAddr)>> {
    let links: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut addresses = Vec::new();
    for link in links.as_array()? {
        let name = link.get("ifname")?.as_str()?;
        for info in link.get("addr_info")?.as_array()? {
            addresses.push((name.to_string(), info.get("local")?.as_str()?.parse().ok()?));
        }
    }
    Some(addresses)
}

/// Binds `add` and unbinds `remove` in one `ip -batch`; returns how many
/// addresses changed. IPv6 addresses go in with `nodad`: a tentative
/// address is not local yet.
pub(crate) async fn rebind(
    exec: &dyn Executor,
    add: &BTreeSet<IpAddr>,
    remove: &BTreeSet<IpAddr>,
) -> Result<usize, IpvsError> {
    let mut script = String::new();
    for (verb, set) in [("add", add), ("del", remove)] {
        for ip in set {
            let (prefix, flags) = match (ip, verb) {
                (IpAddr::V4(_), _) => (32, ""),
                (IpAddr::V6(_), "add") => (128, " nodad"),
                (IpAddr::V6(_), _) => (128, ""),
            };
            script.push_str(&format!(
                "addr {verb} {ip}/{prefix} dev {DUMMY_DEVICE}{flags}\n"
            ));
        }
    }
    if script.is_empty() {
        return Ok(0);
    }
    run(exec, Command::new("ip", ["-batch", "-"]).with_stdin(script)).await?;
    Ok(add.len() + remove.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_ip_json() {
        let json = r#"[{"ifindex":5,"ifname":"kube-ipvs0","flags":["BROADCAST","NOARP"],"addr_info":[
            {"family":"inet","local":"10.96.0.10","prefixlen":32},
            {"family":"inet6","local":"fd00::a","prefixlen":128}]}]"#;
        assert_eq!(
            parse_addresses(json).unwrap(),
            BTreeSet::from(["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()])
        );
        assert_eq!(parse_addresses("[]").unwrap(), BTreeSet::new());
        assert_eq!(parse_addresses("not json"), None);
        let v6: IpAddr = "fd00::a".parse().unwrap();
        assert!(is_service_address(&v6, IpFamily::V6));
        assert!(!is_service_address(&v6, IpFamily::V4));
        assert!(!is_service_address(&"fe80::1".parse().unwrap(), IpFamily::V6));
        let all = r#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1"}]},
            {"ifname":"eth0","addr_info":[{"local":"10.0.0.1"}]}]"#;
        assert_eq!(
            parse_link_addresses(all).unwrap(),
            [
                ("lo".to_string(), "127.0.0.1".parse().unwrap()),
                ("eth0".to_string(), "10.0.0.1".parse().unwrap())
            ]
        );
    }
}
