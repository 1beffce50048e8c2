//! A packet tracer over iptables state, like upstream's `iptablesTracer`
//! but walking the built-in chains along the path the packet's origin
//! implies: nat `PREROUTING` (or `OUTPUT` for the host), then filter
//! `INPUT`/`FORWARD`/`OUTPUT`, then nat `POSTROUTING`.
//!
//! Probabilistic matches (`statistic`, `recent --rcheck`) are followed in
//! every branch, so a traced packet reports every endpoint that may answer.
//!
//! [`trace_path`] also records the path ([`Hop`]s: every chain entered and
//! every rule that matched, with DNAT choices and their probabilities), for
//! `kube-proxy trace`; [`trace`] is the outcome alone.

mod hop;
mod rule;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use proxy_core::conformance::{Origin, Outcome, Packet};

pub use hop::{Choice, Hop, Path};
pub use rule::{Action, Cond, ParsedRule, parse};

use crate::tables::Tables;

/// Why a trace failed: the state holds something the tracer cannot
/// interpret, or loops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot trace {table}/{chain}: {reason}")]
pub struct TraceError {
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// What went wrong.
    pub reason: String,
}

/// What the tracer knows about the node. Packets enter on the interface
/// their [`Origin::in_interface`] names.
#[derive(Debug, Clone)]
pub struct Node {
    /// Addresses `addrtype LOCAL` matches (loopback is always local).
    pub local_ips: Vec<IpAddr>,
}

impl Node {
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local_ips.contains(&ip)
    }
}

/// A packet's fields as an ipset match reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetProbe {
    /// Source address.
    pub source: IpAddr,
    /// Destination address (after DNAT, where the match runs after it).
    pub destination: IpAddr,
    /// `tcp`, `udp`, `sctp`.
    pub protocol: &'static str,
    /// Destination port.
    pub port: u16,
}

/// The contents of the ipsets `-m set --match-set` rules name (ipvs mode's
/// `ipset save`): without them such rules cannot be traced.
pub trait SetLookup {
    /// Whether set `name` holds the packet's fields: one per dimension of
    /// the set's type, each the source (`true`) or the destination, as the
    /// match's flags say (`dst,dst,src`). `None` when there is no such set.
    fn contains(&self, name: &str, sources: &[bool], probe: &SetProbe) -> Option<bool>;
}

/// Where new connections to a local address go when something other than
/// iptables rules picks the endpoint (ipvs mode's IPVS virtual servers,
/// consulted after the filter chains, where IPVS hooks in).
pub trait VirtualServers {
    /// The virtual server at `destination:port` over `protocol`: its hops
    /// and the real servers a new connection may go to (empty: it has none
    /// that take new connections, and the connection is refused); `None`
    /// when there is none.
    fn schedule(
        &self,
        protocol: &str,
        destination: IpAddr,
        port: u16,
    ) -> Option<(Vec<Hop>, Vec<Choice>)>;
}

/// What a trace may consult besides the iptables rules.
#[derive(Clone, Copy, Default)]
pub struct Extras<'a> {
    /// The ipsets, for `--match-set`.
    pub sets: Option<&'a dyn SetLookup>,
    /// Virtual servers (IPVS), after the filter chains.
    pub virtual_servers: Option<&'a dyn VirtualServers>,
}

/// The packet as the rules see it.
#[derive(Debug, Clone)]
struct State {
    source: IpAddr,
    destination: IpAddr,
    port: u16,
    protocol: &'static str,
    in_interface: Option<String>,
    mark: u32,
    dnat: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Fell off the end of the chain, or `RETURN`.
    Continue,
    /// Hit a terminal target.
    Terminal,
}

/// Whether a rule's matches hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    No,
    Yes,
    Maybe,
}

struct Walk<'a> {
    tables: &'a Tables,
    node: &'a Node,
    sets: Option<&'a dyn SetLookup>,
    dnat: Vec<SocketAddr>,
    verdict: Option<String>,
    masqueraded: bool,
    depth: usize,
    /// The path so far.
    hops: Vec<Hop>,
    /// Every DNAT, with the chance of the branch that reached it.
    choices: Vec<Choice>,
    /// The probability that the packet is on the branch being walked
    /// (`statistic` rules split it).
    chance: f64,
    /// Whether the branch being walked is a session-affinity one
    /// (`recent --rcheck`).
    affinity: bool,
    /// Skip rules the tracer does not understand outside `KUBE-*` chains.
    lenient: bool,
}

impl Walk<'_> {
    fn err(table: &str, chain: &str, reason: impl Into<String>) -> TraceError {
        TraceError {
            table: table.into(),
            chain: chain.into(),
            reason: reason.into(),
        }
    }

    fn matches(&self, conds: &[Cond], s: &State) -> Result<Hit, String> {
        let mut hit = Hit::Yes;
        for cond in conds {
            let (ok, neg) = match cond {
                Cond::Set {
                    name,
                    sources,
                    negated,
                } => {
                    let probe = SetProbe {
                        source: s.source,
                        destination: s.destination,
                        protocol: s.protocol,
                        port: s.port,
                    };
                    let Some(sets) = self.sets else {
                        return Err(format!(
                            "the rule matches ipset {name}: tracing it needs the sets' contents"
                        ));
                    };
                    let ok = sets
                        .contains(name, sources, &probe)
                        .ok_or_else(|| format!("no ipset named {name}"))?;
                    (ok, *negated)
                }
                Cond::Source(net, neg) => (net.contains(&s.source), *neg),
                Cond::Destination(net, neg) => (net.contains(&s.destination), *neg),
                Cond::Protocol(p, neg) => (p == "all" || p == s.protocol, *neg),
                Cond::DestPort(lo, hi, neg) => ((*lo..=*hi).contains(&s.port), *neg),
                Cond::InInterface(name, neg) => {
                    let ok =
                        s.in_interface
                            .as_deref()
                            .is_some_and(|i| match name.strip_suffix('+') {
                                Some(prefix) => i.starts_with(prefix),
                                None => i == name,
                            });
                    (ok, *neg)
                }
                Cond::AddrTypeLocal { source, negated } => (
                    self.node
                        .is_local(if *source { s.source } else { s.destination }),
                    *negated,
                ),
                Cond::Mark(value, mask, neg) => (s.mark & mask == *value, *neg),
                Cond::Bridged(neg) => (false, *neg),
                Cond::CtState(states, neg) => {
                    let ok = states
                        .iter()
                        .any(|st| st == "NEW" || (st == "DNAT" && s.dnat));
                    (ok, *neg)
                }
                Cond::Maybe => {
                    hit = Hit::Maybe;
                    continue;
                }
            };
            if ok == neg {
                return Ok(Hit::No);
            }
        }
        Ok(hit)
    }

    fn run(&mut self, table: &str, chain: &str, s: &mut State) -> Result<Flow, TraceError> {
        let c = self
            .tables
            .chain(table, chain)
            .ok_or_else(|| Self::err(table, chain, "no such chain"))?;
        self.depth += 1;
        if self.depth > 64 {
            return Err(Self::err(table, chain, "jump depth above 64 (a loop?)"));
        }
        self.hops.push(Hop::enter(self.depth, table, chain));
        let mut flow = Flow::Continue;
        for r in &c.rules {
            let parsed = match parse(&r.args) {
                Ok(parsed) => parsed,
                Err(e) if self.lenient && !chain.starts_with("KUBE-") => {
                    self.hops.push(Hop::rule(
                        self.depth,
                        table,
                        chain,
                        format!("-A {chain} {}", r.text()),
                        vec![format!(
                            "not kube-proxy's and not understood ({e}): assumed not to match"
                        )],
                    ));
                    continue;
                }
                Err(e) => {
                    return Err(Self::err(table, chain, format!("{e} in `{}`", r.text())));
                }
            };
            let hit = match self.matches(&parsed.conds, s) {
                Ok(hit) => hit,
                Err(e) if self.lenient && !chain.starts_with("KUBE-") => {
                    self.hops.push(Hop::rule(
                        self.depth,
                        table,
                        chain,
                        format!("-A {chain} {}", r.text()),
                        vec![format!(
                            "not kube-proxy's and cannot be evaluated ({e}): assumed not to match"
                        )],
                    ));
                    continue;
                }
                Err(e) => return Err(Self::err(table, chain, format!("{e} in `{}`", r.text()))),
            };
            if hit == Hit::No {
                continue;
            }
            let certain = hit == Hit::Yes;
            let probability = hop::probability(&r.args);
            let affinity = hop::is_affinity_check(&r.args);
            let (chance, was_affinity) = (self.chance, self.affinity);
            if let Some(p) = probability {
                self.chance = chance * p;
            }
            self.affinity |= affinity;
            self.hops.push(Hop::rule(
                self.depth,
                table,
                chain,
                format!("-A {chain} {}", r.text()),
                hop::notes(&r.args, &parsed.action, probability, affinity, s.mark),
            ));
            let flow_here = self.act(table, parsed.action, certain, s)?;
            self.chance = match probability {
                Some(p) => chance * (1.0 - p),
                None => chance,
            };
            self.affinity = was_affinity;
            if let Some(f) = flow_here {
                flow = f;
                break;
            }
        }
        self.depth -= 1;
        Ok(flow)
    }

    /// Applies a matched rule's action; `Some` ends the chain.
    fn act(
        &mut self,
        table: &str,
        action: Action,
        certain: bool,
        s: &mut State,
    ) -> Result<Option<Flow>, TraceError> {
        let mut flow = None;
        {
            match action {
                Action::None => {}
                Action::Mark { or, xor, and_not } => s.mark = ((s.mark | or) & !and_not) ^ xor,
                Action::Verdict(v) if v == "RETURN" => {
                    if certain {
                        flow = Some(Flow::Continue);
                    }
                }
                Action::Verdict(v) => {
                    if self.verdict.is_none() {
                        self.verdict = Some(v);
                    }
                    if certain {
                        flow = Some(Flow::Terminal);
                    }
                }
                Action::Dnat(to) => {
                    self.dnat.push(to);
                    self.choices.push(Choice {
                        endpoint: to,
                        probability: self.chance,
                        affinity: self.affinity,
                    });
                    if certain {
                        flow = Some(Flow::Terminal);
                    }
                }
                Action::Masquerade => {
                    self.masqueraded = true;
                    if certain {
                        flow = Some(Flow::Terminal);
                    }
                }
                Action::Jump(target) => {
                    if self.run(table, &target, s)? == Flow::Terminal && certain {
                        flow = Some(Flow::Terminal);
                    }
                }
            }
        }
        Ok(flow)
    }
}

/// Traces `packet` through `tables` on `node`.
pub fn trace(tables: &Tables, node: &Node, packet: &Packet) -> Result<Outcome, TraceError> {
    trace_path(tables, node, packet, None).map(|path| path.outcome)
}

/// Traces `packet` through `tables` on `node` and records its path. The
/// packet enters on `in_interface` when given, else on the interface its
/// origin implies ([`Origin::in_interface`]).
pub fn trace_path(
    tables: &Tables,
    node: &Node,
    packet: &Packet,
    in_interface: Option<&str>,
) -> Result<Path, TraceError> {
    trace_path_with(tables, node, packet, in_interface, false, Extras::default())
}

/// [`trace_path`] over a live host's rules: rules outside kube-proxy's
/// `KUBE-*` chains that the tracer does not understand (another
/// firewall's) are recorded as hops and assumed not to match, instead of
/// failing the trace.
pub fn trace_path_lenient(
    tables: &Tables,
    node: &Node,
    packet: &Packet,
    in_interface: Option<&str>,
) -> Result<Path, TraceError> {
    trace_path_with(tables, node, packet, in_interface, true, Extras::default())
}

/// [`trace_path_lenient`] (or strict, unless `lenient`) with ipsets and
/// virtual servers to consult: ipvs mode's rules.
pub fn trace_path_with(
    tables: &Tables,
    node: &Node,
    packet: &Packet,
    in_interface: Option<&str>,
    lenient: bool,
    extras: Extras<'_>,
) -> Result<Path, TraceError> {
    let mut s = State {
        source: packet.source,
        destination: packet.destination,
        port: packet.port,
        protocol: packet.protocol.lower(),
        in_interface: in_interface
            .or(packet.origin.in_interface())
            .map(str::to_string),
        mark: 0,
        dnat: false,
    };
    let mut walk = Walk {
        tables,
        node,
        sets: extras.sets,
        dnat: Vec::new(),
        verdict: None,
        masqueraded: false,
        depth: 0,
        hops: Vec::new(),
        choices: Vec::new(),
        chance: 1.0,
        affinity: false,
        lenient,
    };
    let has = |table: &str, chain: &str| tables.chain(table, chain).is_some();
    let nat_in = if packet.origin == Origin::Host {
        "OUTPUT"
    } else {
        "PREROUTING"
    };
    if has("nat", nat_in) {
        walk.run("nat", nat_in, &mut s)?;
    }
    // ACCEPT in nat ends the nat table only (ipvs mode accepts service
    // traffic there); the filter table still sees the packet.
    if walk.verdict.as_deref() == Some("ACCEPT") {
        walk.verdict = None;
    }
    if let Some(first) = walk.dnat.first() {
        s.destination = first.ip();
        s.port = first.port();
        s.dnat = true;
    }
    let local = node.is_local(s.destination);
    let filter_chains: &[&str] = match (packet.origin, local) {
        (Origin::Host, true) => &["OUTPUT", "INPUT"],
        (Origin::Host, false) => &["OUTPUT"],
        (_, true) => &["INPUT"],
        (_, false) => &["FORWARD"],
    };
    for chain in filter_chains {
        if walk.verdict.is_some() {
            break;
        }
        if has("filter", chain) {
            walk.run("filter", chain, &mut s)?;
        }
        if walk.verdict.as_deref() == Some("ACCEPT") {
            walk.verdict = None;
        }
    }
    let outcome = match walk.verdict.as_deref() {
        Some("DROP") => Some(Outcome::Dropped),
        Some("REJECT") => Some(Outcome::Rejected),
        _ => None,
    };
    // IPVS takes locally delivered packets after the filter chains
    // (LOCAL_IN) and sends them on to a real server.
    let scheduled = match (
        outcome.is_none() && walk.dnat.is_empty() && local,
        extras.virtual_servers,
    ) {
        (true, Some(vs)) => vs.schedule(s.protocol, s.destination, s.port),
        _ => None,
    };
    let outcome = match (outcome, scheduled) {
        (Some(o), _) => Some(o),
        (None, Some((hops, choices))) => {
            walk.hops.extend(hops);
            if choices.is_empty() {
                Some(Outcome::Rejected)
            } else {
                for c in &choices {
                    if !walk.dnat.contains(&c.endpoint) {
                        walk.dnat.push(c.endpoint);
                    }
                }
                walk.choices.extend(choices);
                if let Some(first) = walk.dnat.first() {
                    s.destination = first.ip();
                    s.port = first.port();
                    s.dnat = true;
                }
                None
            }
        }
        (None, None) => None,
    };
    let outcome = match outcome {
        Some(o) => o,
        None => {
            if has("nat", "POSTROUTING") {
                walk.run("nat", "POSTROUTING", &mut s)?;
            }
            if walk.dnat.is_empty() {
                Outcome::NotMatched
            } else {
                Outcome::Forwarded {
                    endpoints: walk.dnat.iter().copied().collect::<BTreeSet<_>>(),
                    masqueraded: walk.masqueraded,
                }
            }
        }
    };
    Ok(Path {
        hops: walk.hops,
        choices: walk.choices,
        mark: s.mark,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::Protocol;

    const SAVE: &str = "*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SEP-B - [0:0]
-A PREROUTING -m set --match-set blocked src -j DROP
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -m statistic --mode random --probability 0.25 -j KUBE-SEP-A
-A KUBE-SVC-A -j KUBE-SEP-B
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.0.1:8080
-A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080
COMMIT
";

    fn packet() -> Packet {
        Packet {
            origin: Origin::External,
            source: "192.0.2.1".parse().unwrap(),
            protocol: Protocol::Tcp,
            destination: "10.96.0.10".parse().unwrap(),
            port: 80,
        }
    }

    #[test]
    fn the_path_records_dnat_choices_with_their_probabilities() {
        let tables = Tables::parse(
            SAVE.replace("-A PREROUTING -m set --match-set blocked src -j DROP\n", "")
                .as_str(),
        )
        .unwrap();
        let node = Node { local_ips: vec![] };
        let path = trace_path(&tables, &node, &packet(), None).unwrap();
        let choices: Vec<(String, f64)> = path
            .choices
            .iter()
            .map(|c| (c.endpoint.to_string(), c.probability))
            .collect();
        assert_eq!(
            choices,
            vec![
                ("10.244.0.1:8080".to_string(), 0.25),
                ("10.244.0.2:8080".to_string(), 0.75)
            ]
        );
        assert!(
            path.hops
                .iter()
                .any(|h| h.chain == "KUBE-SVC-A" && h.rule.is_none()),
            "{:?}",
            path.hops
        );
        assert!(matches!(path.outcome, Outcome::Forwarded { .. }));
    }

    #[test]
    fn foreign_rules_fail_strict_traces_and_are_skipped_by_lenient_ones() {
        let tables = Tables::parse(SAVE).unwrap();
        let node = Node { local_ips: vec![] };
        assert!(trace_path(&tables, &node, &packet(), None).is_err());
        let path = trace_path_lenient(&tables, &node, &packet(), None).unwrap();
        assert!(
            path.hops
                .iter()
                .any(|h| h.notes.iter().any(|n| n.contains("assumed not to match")))
        );
        assert!(matches!(path.outcome, Outcome::Forwarded { .. }));
    }
}
