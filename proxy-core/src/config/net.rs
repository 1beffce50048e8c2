//! Go-compatible parsing of the address strings in the configuration:
//! `net.SplitHostPort`, `netutils.ParseIPSloppy` and `ParseCIDRSloppy`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`; the host may be
/// empty, the port is not checked. The error is Go's reason.
pub(super) fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("missing ']' in address");
        };
        let host = &rest[..end];
        let after = &rest[end + 1..];
        if after.is_empty() {
            return Err("missing port in address");
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err("unexpected ']' in address");
        };
        if port.contains(':') {
            return Err("too many colons in address");
        }
        if host.contains('[') || host.contains(']') {
            return Err("unexpected '[' in address");
        }
        return Ok((host, port));
    }
    let Some(colon) = s.rfind(':') else {
        return Err("missing port in address");
    };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    if host.contains(':') {
        return Err("too many colons in address");
    }
    if host.contains('[') || host.contains(']') || port.contains('[') || port.contains(']') {
        return Err("unexpected '[' or ']' in address");
    }
    Ok((host, port))
}

/// An IPv4 address with leading zeros in its octets (`010.0.0.1`), read as
/// decimal, as Go's `ParseIPSloppy` does.
fn parse_ipv4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0_u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// Go's `netutils.ParseIPSloppy`: an IPv4 or IPv6 address; IPv4 octets may
/// have leading zeros.
pub(super) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| parse_ipv4_sloppy(s).map(IpAddr::V4))
}

/// Go's `netutils.ParseCIDRSloppy`: `ip/prefix`, returned as the network
/// (host bits cleared), as Go returns it.
pub(super) fn parse_cidr(s: &str) -> Option<IpNet> {
    let (ip, prefix) = s.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    IpNet::new(parse_ip(ip)?, prefix).ok().map(|n| n.trunc())
}

/// Whether `ip` is IPv4, or IPv4-mapped IPv6 (Go's `To4() != nil`).
pub(super) fn is_ipv4_like(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_port_follows_go() {
        assert_eq!(split_host_port("0.0.0.0:10256"), Ok(("0.0.0.0", "10256")));
        assert_eq!(split_host_port("[::]:10256"), Ok(("::", "10256")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert_eq!(split_host_port("host:"), Ok(("host", "")));
        assert!(split_host_port("1.2.3.4").is_err());
        assert!(split_host_port("::1:80").is_err());
        assert!(split_host_port("[::1]").is_err());
        assert!(split_host_port("[::1]80").is_err());
        assert!(split_host_port("[::1]:80:90").is_err());
    }

    #[test]
    fn sloppy_ips_and_cidrs() {
        assert_eq!(
            parse_ip("010.000.0.1"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(parse_ip("::1"), "::1".parse().ok());
        assert_eq!(parse_ip("1.2.3"), None);
        assert_eq!(parse_ip("1.2.3.256"), None);
        assert_eq!(parse_cidr("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_cidr("fd00::1/48"), "fd00::/48".parse().ok());
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("10.0.0.0"), None);
        assert_eq!(parse_cidr("10.0.0.0/"), None);
        assert_eq!(parse_cidr("10.0.0.0/+8"), None);
        assert!(is_ipv4_like(&"::ffff:1.2.3.4".parse().unwrap()));
        assert!(!is_ipv4_like(&"::1".parse().unwrap()));
    }
}
