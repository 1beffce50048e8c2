//! Walks a first packet through a [`FakeTable`] the way netfilter would:
//! hooks in order, base chains by priority, jumps, gotos, vmaps. Random
//! choices (`numgen`) and affinity lookups take every branch, so the
//! outcome lists every endpoint that may answer.
//!
//! [`Tracer::trace_path`] also records the path ([`Hop`]s, DNAT
//! [`Choice`]s with their probabilities) for `kube-proxy trace`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use proxy_core::conformance::{Origin, Outcome, Packet};
use proxy_core::{IpFamily, Protocol};

use super::FakeTable;
use super::path::{Choice, Hop, Path};
use crate::ir::{ElemKey, ElemValue, Hook, Rule, RuleDisplay, Stmt, TABLE, Verdict, VmapKey};

/// Chains deeper than this are a loop.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
struct Pkt {
    origin: Origin,
    /// The interface it entered on.
    iif: Option<String>,
    /// The chance of the branch this copy walks (random choices split it).
    chance: f64,
    /// Whether this branch went through an affinity lookup that matched.
    affinity: bool,
    /// What the statements of the rule being walked did, for its hop.
    notes: Vec<String>,
    saddr: IpAddr,
    daddr: IpAddr,
    proto: Protocol,
    dport: u16,
    mark: u32,
    dnat: Option<SocketAddr>,
    masqueraded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Fell off the chain or returned.
    Continue,
    Accept,
    Drop,
    Reject,
}

enum RuleEnd {
    NoMatch,
    Done,
    Accept,
    Reject,
    Verdict(Verdict),
}

/// A packet tracer over one family's fake table.
pub struct Tracer<'a> {
    table: &'a FakeTable,
    family: IpFamily,
    local_addresses: Vec<IpAddr>,
    hops: RefCell<Vec<Hop>>,
}

impl<'a> Tracer<'a> {
    /// A tracer for `table`; `local_addresses` are the node's own IPs
    /// (`fib … type local`); loopback is always local.
    pub fn new(table: &'a FakeTable, family: IpFamily, local_addresses: Vec<IpAddr>) -> Self {
        Tracer {
            table,
            family,
            local_addresses,
            hops: RefCell::new(Vec::new()),
        }
    }

    fn record(&self, hop: Hop) {
        let mut hops = self.hops.borrow_mut();
        if !hops.contains(&hop) {
            hops.push(hop);
        }
    }

    fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.local_addresses.contains(ip)
    }

    /// The outcome of `packet`.
    pub fn trace(&self, packet: &Packet) -> Outcome {
        self.trace_path(packet, None).outcome
    }

    /// The outcome and path of `packet`, entering on `in_interface` when
    /// given, else on the interface its origin implies.
    pub fn trace_path(&self, packet: &Packet, in_interface: Option<&str>) -> Path {
        self.hops.borrow_mut().clear();
        let start = Pkt {
            origin: packet.origin,
            iif: in_interface
                .or(packet.origin.in_interface())
                .map(str::to_string),
            chance: 1.0,
            affinity: false,
            notes: Vec::new(),
            saddr: packet.source,
            daddr: packet.destination,
            proto: packet.protocol,
            dport: packet.port,
            mark: 0,
            dnat: None,
            masqueraded: false,
        };
        let mut finals: Vec<(Flow, Pkt)> = Vec::new();
        let first_hook = if packet.origin == Origin::Host {
            Hook::Output
        } else {
            Hook::Prerouting
        };
        for (flow, p) in self.run_hook(first_hook, start) {
            if matches!(flow, Flow::Drop | Flow::Reject) {
                finals.push((flow, p));
                continue;
            }
            let next = if packet.origin == Origin::Host {
                // Host traffic to a local address loops back through INPUT.
                if self.is_local(&p.daddr) {
                    vec![Hook::Postrouting, Hook::Input]
                } else {
                    vec![Hook::Postrouting]
                }
            } else if self.is_local(&p.daddr) {
                vec![Hook::Input]
            } else {
                vec![Hook::Forward, Hook::Postrouting]
            };
            let mut states = vec![(Flow::Accept, p)];
            for hook in next {
                let mut after = Vec::new();
                for (flow, p) in states {
                    if matches!(flow, Flow::Drop | Flow::Reject) {
                        after.push((flow, p));
                    } else {
                        after.extend(self.run_hook(hook, p));
                    }
                }
                states = after;
            }
            finals.extend(states);
        }
        Path {
            hops: self.hops.take(),
            choices: choices(&finals),
            outcome: summarize(finals),
        }
    }

    fn run_hook(&self, hook: Hook, pkt: Pkt) -> Vec<(Flow, Pkt)> {
        let mut bases: Vec<(i32, &str)> = self
            .table
            .chains
            .iter()
            .filter_map(|(n, c)| {
                c.def
                    .base
                    .filter(|b| b.hook == hook)
                    .map(|b| (b.priority, n.as_str()))
            })
            .collect();
        bases.sort();
        let mut states = vec![(Flow::Accept, pkt)];
        for (_, chain) in bases {
            let mut next = Vec::new();
            for (flow, p) in states {
                if matches!(flow, Flow::Drop | Flow::Reject) {
                    next.push((flow, p));
                } else {
                    next.extend(self.run_chain(chain, p, 0));
                }
            }
            states = next;
        }
        states
    }

    fn run_chain(&self, chain: &str, pkt: Pkt, depth: usize) -> Vec<(Flow, Pkt)> {
        if depth > MAX_DEPTH {
            return vec![(Flow::Drop, pkt)];
        }
        self.record(Hop::enter(depth, TABLE, chain));
        self.run_rules(chain, 0, pkt, depth)
    }

    fn run_rules(&self, chain: &str, index: usize, pkt: Pkt, depth: usize) -> Vec<(Flow, Pkt)> {
        let Some(rule) = self
            .table
            .chains
            .get(chain)
            .and_then(|c| c.rules.get(index))
        else {
            return vec![(Flow::Continue, pkt)];
        };
        let mut out = Vec::new();
        for (end, mut p) in self.run_stmts(&rule.stmts, pkt) {
            let notes = std::mem::take(&mut p.notes);
            if !matches!(end, RuleEnd::NoMatch) {
                self.record_rule(chain, rule, depth, notes);
            }
            match end {
                RuleEnd::NoMatch | RuleEnd::Done => {
                    out.extend(self.run_rules(chain, index + 1, p, depth))
                }
                RuleEnd::Accept => out.push((Flow::Accept, p)),
                RuleEnd::Reject => out.push((Flow::Reject, p)),
                RuleEnd::Verdict(Verdict::Drop) => out.push((Flow::Drop, p)),
                RuleEnd::Verdict(Verdict::Return) => out.push((Flow::Continue, p)),
                RuleEnd::Verdict(Verdict::Goto(c)) => out.extend(self.run_chain(&c, p, depth + 1)),
                RuleEnd::Verdict(Verdict::Jump(c)) => {
                    for (flow, p2) in self.run_chain(&c, p, depth + 1) {
                        if flow == Flow::Continue {
                            out.extend(self.run_rules(chain, index + 1, p2, depth));
                        } else {
                            out.push((flow, p2));
                        }
                    }
                }
            }
        }
        out
    }

    fn record_rule(&self, chain: &str, rule: &Rule, depth: usize, notes: Vec<String>) {
        let rule = RuleDisplay {
            family: self.family,
            rule,
        }
        .to_string();
        self.record(Hop::rule(depth, TABLE, chain, rule, notes));
    }

    fn run_stmts(&self, stmts: &[Stmt], mut pkt: Pkt) -> Vec<(RuleEnd, Pkt)> {
        for (i, st) in stmts.iter().enumerate() {
            let matched = match st {
                Stmt::CtStateNew => true,
                Stmt::CtStatusDnat => pkt.dnat.is_some(),
                Stmt::DaddrInSet(s) => self.has_addr(s, &pkt.daddr),
                Stmt::SaddrDaddrInSet(s) => self.has(s, &ElemKey::AddrPair(pkt.saddr, pkt.daddr)),
                Stmt::DaddrIs(a) => pkt.daddr == *a,
                Stmt::SaddrIs(a) => pkt.saddr == *a,
                Stmt::SaddrInNet { net, negate } => net.contains(&pkt.saddr) != *negate,
                Stmt::DaddrNotInNet(net) => !net.contains(&pkt.daddr),
                Stmt::Iifname { name, negate } => {
                    iifname_matches(pkt.iif.as_deref().unwrap_or(""), name) != *negate
                }
                Stmt::FibSaddrLocal => pkt.origin == Origin::Host || self.is_local(&pkt.saddr),
                Stmt::FibDaddrLocal => self.is_local(&pkt.daddr),
                Stmt::L4proto(p) => pkt.proto == *p,
                Stmt::Dport(p, n) => pkt.proto == *p && pkt.dport == *n,
                Stmt::MarkUnset(m) => pkt.mark & m == 0,
                Stmt::Numgen { modulus, value } => {
                    if *modulus <= 1 {
                        *value == 0
                    } else {
                        // Both outcomes are possible: fork.
                        // The taken branch first, so the path reads in
                        // rule order.
                        let n = f64::from(*modulus);
                        let mut miss = pkt.clone();
                        miss.chance *= (n - 1.0) / n;
                        pkt.chance /= n;
                        pkt.notes
                            .push(format!("taken with probability 1/{modulus}"));
                        let mut out = self.run_stmts(&stmts[i + 1..], pkt);
                        out.push((RuleEnd::NoMatch, miss));
                        return out;
                    }
                }
                Stmt::SaddrInSet(set) => {
                    // Affinity: the client may or may not be remembered.
                    let miss = pkt.clone();
                    pkt.affinity = true;
                    pkt.notes.push(format!(
                        "session affinity: taken when the client is in set {set}"
                    ));
                    let mut out = self.run_stmts(&stmts[i + 1..], pkt);
                    out.push((RuleEnd::NoMatch, miss));
                    return out;
                }
                Stmt::MarkOr(m) => {
                    let before = pkt.mark;
                    pkt.mark |= m;
                    pkt.notes
                        .push(format!("mark {before:#x} -> {:#x}", pkt.mark));
                    true
                }
                Stmt::MarkXor(m) => {
                    let before = pkt.mark;
                    pkt.mark ^= m;
                    pkt.notes
                        .push(format!("mark {before:#x} -> {:#x}", pkt.mark));
                    true
                }
                Stmt::UpdateSaddr(set) => {
                    pkt.notes.push(format!(
                        "session affinity: remembers the client in set {set}"
                    ));
                    true
                }
                Stmt::Vmap { key, map } => {
                    let k = match key {
                        VmapKey::DaddrProtoPort => {
                            ElemKey::AddrProtoPort(pkt.daddr, pkt.proto, pkt.dport)
                        }
                        VmapKey::ProtoPort => ElemKey::ProtoPort(pkt.proto, pkt.dport),
                    };
                    let verdict = self
                        .table
                        .sets
                        .get(map)
                        .and_then(|s| s.elements.get(&k))
                        .and_then(|(v, _)| v.as_ref().and_then(ElemValue::verdict).cloned());
                    return match verdict {
                        Some(v) => {
                            pkt.notes.push(format!(
                                "map {map}: element {} -> {}",
                                key_text(&k),
                                crate::ir::VerdictDisplay(&v)
                            ));
                            vec![(RuleEnd::Verdict(v), pkt)]
                        }
                        None => vec![(RuleEnd::NoMatch, pkt)],
                    };
                }
                Stmt::Dnat(to) => {
                    pkt.notes.push(format!("DNAT to {to}"));
                    pkt.dnat = Some(*to);
                    pkt.daddr = to.ip();
                    pkt.dport = to.port();
                    return vec![(RuleEnd::Accept, pkt)];
                }
                Stmt::DnatLoadBalance {
                    proto,
                    map,
                    modulus,
                } => {
                    if pkt.proto != *proto {
                        return vec![(RuleEnd::NoMatch, pkt)];
                    }
                    // Every index `numgen` may yield: fork. No element: the
                    // rule does not match (the kernel's NFT_BREAK).
                    let (daddr, dport) = (pkt.daddr, pkt.dport);
                    let mut out = Vec::new();
                    for index in 0..*modulus {
                        let key = ElemKey::LoadBalance(daddr, dport, index);
                        let to = self
                            .table
                            .sets
                            .get(map)
                            .and_then(|s| s.elements.get(&key))
                            .and_then(|(v, _)| match v {
                                Some(ElemValue::Endpoint(to)) => Some(*to),
                                _ => None,
                            });
                        match to {
                            Some(to) => {
                                let mut p = pkt.clone();
                                p.chance /= f64::from(*modulus);
                                p.notes.push(format!(
                                    "map {map}: element {daddr} . {dport} . {index} -> DNAT to {to} (probability 1/{modulus})"
                                ));
                                p.dnat = Some(to);
                                p.daddr = to.ip();
                                p.dport = to.port();
                                out.push((RuleEnd::Accept, p));
                            }
                            None => out.push((RuleEnd::NoMatch, pkt.clone())),
                        }
                    }
                    if out.is_empty() {
                        out.push((RuleEnd::NoMatch, pkt));
                    }
                    return out;
                }
                Stmt::Masquerade => {
                    pkt.notes
                        .push("source rewritten to a node address".to_string());
                    pkt.masqueraded = true;
                    return vec![(RuleEnd::Accept, pkt)];
                }
                Stmt::Reject => return vec![(RuleEnd::Reject, pkt)],
                Stmt::Verdict(v) => return vec![(RuleEnd::Verdict(v.clone()), pkt)],
            };
            if !matched {
                return vec![(RuleEnd::NoMatch, pkt)];
            }
        }
        let _ = self.family;
        vec![(RuleEnd::Done, pkt)]
    }

    /// `ip daddr @set`: exact for address sets, a prefix lookup for
    /// interval sets.
    fn has_addr(&self, set: &str, addr: &IpAddr) -> bool {
        self.table
            .sets
            .get(set)
            .is_some_and(|s| s.matches_addr(addr))
    }

    fn has(&self, set: &str, key: &ElemKey) -> bool {
        self.table
            .sets
            .get(set)
            .is_some_and(|s| s.elements.contains_key(key))
    }
}

/// An element key as nft prints it.
fn key_text(key: &ElemKey) -> String {
    match key {
        ElemKey::Addr(a) => a.to_string(),
        ElemKey::AddrPair(a, b) => format!("{a} . {b}"),
        ElemKey::AddrProtoPort(a, p, n) => format!("{a} . {} . {n}", p.lower()),
        ElemKey::ProtoPort(p, n) => format!("{} . {n}", p.lower()),
        ElemKey::LoadBalance(a, n, i) => format!("{a} . {n} . {i}"),
        ElemKey::Net(n) => n.to_string(),
    }
}

/// The DNAT choices of the branches that were forwarded: chances of equal
/// endpoints (and affinity) added up.
fn choices(finals: &[(Flow, Pkt)]) -> Vec<Choice> {
    let mut out: Vec<Choice> = Vec::new();
    for (flow, p) in finals {
        let Some(endpoint) = p.dnat else { continue };
        if matches!(flow, Flow::Drop | Flow::Reject) {
            continue;
        }
        match out
            .iter_mut()
            .find(|c| c.endpoint == endpoint && c.affinity == p.affinity)
        {
            Some(c) => c.probability += p.chance,
            None => out.push(Choice {
                endpoint,
                probability: p.chance,
                affinity: p.affinity,
            }),
        }
    }
    out
}

/// nft's `iifname` match: exact, or a prefix when `pattern` ends in `*`.
fn iifname_matches(interface: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => interface.starts_with(prefix),
        None => interface == pattern,
    }
}

/// Folds every branch into one outcome: forwarded if any branch was
/// DNATed (to any of those endpoints, masqueraded if any such branch was),
/// else rejected, dropped, or not matched.
fn summarize(finals: Vec<(Flow, Pkt)>) -> Outcome {
    let mut endpoints = BTreeSet::new();
    let mut masqueraded = false;
    let (mut rejected, mut dropped) = (false, false);
    for (flow, p) in &finals {
        match flow {
            Flow::Reject => rejected = true,
            Flow::Drop => dropped = true,
            Flow::Continue | Flow::Accept => {
                if let Some(to) = p.dnat {
                    endpoints.insert(to);
                    masqueraded |= p.masqueraded;
                }
            }
        }
    }
    if !endpoints.is_empty() {
        Outcome::Forwarded {
            endpoints,
            masqueraded,
        }
    } else if rejected {
        Outcome::Rejected
    } else if dropped {
        Outcome::Dropped
    } else {
        Outcome::NotMatched
    }
}
