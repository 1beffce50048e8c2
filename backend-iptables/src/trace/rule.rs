//! The matches and targets of one rule, parsed for the tracer. Only what
//! kube-proxy generates (plus a few neighbours) is understood; anything else
//! is an error rather than a silent guess.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// One match of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `-s`.
    Source(IpNet, bool),
    /// `-d`.
    Destination(IpNet, bool),
    /// `-p`.
    Protocol(String, bool),
    /// `--dport N` or `--dport A:B`.
    DestPort(u16, u16, bool),
    /// `-i name` (`+` suffix: prefix).
    InInterface(String, bool),
    /// `-m addrtype --src-type/--dst-type LOCAL` (true: source).
    AddrTypeLocal {
        /// `--src-type` (else `--dst-type`).
        source: bool,
        /// `!` before the type.
        negated: bool,
    },
    /// `-m mark --mark value/mask`.
    Mark(u32, u32, bool),
    /// `-m conntrack --ctstate A,B`.
    CtState(Vec<String>, bool),
    /// `-m statistic …` or `-m recent --rcheck`: may or may not match.
    Maybe,
    /// `-m physdev --physdev-is-in` / `--physdev-is-bridged`: the packet
    /// entered through a bridge port. The tracer's packets are routed, never
    /// bridged, so this never holds.
    Bridged(bool),
    /// `-m set --match-set NAME dst,dst,src`: the packet's fields named by
    /// the flags (in the set type's order) are in the ipset `NAME`. Needs
    /// the sets' contents ([`SetLookup`](super::SetLookup)).
    Set {
        /// The set.
        name: String,
        /// Per dimension of the set: the source (`true`) or destination.
        sources: Vec<bool>,
        /// `!`.
        negated: bool,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// No `-j`: counting/comment-only rule.
    None,
    /// `ACCEPT`, `DROP`, `REJECT`, `RETURN`.
    Verdict(String),
    /// `-j CHAIN`.
    Jump(String),
    /// `-j DNAT --to-destination`.
    Dnat(SocketAddr),
    /// `-j MARK --or-mark/--xor-mark/--set-xmark`: `mark = (mark & !and) ^ xor`
    /// after `or`.
    Mark {
        /// Bits set first (`--or-mark`).
        or: u32,
        /// Bits flipped after clearing `and_not` (`--xor-mark`, `--set-xmark`).
        xor: u32,
        /// Bits cleared (the mask of `--set-xmark`).
        and_not: u32,
    },
    /// `-j MASQUERADE`.
    Masquerade,
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRule {
    /// Its matches (all must hold).
    pub conds: Vec<Cond>,
    /// Its action.
    pub action: Action,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|e| format!("bad network {s:?}: {e}"))
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|e| format!("bad address {s:?}: {e}"))
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("bad number {s:?}: {e}"))
}

fn parse_mark(s: &str) -> Result<(u32, u32), String> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_u32(v)?, parse_u32(m)?)),
        None => Ok((parse_u32(s)?, u32::MAX)),
    }
}

fn next_value<'a>(it: &mut impl Iterator<Item = &'a str>, opt: &str) -> Result<String, String> {
    it.next()
        .map(str::to_string)
        .ok_or_else(|| format!("{opt} needs a value"))
}

/// Parses the arguments of one rule.
pub fn parse(args: &[String]) -> Result<ParsedRule, String> {
    let mut conds = Vec::new();
    let mut action = Action::None;
    let mut negated = false;
    let mut it = args.iter().map(String::as_str);
    let mut target: Option<String> = None;
    let mut dnat: Option<SocketAddr> = None;
    let (mut or, mut xor, mut and_not) = (0u32, 0u32, 0u32);
    while let Some(arg) = it.next() {
        let neg = std::mem::take(&mut negated);
        match arg {
            "!" => negated = true,
            "-s" | "--source" | "--src" => {
                conds.push(Cond::Source(parse_net(&next_value(&mut it, arg)?)?, neg))
            }
            "-d" | "--destination" | "--dst" => conds.push(Cond::Destination(
                parse_net(&next_value(&mut it, arg)?)?,
                neg,
            )),
            "-p" | "--protocol" => conds.push(Cond::Protocol(
                next_value(&mut it, arg)?.to_lowercase(),
                neg,
            )),
            "-i" | "--in-interface" => {
                conds.push(Cond::InInterface(next_value(&mut it, arg)?, neg))
            }
            "-m" | "--match" => {
                next_value(&mut it, arg)?;
            }
            "--dport" | "--destination-port" => {
                let v = next_value(&mut it, arg)?;
                let (lo, hi) = v.split_once(':').unwrap_or((&v, &v));
                let port = |p: &str| p.parse::<u16>().map_err(|e| format!("bad port {p:?}: {e}"));
                conds.push(Cond::DestPort(port(lo)?, port(hi)?, neg));
            }
            "--src-type" | "--dst-type" => {
                let t = next_value(&mut it, arg)?;
                if t != "LOCAL" {
                    return Err(format!("addrtype {t} is not understood"));
                }
                conds.push(Cond::AddrTypeLocal {
                    source: arg == "--src-type",
                    negated: neg,
                });
            }
            "--mark" => {
                let (v, m) = parse_mark(&next_value(&mut it, arg)?)?;
                conds.push(Cond::Mark(v, m, neg));
            }
            "--ctstate" | "--state" => {
                let states = next_value(&mut it, arg)?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                conds.push(Cond::CtState(states, neg));
            }
            "--probability" | "--every" | "--rcheck" | "--update" => {
                if arg == "--probability" || arg == "--every" {
                    next_value(&mut it, arg)?;
                }
                conds.push(Cond::Maybe);
            }
            "--physdev-is-in" | "--physdev-is-bridged" => conds.push(Cond::Bridged(neg)),
            "--match-set" => {
                let name = next_value(&mut it, arg)?;
                let flags = next_value(&mut it, arg)?;
                let sources = flags
                    .split(',')
                    .map(|f| match f {
                        "src" => Ok(true),
                        "dst" => Ok(false),
                        other => Err(format!("--match-set flag {other:?} is not understood")),
                    })
                    .collect::<Result<Vec<bool>, String>>()?;
                conds.push(Cond::Set {
                    name,
                    sources,
                    negated: neg,
                });
            }
            "--comment" | "--mode" | "--name" | "--seconds" | "--nfacct-name" | "--packet"
            | "--hitcount" | "--mask" => {
                next_value(&mut it, arg)?;
            }
            "--set" | "--reap" | "--rsource" | "--random-fully" | "--random" => {}
            "-j" | "--jump" | "-g" | "--goto" => target = Some(next_value(&mut it, arg)?),
            "--to-destination" => {
                let v = next_value(&mut it, arg)?;
                dnat = Some(
                    v.parse()
                        .map_err(|e| format!("bad DNAT destination {v:?}: {e}"))?,
                );
            }
            "--or-mark" => or |= parse_u32(&next_value(&mut it, arg)?)?,
            "--xor-mark" => xor ^= parse_u32(&next_value(&mut it, arg)?)?,
            "--set-xmark" | "--set-mark" => {
                let (v, m) = parse_mark(&next_value(&mut it, arg)?)?;
                and_not |= m;
                xor ^= v;
            }
            "--reject-with" => {
                next_value(&mut it, arg)?;
            }
            other => return Err(format!("option {other:?} is not understood by the tracer")),
        }
    }
    if let Some(t) = target {
        action = match t.as_str() {
            "ACCEPT" | "DROP" | "REJECT" | "RETURN" => Action::Verdict(t),
            "DNAT" => Action::Dnat(dnat.ok_or("DNAT without --to-destination")?),
            "MARK" => Action::Mark { or, xor, and_not },
            "MASQUERADE" => Action::Masquerade,
            _ => Action::Jump(t),
        };
    }
    Ok(ParsedRule { conds, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ParsedRule {
        parse(&crate::tables::tokenize(s).unwrap()).unwrap()
    }

    #[test]
    fn parses_negated_source_and_mark_target() {
        let r = p(
            "-m comment --comment \"x y\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
        );
        assert!(
            r.conds
                .contains(&Cond::Source("10.0.0.0/8".parse().unwrap(), true))
        );
        assert!(r.conds.contains(&Cond::DestPort(80, 80, false)));
        assert_eq!(r.action, Action::Jump("KUBE-MARK-MASQ".into()));
        assert_eq!(
            p("-j MARK --or-mark 0x00004000").action,
            Action::Mark {
                or: 0x4000,
                xor: 0,
                and_not: 0
            }
        );
    }

    #[test]
    fn affinity_checks_as_iptables_save_prints_them_parse() {
        // The kernel adds `--mask` to `recent` matches.
        let r = p(
            "-m recent --rcheck --seconds 600 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-SEP-X",
        );
        assert_eq!(r.conds, vec![Cond::Maybe]);
        assert_eq!(r.action, Action::Jump("KUBE-SEP-X".into()));
    }

    #[test]
    fn set_matches_keep_their_flags_and_negation() {
        let r = p("-m set ! --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE");
        assert_eq!(
            r.conds,
            vec![Cond::Set {
                name: "KUBE-LOOP-BACK".into(),
                sources: vec![false, false, true],
                negated: true
            }]
        );
        assert!(parse(&crate::tables::tokenize("-m set --match-set X dst,both").unwrap()).is_err());
    }

    #[test]
    fn unknown_options_are_errors() {
        assert!(parse(&["--frobnicate".to_string()]).is_err());
    }
}
