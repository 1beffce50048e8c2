//! [`Transaction`] → the `nft -j -f -` document, built from the `nftables`
//! crate's typed schema. The crate has no verdict-map type
//! (nftables-rs#237), so `: verdict` maps are spliced in as raw JSON.

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{
    self, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Numgen,
};
use nftables::schema::{self, FlushObject, NfCmd, NfListObject, SetFlag, SetTypeValue};
use nftables::stmt::{self, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};
use proxy_core::IpFamily;
use serde_json::{Value, json};

use crate::error::NftError;
use crate::ir::{
    ChainType, Command, ElemKey, Element, Hook, KeyType, Rule, SetDef, Stmt, TABLE, Transaction,
    Verdict, VmapKey, addr_type, family_word,
};

/// Renders `tx` as the JSON document `nft -j -f -` reads.
pub fn to_json(tx: &Transaction) -> Result<String, NftError> {
    let r = Renderer { family: tx.family };
    let mut objects = Vec::with_capacity(tx.commands.len());
    for c in &tx.commands {
        objects.push(r.command(c)?);
    }
    Ok(serde_json::to_string(&json!({ "nftables": objects }))?)
}

struct Renderer {
    family: IpFamily,
}

fn s(text: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(text.to_string()))
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(expr::Payload::PayloadField(
        expr::PayloadField {
            protocol: Cow::Owned(protocol.to_string()),
            field: Cow::Owned(field.to_string()),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(stmt::Match { left, right, op })
}

fn prefix(net: &ipnet::IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(expr::Prefix {
        addr: Box::new(s(&net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

fn fib(flag: FibFlag) -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([flag]),
    }))
}

fn mark_op(
    op: fn(Expression<'static>, Expression<'static>) -> expr::BinaryOperation<'static>,
    m: u32,
) -> Statement<'static> {
    Statement::Mangle(stmt::Mangle {
        key: meta(MetaKey::Mark),
        value: Expression::BinaryOperation(Box::new(op(
            meta(MetaKey::Mark),
            Expression::Number(m),
        ))),
    })
}

fn verdict_stmt(v: &Verdict) -> Statement<'static> {
    match v {
        Verdict::Jump(c) => Statement::Jump(stmt::JumpTarget {
            target: Cow::Owned(c.clone()),
        }),
        Verdict::Goto(c) => Statement::Goto(stmt::JumpTarget {
            target: Cow::Owned(c.clone()),
        }),
        Verdict::Return => Statement::Return(None),
        Verdict::Drop => Statement::Drop(None),
    }
}

fn verdict_value(v: &Verdict) -> Value {
    match v {
        Verdict::Jump(c) => json!({ "jump": { "target": c } }),
        Verdict::Goto(c) => json!({ "goto": { "target": c } }),
        Verdict::Return => json!({ "return": null }),
        Verdict::Drop => json!({ "drop": null }),
    }
}

impl Renderer {
    fn nf_family(&self) -> NfFamily {
        match self.family {
            IpFamily::V4 => NfFamily::IP,
            IpFamily::V6 => NfFamily::IP6,
        }
    }

    fn ip(&self) -> &'static str {
        family_word(self.family)
    }

    fn table(&self) -> schema::Table<'static> {
        schema::Table {
            family: self.nf_family(),
            name: Cow::Borrowed(TABLE),
            handle: None,
        }
    }

    fn chain(&self, name: &str) -> schema::Chain<'static> {
        schema::Chain {
            family: self.nf_family(),
            table: Cow::Borrowed(TABLE),
            name: Cow::Owned(name.to_string()),
            ..Default::default()
        }
    }

    fn typed(&self, cmd: NfCmd<'_>) -> Result<Value, NftError> {
        Ok(serde_json::to_value(cmd)?)
    }

    fn command(&self, c: &Command) -> Result<Value, NftError> {
        match c {
            Command::AddTable => self.typed(NfCmd::Add(NfListObject::Table(self.table()))),
            Command::DeleteTable => self.typed(NfCmd::Delete(NfListObject::Table(self.table()))),
            Command::AddChain(def) => {
                let mut chain = self.chain(&def.name);
                if let Some(b) = def.base {
                    chain._type = Some(match b.kind {
                        ChainType::Filter => NfChainType::Filter,
                        ChainType::Nat => NfChainType::NAT,
                    });
                    chain.hook = Some(match b.hook {
                        Hook::Prerouting => NfHook::Prerouting,
                        Hook::Input => NfHook::Input,
                        Hook::Forward => NfHook::Forward,
                        Hook::Output => NfHook::Output,
                        Hook::Postrouting => NfHook::Postrouting,
                    });
                    chain.prio = Some(b.priority);
                }
                self.typed(NfCmd::Add(NfListObject::Chain(chain)))
            }
            Command::FlushChain(name) => {
                self.typed(NfCmd::Flush(FlushObject::Chain(self.chain(name))))
            }
            Command::DeleteChain(name) => {
                self.typed(NfCmd::Delete(NfListObject::Chain(self.chain(name))))
            }
            Command::AddRule { chain, rule } => {
                self.typed(NfCmd::Add(NfListObject::Rule(self.rule(chain, rule))))
            }
            Command::AddSet(def) => self.set_def(def),
            Command::FlushSet { name, map } => {
                let what = if *map { "map" } else { "set" };
                Ok(json!({ "flush": { what: self.set_ref(name) } }))
            }
            Command::DeleteSet(name) => Ok(json!({ "delete": { "set": self.set_ref(name) } })),
            Command::AddElement(e) => Ok(json!({ "add": { "element": self.element(e, true) } })),
            Command::DeleteElement(e) => {
                Ok(json!({ "delete": { "element": self.element(e, false) } }))
            }
        }
    }

    fn set_ref(&self, name: &str) -> Value {
        json!({ "family": self.ip(), "table": TABLE, "name": name })
    }

    fn key_types(&self, key: KeyType) -> Value {
        let a = addr_type(self.family);
        match key {
            KeyType::Addr => json!(a),
            KeyType::AddrPair => json!([a, a]),
            KeyType::AddrProtoPort => json!([a, "inet_proto", "inet_service"]),
            KeyType::ProtoPort => json!(["inet_proto", "inet_service"]),
        }
    }

    /// Sets go through the typed schema; verdict maps cannot (no
    /// `SetType::Verdict`), so they are written as raw JSON.
    fn set_def(&self, def: &SetDef) -> Result<Value, NftError> {
        if def.verdict_map {
            let mut map = json!({
                "family": self.ip(), "table": TABLE, "name": def.name,
                "type": self.key_types(def.key), "map": "verdict",
            });
            if let (Some(c), Some(obj)) = (&def.comment, map.as_object_mut()) {
                obj.insert("comment".into(), json!(c));
            }
            return Ok(json!({ "add": { "map": map } }));
        }
        let single = match self.family {
            IpFamily::V4 => schema::SetType::Ipv4Addr,
            IpFamily::V6 => schema::SetType::Ipv6Addr,
        };
        let set_type = match def.key {
            KeyType::Addr => SetTypeValue::Single(single),
            KeyType::AddrPair => SetTypeValue::Concatenated(Cow::Owned(vec![single, single])),
            KeyType::AddrProtoPort => SetTypeValue::Concatenated(Cow::Owned(vec![
                single,
                schema::SetType::InetProto,
                schema::SetType::InetService,
            ])),
            KeyType::ProtoPort => SetTypeValue::Concatenated(Cow::Owned(vec![
                schema::SetType::InetProto,
                schema::SetType::InetService,
            ])),
        };
        let set = schema::Set {
            family: self.nf_family(),
            table: Cow::Borrowed(TABLE),
            name: Cow::Owned(def.name.clone()),
            set_type,
            // nft 1.0.6's JSON parser rejects the `dynamic` flag ("Invalid set
            // flag"); `timeout` alone is accepted and the kernel marks the set
            // dynamic itself once a rule updates it.
            flags: def.timeout.map(|_| HashSet::from([SetFlag::Timeout])),
            timeout: def.timeout,
            comment: def.comment.clone().map(Cow::Owned),
            ..Default::default()
        };
        Ok(serde_json::to_value(NfCmd::Add(NfListObject::Set(
            Box::new(set),
        )))?)
    }

    fn key_value(&self, key: &ElemKey) -> Value {
        match key {
            ElemKey::Addr(a) => json!(a.to_string()),
            ElemKey::AddrPair(a, b) => json!({ "concat": [a.to_string(), b.to_string()] }),
            ElemKey::AddrProtoPort(a, p, n) => json!({ "concat": [a.to_string(), p.lower(), n] }),
            ElemKey::ProtoPort(p, n) => json!({ "concat": [p.lower(), n] }),
        }
    }

    fn element(&self, e: &Element, with_value: bool) -> Value {
        let mut key = self.key_value(&e.key);
        if with_value && let Some(c) = &e.comment {
            key = json!({ "elem": { "val": key, "comment": c } });
        }
        let item = match (&e.value, with_value) {
            (Some(v), true) => json!([key, verdict_value(v)]),
            _ => key,
        };
        json!({ "family": self.ip(), "table": TABLE, "name": e.set, "elem": [item] })
    }

    fn rule(&self, chain: &str, rule: &Rule) -> schema::Rule<'static> {
        let stmts: Vec<Statement<'static>> = rule.stmts.iter().map(|st| self.stmt(st)).collect();
        schema::Rule {
            family: self.nf_family(),
            table: Cow::Borrowed(TABLE),
            chain: Cow::Owned(chain.to_string()),
            expr: Cow::Owned(stmts),
            handle: None,
            index: None,
            comment: rule.comment.clone().map(Cow::Owned),
        }
    }

    fn stmt(&self, st: &Stmt) -> Statement<'static> {
        let ip = self.ip();
        let set_ref = |n: &str| s(&format!("@{n}"));
        match st {
            Stmt::CtStateNew => matches(
                Expression::Named(NamedExpression::CT(expr::CT {
                    key: Cow::Borrowed("state"),
                    family: None,
                    dir: None,
                })),
                Operator::IN,
                s("new"),
            ),
            Stmt::CtStatusDnat => matches(
                Expression::Named(NamedExpression::CT(expr::CT {
                    key: Cow::Borrowed("status"),
                    family: None,
                    dir: None,
                })),
                Operator::IN,
                s("dnat"),
            ),
            Stmt::DaddrInSet(n) => matches(payload(ip, "daddr"), Operator::EQ, set_ref(n)),
            Stmt::SaddrInSet(n) => matches(payload(ip, "saddr"), Operator::EQ, set_ref(n)),
            Stmt::SaddrDaddrInSet(n) => matches(
                Expression::Named(NamedExpression::Concat(vec![
                    payload(ip, "saddr"),
                    payload(ip, "daddr"),
                ])),
                Operator::EQ,
                set_ref(n),
            ),
            Stmt::DaddrIs(a) => matches(payload(ip, "daddr"), Operator::EQ, s(&a.to_string())),
            Stmt::SaddrIs(a) => matches(payload(ip, "saddr"), Operator::EQ, s(&a.to_string())),
            Stmt::SaddrInNet { net, negate } => matches(
                payload(ip, "saddr"),
                if *negate { Operator::NEQ } else { Operator::EQ },
                prefix(net),
            ),
            Stmt::DaddrNotInNet(net) => matches(payload(ip, "daddr"), Operator::NEQ, prefix(net)),
            Stmt::Iifname { name, negate } => matches(
                meta(MetaKey::Iifname),
                if *negate { Operator::NEQ } else { Operator::EQ },
                s(name),
            ),
            Stmt::FibSaddrLocal => matches(fib(FibFlag::Saddr), Operator::EQ, s("local")),
            Stmt::FibDaddrLocal => matches(fib(FibFlag::Daddr), Operator::EQ, s("local")),
            Stmt::L4proto(p) => matches(meta(MetaKey::L4proto), Operator::EQ, s(p.lower())),
            Stmt::Dport(p, n) => matches(
                payload(p.lower(), "dport"),
                Operator::EQ,
                Expression::Number(u32::from(*n)),
            ),
            Stmt::MarkUnset(m) => matches(
                Expression::BinaryOperation(Box::new(expr::BinaryOperation::AND(
                    meta(MetaKey::Mark),
                    Expression::Number(*m),
                ))),
                Operator::EQ,
                Expression::Number(0),
            ),
            Stmt::Numgen { modulus, value } => matches(
                Expression::Named(NamedExpression::Numgen(Numgen {
                    mode: expr::NgMode::Random,
                    ng_mod: *modulus,
                    offset: None,
                })),
                Operator::EQ,
                Expression::Number(*value),
            ),
            Stmt::MarkOr(m) => mark_op(|a, b| expr::BinaryOperation::OR(vec![a, b]), *m),
            Stmt::MarkXor(m) => mark_op(expr::BinaryOperation::XOR, *m),
            Stmt::UpdateSaddr(n) => Statement::Set(stmt::Set {
                op: stmt::SetOp::Update,
                elem: payload(ip, "saddr"),
                set: Cow::Owned(format!("@{n}")),
            }),
            Stmt::Vmap { key, map } => {
                let proto_port = vec![meta(MetaKey::L4proto), payload("th", "dport")];
                let key = match key {
                    VmapKey::DaddrProtoPort => {
                        let mut k = vec![payload(ip, "daddr")];
                        k.extend(proto_port);
                        k
                    }
                    VmapKey::ProtoPort => proto_port,
                };
                Statement::VerdictMap(stmt::VerdictMap {
                    key: Expression::Named(NamedExpression::Concat(key)),
                    data: set_ref(map),
                })
            }
            Stmt::Dnat(to) => Statement::DNAT(Some(stmt::NAT {
                addr: Some(s(&to.ip().to_string())),
                family: None,
                port: Some(Expression::Number(u32::from(to.port()))),
                flags: None,
            })),
            Stmt::Masquerade => Statement::Masquerade(Some(stmt::NAT {
                addr: None,
                family: None,
                port: None,
                flags: Some(HashSet::from([stmt::NATFlag::FullyRandom])),
            })),
            Stmt::Reject => Statement::Reject(None),
            Stmt::Verdict(v) => verdict_stmt(v),
        }
    }
}
