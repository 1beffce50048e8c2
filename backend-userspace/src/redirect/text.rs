//! The redirect table as an nft script, for `render()` (`--dry-run`): the
//! same objects the JSON transactions create, in nft's own syntax.

use std::fmt::Write as _;

use proxy_core::IpFamily;
use proxy_core::model::rule_comment;

use super::table::{REDIRECTS, REJECTS, TABLE, Vip, family_word};

/// One element to show, with the service port it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementLine {
    /// The VIP.
    pub vip: Vip,
    /// `None`: rejected; `Some(None)`: redirected to a listener not open
    /// yet; `Some(Some(p))`: redirected to port `p`.
    pub redirect: Option<Option<u16>>,
    /// `ns/svc:port internal|external`, as a comment.
    pub owner: String,
}

/// The nft script of our table of `family` holding `elements`.
pub fn script(family: IpFamily, elements: &[ElementLine]) -> String {
    let ip = family_word(family);
    let address = match family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    };
    let key = format!("{address} . inet_proto . inet_service");
    let packet = format!("{ip} daddr . meta l4proto . th dport");
    let mut out = String::new();
    let _ = writeln!(out, "add table {ip} {TABLE}");
    let _ = writeln!(out, "flush table {ip} {TABLE}");
    let _ = writeln!(out, "table {ip} {TABLE} {{");
    let _ = writeln!(out, "\tmap {REDIRECTS} {{ type {key} : inet_service; }}");
    let _ = writeln!(out, "\tset {REJECTS} {{ type {key}; }}");
    for (chain, hook) in [("nat-prerouting", "prerouting"), ("nat-output", "output")] {
        let _ = writeln!(
            out,
            "\tchain {chain} {{ type nat hook {hook} priority -100; policy accept; \
             meta l4proto {{ tcp, udp }} redirect to :{packet} map @{REDIRECTS}; }}"
        );
    }
    for hook in ["input", "forward", "output"] {
        let _ = writeln!(
            out,
            "\tchain filter-{hook} {{ type filter hook {hook} priority 0; policy accept; \
             {packet} @{REJECTS} reject; }}"
        );
    }
    let _ = writeln!(out, "}}");
    for line in elements {
        // A `#` comment ends at the line's end: a newline in a name (none
        // the topology accepts) must not start a line of its own.
        let owner = rule_comment(&line.owner, usize::MAX);
        let key = format!(
            "{} . {} . {}",
            line.vip.ip,
            line.vip.protocol.lower(),
            line.vip.port
        );
        let _ = match line.redirect {
            None => writeln!(
                out,
                "add element {ip} {TABLE} {REJECTS} {{ {key} }} # {}",
                owner
            ),
            Some(Some(port)) => writeln!(
                out,
                "add element {ip} {TABLE} {REDIRECTS} {{ {key} : {port} }} # {}",
                owner
            ),
            Some(None) => writeln!(
                out,
                "# add element {ip} {TABLE} {REDIRECTS} {{ {key} : <port> }} # {}: listener not open yet",
                owner
            ),
        };
    }
    out
}
