//! The subset of nftables this backend writes, as typed values.
//!
//! One vocabulary for three consumers: `Display` prints it in nft's own
//! syntax, the script `nft -f -` applies ([`Transaction::to_script`], also
//! `--dry-run` output, dumps and logs); the fake applies it to an
//! in-memory table; and the tracer walks packets through it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::model::rule_comment;
use proxy_core::{IpFamily, Protocol};

use crate::names::COMMENT_MAX;

/// A comment as nft reads it: `"text"`, the text made safe and cut to
/// [`COMMENT_MAX`] (a no-op for the comments the renderers make; a second
/// line of defence, since nft strings have no escapes and nft refuses a
/// longer comment, and with it the whole transaction).
struct CommentText<'a>(&'a str);

impl fmt::Display for CommentText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", rule_comment(self.0, COMMENT_MAX))
    }
}

/// Our table's name (both families).
pub const TABLE: &str = "kube-proxy";

pub use proxy_core::exec::nft::family_word;

/// `ipv4_addr` or `ipv6_addr`.
pub fn addr_type(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

/// A netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// prerouting
    Prerouting,
    /// input
    Input,
    /// forward
    Forward,
    /// output
    Output,
    /// postrouting
    Postrouting,
}

impl Hook {
    fn word(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainType {
    /// `filter`
    Filter,
    /// `nat`
    Nat,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BaseChain {
    /// Type.
    pub kind: ChainType,
    /// Hook.
    pub hook: Hook,
    /// Numeric priority.
    pub priority: i32,
}

/// A chain declaration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainDef {
    /// Name.
    pub name: String,
    /// Set for base chains.
    pub base: Option<BaseChain>,
}

impl ChainDef {
    /// A regular chain.
    pub fn regular(name: impl Into<String>) -> Self {
        ChainDef {
            name: name.into(),
            base: None,
        }
    }
}

/// The key type of a set or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyType {
    /// An address of the table's family.
    Addr,
    /// `addr . addr`.
    AddrPair,
    /// `addr . inet_proto . inet_service`.
    AddrProtoPort,
    /// `inet_proto . inet_service`.
    ProtoPort,
    /// A protocol's load-balancing map: `addr . port . index : addr . port`,
    /// declared with `typeof` (the index is what `numgen` yields, an
    /// integer no named nft type matches).
    LoadBalance(Protocol),
    /// Networks of the table's family: an address set with `flags
    /// interval`, whose elements are prefixes ([`ElemKey::Net`]; nft also
    /// takes a plain address as a one-address prefix). An address matches
    /// when a prefix contains it; prefixes must not overlap.
    Net,
}

impl KeyType {
    /// Whether `key` is an element key of this type.
    pub fn accepts(self, key: &ElemKey) -> bool {
        matches!(
            (self, key),
            (KeyType::Addr | KeyType::Net, ElemKey::Addr(_))
                | (KeyType::Net, ElemKey::Net(_))
                | (KeyType::AddrPair, ElemKey::AddrPair(..))
                | (KeyType::AddrProtoPort, ElemKey::AddrProtoPort(..))
                | (KeyType::ProtoPort, ElemKey::ProtoPort(..))
                | (KeyType::LoadBalance(_), ElemKey::LoadBalance(..))
        )
    }
}

/// A named set (`verdict_map == false`) or verdict map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetDef {
    /// Name.
    pub name: String,
    /// Key type.
    pub key: KeyType,
    /// Whether this is a `: verdict` map.
    pub verdict_map: bool,
    /// Element timeout in seconds (`flags dynamic,timeout`), for affinity sets.
    pub timeout: Option<u32>,
    /// Comment.
    pub comment: Option<String>,
}

impl SetDef {
    /// Whether this is a map (`: verdict` or the load-balancing map).
    pub fn is_map(&self) -> bool {
        self.verdict_map || matches!(self.key, KeyType::LoadBalance(_))
    }
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `jump chain`
    Jump(String),
    /// `goto chain`
    Goto(String),
    /// `return`
    Return,
    /// `drop`
    Drop,
}

impl Verdict {
    /// The chain this verdict enters, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            Verdict::Return | Verdict::Drop => None,
        }
    }
}

/// The value of a map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElemValue {
    /// A verdict (verdict maps).
    Verdict(Verdict),
    /// A DNAT destination `addr . port` (the load-balancing map).
    Endpoint(SocketAddr),
}

impl ElemValue {
    /// The chain this value enters, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            ElemValue::Verdict(v) => v.target(),
            ElemValue::Endpoint(_) => None,
        }
    }

    /// The verdict, for verdict-map values.
    pub fn verdict(&self) -> Option<&Verdict> {
        match self {
            ElemValue::Verdict(v) => Some(v),
            ElemValue::Endpoint(_) => None,
        }
    }
}

/// The key of a set or map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElemKey {
    /// An address.
    Addr(IpAddr),
    /// `addr . addr`.
    AddrPair(IpAddr, IpAddr),
    /// `addr . proto . port`.
    AddrProtoPort(IpAddr, Protocol, u16),
    /// `proto . port`.
    ProtoPort(Protocol, u16),
    /// `addr . port . index`: endpoint `index` of a service port in its
    /// protocol's load-balancing map.
    LoadBalance(IpAddr, u16, u32),
    /// A prefix, in an interval set ([`KeyType::Net`]).
    Net(IpNet),
}

/// One element of a named set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The set or map.
    pub set: String,
    /// Key.
    pub key: ElemKey,
    /// The value, for maps.
    pub value: Option<ElemValue>,
    /// Comment (upstream puts the service port name on no-endpoint elements).
    pub comment: Option<String>,
}

/// What a vmap statement looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VmapKey {
    /// `ip daddr . meta l4proto . th dport`
    DaddrProtoPort,
    /// `meta l4proto . th dport`
    ProtoPort,
}

/// One statement of a rule: a match (the rule stops here when it fails) or
/// an action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stmt {
    /// `ct state new`
    CtStateNew,
    /// `ct status dnat`
    CtStatusDnat,
    /// `ip daddr @set`
    DaddrInSet(String),
    /// `ip saddr @set`
    SaddrInSet(String),
    /// `ip saddr . ip daddr @set`
    SaddrDaddrInSet(String),
    /// `ip daddr X`
    DaddrIs(IpAddr),
    /// `ip saddr X`
    SaddrIs(IpAddr),
    /// `ip saddr [!=] net` (`negate` for `!=`)
    SaddrInNet {
        /// The network.
        net: IpNet,
        /// `!=`
        negate: bool,
    },
    /// `ip daddr != net`
    DaddrNotInNet(IpNet),
    /// `iifname [!=] "name"` (a trailing `*` is a prefix wildcard)
    Iifname {
        /// Interface name or prefix with `*`.
        name: String,
        /// `!=`
        negate: bool,
    },
    /// `fib saddr type local`
    FibSaddrLocal,
    /// `fib daddr type local`
    FibDaddrLocal,
    /// `meta l4proto P`
    L4proto(Protocol),
    /// `P dport N`
    Dport(Protocol, u16),
    /// `mark and M == 0`
    MarkUnset(u32),
    /// `numgen random mod N == V`
    Numgen {
        /// Modulus.
        modulus: u32,
        /// Compared value.
        value: u32,
    },
    /// `mark set mark or M`
    MarkOr(u32),
    /// `mark set mark xor M`
    MarkXor(u32),
    /// `update @set { ip saddr }`
    UpdateSaddr(String),
    /// `K vmap @map`
    Vmap {
        /// What is looked up.
        key: VmapKey,
        /// The map.
        map: String,
    },
    /// `dnat to ip:port`
    Dnat(SocketAddr),
    /// `dnat ip to ip daddr . P dport . numgen random mod N map @map`:
    /// endpoint `numgen` of the destination service port, from protocol
    /// `P`'s load-balancing map (another protocol or no element: the rule
    /// does not match).
    DnatLoadBalance {
        /// The protocol (nft adds the `meta l4proto P` dependency).
        proto: Protocol,
        /// The load-balancing map.
        map: String,
        /// Number of endpoints (`N`).
        modulus: u32,
    },
    /// `masquerade fully-random`
    Masquerade,
    /// `reject`
    Reject,
    /// A verdict.
    Verdict(Verdict),
}

/// A rule: statements in order, and a comment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Statements.
    pub stmts: Vec<Stmt>,
    /// Comment.
    pub comment: Option<String>,
}

impl Rule {
    /// A rule without comment.
    pub fn new(stmts: Vec<Stmt>) -> Self {
        Rule {
            stmts,
            comment: None,
        }
    }

    /// The same rule with `comment`.
    pub fn comment(mut self, comment: &str) -> Self {
        self.comment = Some(comment.to_string());
        self
    }

    /// Chains this rule enters.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.stmts.iter().filter_map(|s| match s {
            Stmt::Verdict(v) => v.target(),
            _ => None,
        })
    }

    /// Sets this rule references.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.stmts.iter().filter_map(|s| match s {
            Stmt::DaddrInSet(n)
            | Stmt::SaddrInSet(n)
            | Stmt::SaddrDaddrInSet(n)
            | Stmt::UpdateSaddr(n) => Some(n.as_str()),
            Stmt::Vmap { map, .. } | Stmt::DnatLoadBalance { map, .. } => Some(map.as_str()),
            _ => None,
        })
    }
}

/// One command of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `add table` (no-op when it exists).
    AddTable,
    /// `delete table`.
    DeleteTable,
    /// `add chain` (no-op when it exists).
    AddChain(ChainDef),
    /// `flush chain`.
    FlushChain(String),
    /// `delete chain` (must be empty and unreferenced).
    DeleteChain(String),
    /// `add rule`.
    AddRule {
        /// Chain.
        chain: String,
        /// Rule.
        rule: Rule,
    },
    /// `add set` / `add map` (no-op when it exists with the same type).
    AddSet(SetDef),
    /// `flush set` / `flush map` (`map`: it is a verdict map).
    FlushSet {
        /// Name.
        name: String,
        /// Whether it is a map.
        map: bool,
    },
    /// `delete set` / `delete map`.
    DeleteSet(String),
    /// `add element`.
    AddElement(Element),
    /// `delete element`.
    DeleteElement(Element),
}

/// A transaction: commands for one family's table, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The family.
    pub family: IpFamily,
    /// Commands, in order.
    pub commands: Vec<Command>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new(family: IpFamily) -> Self {
        Transaction {
            family,
            commands: Vec::new(),
        }
    }

    /// Appends a command.
    pub fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The transaction as an `nft -f` script.
    pub fn to_script(&self) -> String {
        let mut out = String::new();
        for c in &self.commands {
            out.push_str(
                &CommandDisplay {
                    family: self.family,
                    command: c,
                }
                .to_string(),
            );
            out.push('\n');
        }
        out
    }
}

/// Prints a command in nft syntax.
pub struct CommandDisplay<'a> {
    /// Family of the table.
    pub family: IpFamily,
    /// The command.
    pub command: &'a Command,
}

impl fmt::Display for CommandDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = family_word(self.family);
        let t = format!("{fam} {TABLE}");
        match self.command {
            Command::AddTable => {
                write!(f, "add table {t} {{ comment \"rules for kube-proxy\" ; }}")
            }
            Command::DeleteTable => write!(f, "delete table {t}"),
            Command::AddChain(c) => {
                write!(f, "add chain {t} {}", c.name)?;
                if let Some(b) = c.base {
                    let kind = match b.kind {
                        ChainType::Filter => "filter",
                        ChainType::Nat => "nat",
                    };
                    write!(
                        f,
                        " {{ type {kind} hook {} priority {} ; }}",
                        b.hook.word(),
                        b.priority
                    )?;
                }
                Ok(())
            }
            Command::FlushChain(c) => write!(f, "flush chain {t} {c}"),
            Command::DeleteChain(c) => write!(f, "delete chain {t} {c}"),
            Command::AddRule { chain, rule } => {
                write!(
                    f,
                    "add rule {t} {chain} {}",
                    RuleDisplay {
                        family: self.family,
                        rule
                    }
                )
            }
            Command::AddSet(s) => {
                let what = if s.is_map() { "map" } else { "set" };
                write!(f, "add {what} {t} {} {{ ", s.name)?;
                if let KeyType::LoadBalance(p) = s.key {
                    // `P dport`, not `th dport`: nft 1.0.6 re-reads a map's
                    // `typeof` from the kernel in later runs and rejects
                    // `ip daddr . th dport` there ("conflicting protocols
                    // specified: ip vs. th"); hence one map per protocol.
                    let p = p.lower();
                    write!(
                        f,
                        "typeof {fam} daddr . {p} dport . numgen random mod 1 : {fam} daddr . {p} dport"
                    )?;
                } else {
                    write!(f, "type {}", key_type_text(self.family, s.key))?;
                }
                if s.verdict_map {
                    f.write_str(" : verdict")?;
                }
                f.write_str(" ;")?;
                if s.key == KeyType::Net {
                    f.write_str(" flags interval ;")?;
                }
                if let Some(timeout) = s.timeout {
                    write!(f, " flags dynamic,timeout ; timeout {timeout}s ;")?;
                }
                if let Some(c) = &s.comment {
                    write!(f, " comment {} ;", CommentText(c))?;
                }
                f.write_str(" }")
            }
            Command::FlushSet { name, map } => {
                write!(f, "flush {} {t} {name}", if *map { "map" } else { "set" })
            }
            Command::DeleteSet(s) => write!(f, "delete set {t} {s}"),
            Command::AddElement(e) => {
                write!(f, "add element {t} {} {{ {} }}", e.set, ElementDisplay(e))
            }
            Command::DeleteElement(e) => write!(
                f,
                "delete element {t} {} {{ {} }}",
                e.set,
                KeyDisplay(&e.key)
            ),
        }
    }
}

fn key_type_text(family: IpFamily, key: KeyType) -> String {
    let a = addr_type(family);
    match key {
        KeyType::Addr | KeyType::Net => a.to_string(),
        KeyType::AddrPair => format!("{a} . {a}"),
        KeyType::AddrProtoPort => format!("{a} . inet_proto . inet_service"),
        KeyType::ProtoPort => "inet_proto . inet_service".to_string(),
        KeyType::LoadBalance(_) => format!("{a} . inet_service . integer"),
    }
}

/// Prints an element key.
pub struct KeyDisplay<'a>(pub &'a ElemKey);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ElemKey::Addr(a) => write!(f, "{a}"),
            ElemKey::AddrPair(a, b) => write!(f, "{a} . {b}"),
            ElemKey::AddrProtoPort(a, p, n) => write!(f, "{a} . {} . {n}", p.lower()),
            ElemKey::ProtoPort(p, n) => write!(f, "{} . {n}", p.lower()),
            ElemKey::LoadBalance(a, n, i) => write!(f, "{a} . {n} . {i}"),
            ElemKey::Net(n) => write!(f, "{n}"),
        }
    }
}

/// Prints an element (`key [comment "…"] [: verdict]`).
pub struct ElementDisplay<'a>(pub &'a Element);

impl fmt::Display for ElementDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", KeyDisplay(&self.0.key))?;
        if let Some(c) = &self.0.comment {
            write!(f, " comment {}", CommentText(c))?;
        }
        match &self.0.value {
            Some(ElemValue::Verdict(v)) => write!(f, " : {}", VerdictDisplay(v))?,
            Some(ElemValue::Endpoint(to)) => write!(f, " : {} . {}", to.ip(), to.port())?,
            None => {}
        }
        Ok(())
    }
}

/// Prints a verdict.
pub struct VerdictDisplay<'a>(pub &'a Verdict);

impl fmt::Display for VerdictDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Drop => f.write_str("drop"),
        }
    }
}

/// Prints a rule's statements.
pub struct RuleDisplay<'a> {
    /// Family (for `ip`/`ip6`).
    pub family: IpFamily,
    /// The rule.
    pub rule: &'a Rule,
}

impl fmt::Display for RuleDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = family_word(self.family);
        let mut first = true;
        for s in &self.rule.stmts {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            match s {
                Stmt::CtStateNew => f.write_str("ct state new"),
                Stmt::CtStatusDnat => f.write_str("ct status dnat"),
                Stmt::DaddrInSet(n) => write!(f, "{ip} daddr @{n}"),
                Stmt::SaddrInSet(n) => write!(f, "{ip} saddr @{n}"),
                Stmt::SaddrDaddrInSet(n) => write!(f, "{ip} saddr . {ip} daddr @{n}"),
                Stmt::DaddrIs(a) => write!(f, "{ip} daddr {a}"),
                Stmt::SaddrIs(a) => write!(f, "{ip} saddr {a}"),
                Stmt::SaddrInNet { net, negate } => {
                    write!(f, "{ip} saddr {}{net}", if *negate { "!= " } else { "" })
                }
                Stmt::DaddrNotInNet(net) => write!(f, "{ip} daddr != {net}"),
                Stmt::Iifname { name, negate } => {
                    write!(f, "iifname {}\"{name}\"", if *negate { "!= " } else { "" })
                }
                Stmt::FibSaddrLocal => f.write_str("fib saddr type local"),
                Stmt::FibDaddrLocal => f.write_str("fib daddr type local"),
                Stmt::L4proto(p) => write!(f, "meta l4proto {}", p.lower()),
                Stmt::Dport(p, n) => write!(f, "{} dport {n}", p.lower()),
                Stmt::MarkUnset(m) => write!(f, "mark and {m:#x} == 0"),
                Stmt::Numgen { modulus, value } => write!(f, "numgen random mod {modulus} {value}"),
                Stmt::MarkOr(m) => write!(f, "mark set mark or {m:#x}"),
                Stmt::MarkXor(m) => write!(f, "mark set mark xor {m:#x}"),
                Stmt::UpdateSaddr(n) => write!(f, "update @{n} {{ {ip} saddr }}"),
                Stmt::Vmap { key, map } => match key {
                    VmapKey::DaddrProtoPort => {
                        write!(f, "{ip} daddr . meta l4proto . th dport vmap @{map}")
                    }
                    VmapKey::ProtoPort => write!(f, "meta l4proto . th dport vmap @{map}"),
                },
                Stmt::Dnat(to) => write!(f, "dnat to {to}"),
                Stmt::DnatLoadBalance {
                    proto,
                    map,
                    modulus,
                } => write!(
                    f,
                    "dnat {ip} to {ip} daddr . {} dport . numgen random mod {modulus} map @{map}",
                    proto.lower()
                ),
                Stmt::Masquerade => f.write_str("masquerade fully-random"),
                Stmt::Reject => f.write_str("reject"),
                Stmt::Verdict(v) => write!(f, "{}", VerdictDisplay(v)),
            }?;
        }
        if let Some(c) = &self.rule.comment {
            write!(f, " comment {}", CommentText(c))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(command: Command) -> String {
        let mut t = Transaction::new(IpFamily::V4);
        t.push(command);
        t.to_script()
    }

    /// The text between `comment "` and the next `"`, and what follows it.
    fn comment_of(line: &str) -> (&str, &str) {
        let rest = line.split_once("comment \"").unwrap().1;
        rest.split_once('"').unwrap()
    }

    #[test]
    fn comments_are_printed_safe_and_within_nfts_limit() {
        let hostile = format!(
            "ns/we\"b\nadd rule ip kube-proxy x drop ; {}",
            "é".repeat(100)
        );
        let element = Element {
            set: "no-endpoint-services".into(),
            key: ElemKey::AddrProtoPort("10.96.0.1".parse().unwrap(), Protocol::Tcp, 80),
            value: Some(ElemValue::Verdict(Verdict::Drop)),
            comment: Some(hostile.clone()),
        };
        let rule = Rule::new(vec![Stmt::Verdict(Verdict::Drop)]).comment(&hostile);
        for text in [
            script(Command::AddElement(element)),
            script(Command::AddRule {
                chain: "c".into(),
                rule,
            }),
        ] {
            assert_eq!(text.lines().count(), 1, "one line: {text}");
            let (comment, after) = comment_of(&text);
            assert!(comment.len() <= COMMENT_MAX, "{} bytes", comment.len());
            assert!(comment.starts_with("ns/we_b_add rule ip kube-proxy x drop _ "));
            assert!(!after.contains('"'), "{text}");
        }
    }

    #[test]
    fn valid_comments_are_printed_as_they_are() {
        let rule = Rule::new(vec![Stmt::Verdict(Verdict::Drop)]).comment("ns/web:http");
        let text = script(Command::AddRule {
            chain: "c".into(),
            rule,
        });
        assert_eq!(
            text,
            "add rule ip kube-proxy c drop comment \"ns/web:http\"\n"
        );
    }
}
