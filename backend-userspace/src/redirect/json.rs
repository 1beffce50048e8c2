//! Transactions on our table as the `nftables` crate's JSON schema, applied
//! with `nft -j -f -`.
//!
//! ```text
//! table ip kube-proxy-userspace {
//!   map redirects { type ipv4_addr . inet_proto . inet_service : inet_service }
//!   set rejects   { type ipv4_addr . inet_proto . inet_service }
//!   chain nat-prerouting { type nat hook prerouting priority dstnat (-100)
//!     meta l4proto { tcp, udp } redirect to :ip daddr . meta l4proto . th dport map @redirects }
//!   chain nat-output     { type nat hook output priority -100; the same rule }
//!   chain filter-{input,forward,output} { type filter hook … priority 0
//!     ip daddr . meta l4proto . th dport @rejects reject }
//! }
//! ```
//!
//! A sync writes only elements; a full sync re-creates the whole table in
//! one transaction (`add table` + `flush table` + definitions + elements).

use std::borrow::Cow;
use std::net::IpAddr;

use nftables::batch::Batch;
use nftables::expr::{
    Expression, Map as MapLookup, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem,
};
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, Nftables, Rule, Set, SetType,
    SetTypeValue, Table,
};
use nftables::stmt::{Match, NAT, Operator, Reject, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use proxy_core::IpFamily;

use super::table::{Action, Elements, REDIRECTS, REJECTS, TABLE, Vip, family_word};

/// `dstnat`: before routing decides where the packet goes.
const DSTNAT: i32 = -100;
/// `filter`.
const FILTER: i32 = 0;

/// The base chains: name, type, hook, priority.
const CHAINS: [(&str, NfChainType, NfHook, i32); 5] = [
    (
        "nat-prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        DSTNAT,
    ),
    ("nat-output", NfChainType::NAT, NfHook::Output, DSTNAT),
    ("filter-input", NfChainType::Filter, NfHook::Input, FILTER),
    (
        "filter-forward",
        NfChainType::Filter,
        NfHook::Forward,
        FILTER,
    ),
    ("filter-output", NfChainType::Filter, NfHook::Output, FILTER),
];

fn nf_family(family: IpFamily) -> NfFamily {
    match family {
        IpFamily::V4 => NfFamily::IP,
        IpFamily::V6 => NfFamily::IP6,
    }
}

fn table(family: IpFamily) -> Table<'static> {
    Table {
        family: nf_family(family),
        name: Cow::Borrowed(TABLE),
        ..Table::default()
    }
}

fn key_type(family: IpFamily) -> SetTypeValue<'static> {
    let address = match family {
        IpFamily::V4 => SetType::Ipv4Addr,
        IpFamily::V6 => SetType::Ipv6Addr,
    };
    SetTypeValue::Concatenated(Cow::Owned(vec![
        address,
        SetType::InetProto,
        SetType::InetService,
    ]))
}

fn redirects_map(family: IpFamily) -> Map<'static> {
    Map {
        family: nf_family(family),
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(REDIRECTS),
        set_type: key_type(family),
        map: SetTypeValue::Single(SetType::InetService),
        ..Map::default()
    }
}

fn rejects_set(family: IpFamily) -> Set<'static> {
    Set {
        family: nf_family(family),
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(REJECTS),
        set_type: key_type(family),
        ..Set::default()
    }
}

/// `ip daddr . meta l4proto . th dport`.
fn packet_key(family: IpFamily) -> Expression<'static> {
    let field = |protocol: &'static str, field: &'static str| {
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: Cow::Borrowed(protocol),
                field: Cow::Borrowed(field),
            },
        )))
    };
    Expression::Named(NamedExpression::Concat(vec![
        field(family_word(family), "daddr"),
        Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::L4proto,
        })),
        field("th", "dport"),
    ]))
}

/// The element key of `vip`: `10.96.0.10 . tcp . 80`.
fn element_key(vip: &Vip) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        Expression::String(Cow::Owned(ip_text(vip.ip))),
        Expression::String(Cow::Borrowed(vip.protocol.lower())),
        Expression::Number(u32::from(vip.port)),
    ]))
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

fn rules(family: IpFamily) -> Vec<Rule<'static>> {
    let rule = |chain: &'static str, expr: Vec<Statement<'static>>| Rule {
        family: nf_family(family),
        table: Cow::Borrowed(TABLE),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        ..Rule::default()
    };
    // `meta l4proto { tcp, udp }`: nft needs a transport protocol match
    // before `th dport` may be used as a NAT port.
    let transport = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::L4proto,
        })),
        right: Expression::Named(NamedExpression::Set(vec![
            SetItem::Element(Expression::String(Cow::Borrowed("tcp"))),
            SetItem::Element(Expression::String(Cow::Borrowed("udp"))),
        ])),
        op: Operator::EQ,
    });
    let redirect = Statement::Redirect(Some(NAT {
        addr: None,
        family: None,
        port: Some(Expression::Named(NamedExpression::Map(Box::new(
            MapLookup {
                key: packet_key(family),
                data: Expression::String(Cow::Owned(format!("@{REDIRECTS}"))),
            },
        )))),
        flags: None,
    }));
    let reject = vec![
        Statement::Match(Match {
            left: packet_key(family),
            right: Expression::String(Cow::Owned(format!("@{REJECTS}"))),
            op: Operator::EQ,
        }),
        Statement::Reject(Some(Reject::new(None, None))),
    ];
    let mut out = vec![
        rule("nat-prerouting", vec![transport.clone(), redirect.clone()]),
        rule("nat-output", vec![transport, redirect]),
    ];
    for chain in ["filter-input", "filter-forward", "filter-output"] {
        out.push(rule(chain, reject.clone()));
    }
    out
}

fn redirect_elements(family: IpFamily, entries: &[(Vip, Action)]) -> Option<Element<'static>> {
    let elem: Vec<Expression<'static>> = entries
        .iter()
        .filter_map(|(vip, action)| match action {
            Action::Redirect(port) => Some(Expression::List(vec![
                element_key(vip),
                Expression::Number(u32::from(*port)),
            ])),
            Action::Reject => None,
        })
        .collect();
    // nft refuses an empty element list ("Invalid set").
    (!elem.is_empty()).then(|| Element {
        family: nf_family(family),
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(REDIRECTS),
        elem: Cow::Owned(elem),
    })
}

fn reject_elements(family: IpFamily, entries: &[(Vip, Action)]) -> Option<Element<'static>> {
    let elem: Vec<Expression<'static>> = entries
        .iter()
        .filter(|(_, action)| *action == Action::Reject)
        .map(|(vip, _)| element_key(vip))
        .collect();
    (!elem.is_empty()).then(|| Element {
        family: nf_family(family),
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(REJECTS),
        elem: Cow::Owned(elem),
    })
}

/// The whole table with `elements`, replacing whatever our table held.
pub fn full(family: IpFamily, elements: &Elements) -> Nftables<'static> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(family)));
    batch.add_cmd(NfCmd::Flush(FlushObject::Table(table(family))));
    batch.add(NfListObject::Map(Box::new(redirects_map(family))));
    batch.add(NfListObject::Set(Box::new(rejects_set(family))));
    for (name, kind, hook, prio) in CHAINS {
        batch.add(NfListObject::Chain(Chain {
            family: nf_family(family),
            table: Cow::Borrowed(TABLE),
            name: Cow::Borrowed(name),
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }
    for rule in rules(family) {
        batch.add(NfListObject::Rule(rule));
    }
    let entries: Vec<(Vip, Action)> = elements.iter().map(|(v, a)| (*v, *a)).collect();
    add_elements(&mut batch, family, &entries);
    batch.to_nftables()
}

/// Element changes only: `deleted` first, then `added`; `None` when there
/// is nothing to write.
pub fn update(
    family: IpFamily,
    deleted: &[(Vip, Action)],
    added: &[(Vip, Action)],
) -> Option<Nftables<'static>> {
    if deleted.is_empty() && added.is_empty() {
        return None;
    }
    let mut batch = Batch::new();
    if let Some(element) = redirect_elements(family, deleted) {
        batch.delete(NfListObject::Element(element));
    }
    if let Some(element) = reject_elements(family, deleted) {
        batch.delete(NfListObject::Element(element));
    }
    add_elements(&mut batch, family, added);
    Some(batch.to_nftables())
}

fn add_elements(batch: &mut Batch<'static>, family: IpFamily, entries: &[(Vip, Action)]) {
    if let Some(element) = redirect_elements(family, entries) {
        batch.add(NfListObject::Element(element));
    }
    if let Some(element) = reject_elements(family, entries) {
        batch.add(NfListObject::Element(element));
    }
}

/// Deletes our table if it exists (`add` then `delete` in one transaction:
/// nft 1.0.6 has no `destroy`).
pub fn delete(family: IpFamily) -> Nftables<'static> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(family)));
    batch.delete(NfListObject::Table(table(family)));
    batch.to_nftables()
}
