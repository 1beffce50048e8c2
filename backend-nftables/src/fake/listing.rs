//! Reads our table back from the kernel's JSON listing (`nft -j list
//! table ip kube-proxy`, or `nft -j list ruleset`) into a [`FakeTable`], so
//! the [`Tracer`](super::Tracer) can walk the live rules and a dump of them
//! can be compared with what the backend would write.
//!
//! Only what this backend writes is understood; anything else in our table
//! (a rule added by hand) is an error naming it, never skipped silently.
//! Elements that the kernel adds itself (affinity entries in timeout sets)
//! are left out: the tracer treats affinity as "may match" anyway.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::{IpFamily, Protocol};
use serde_json::Value;

use super::{FakeNft, FakeTable};
use crate::ir::{
    BaseChain, ChainDef, ChainType, Command, ElemKey, ElemValue, Element, Hook, KeyType, Rule,
    SetDef, Stmt, TABLE, Transaction, Verdict, VmapKey, family_word,
};

/// Why a listing could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the nftables listing: {0}")]
pub struct ListingError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, ListingError> {
    Err(ListingError(what.into()))
}

/// Our table of `family` from an `nft -j list …` output; `None` when the
/// listing does not hold it.
pub fn table_from_json(json: &str, family: IpFamily) -> Result<Option<FakeTable>, ListingError> {
    let doc: Value =
        serde_json::from_str(json).map_err(|e| ListingError(format!("not JSON: {e}")))?;
    let Some(objects) = doc.get("nftables").and_then(Value::as_array) else {
        return err("no \"nftables\" array");
    };
    let fam = family_word(family);
    let ours = |o: &Value| {
        o.get("family").and_then(Value::as_str) == Some(fam)
            && (o.get("table").and_then(Value::as_str) == Some(TABLE)
                || o.get("name").and_then(Value::as_str) == Some(TABLE))
    };
    let mut found = false;
    let (mut sets, mut chains, mut rules, mut elements) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for object in objects {
        if let Some(t) = object.get("table") {
            found |= ours(t);
        } else if let Some(s) = object.get("set").or_else(|| object.get("map")) {
            if ours(s) {
                let def = set_def(s)?;
                for e in s
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if def.timeout.is_none() {
                        elements.push(element(&def, e)?);
                    }
                }
                sets.push(def);
            }
        } else if let Some(c) = object.get("chain") {
            if ours(c) {
                chains.push(chain_def(c)?);
            }
        } else if let Some(r) = object.get("rule")
            && ours(r)
        {
            let chain = str_field(r, "chain")?;
            let rule = rule(r, family)
                .map_err(|e| ListingError(format!("chain {chain}: {} (rule {r})", e.0)))?;
            rules.push(Command::AddRule {
                chain: chain.to_string(),
                rule,
            });
        }
    }
    if !found {
        return Ok(None);
    }
    let mut tx = Transaction::new(family);
    tx.push(Command::AddTable);
    tx.commands.extend(sets.into_iter().map(Command::AddSet));
    tx.commands
        .extend(chains.into_iter().map(Command::AddChain));
    tx.commands.extend(rules);
    tx.commands
        .extend(elements.into_iter().map(Command::AddElement));
    let mut fake = FakeNft::default();
    fake.apply(&tx)
        .map_err(|e| ListingError(format!("the listing is inconsistent: {e}")))?;
    Ok(fake.table(family).cloned())
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, ListingError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ListingError(format!("no \"{name}\" in {v}")))
}

fn chain_def(c: &Value) -> Result<ChainDef, ListingError> {
    let name = str_field(c, "name")?.to_string();
    let Some(hook) = c.get("hook").and_then(Value::as_str) else {
        return Ok(ChainDef::regular(name));
    };
    let hook = match hook {
        "prerouting" => Hook::Prerouting,
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        "output" => Hook::Output,
        "postrouting" => Hook::Postrouting,
        other => {
            return err(format!(
                "chain {name}: hook {other} is not one kube-proxy uses"
            ));
        }
    };
    let kind = match c.get("type").and_then(Value::as_str) {
        Some("filter") => ChainType::Filter,
        Some("nat") => ChainType::Nat,
        other => {
            return err(format!(
                "chain {name}: type {other:?} is not one kube-proxy uses"
            ));
        }
    };
    let priority = c
        .get("prio")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| ListingError(format!("chain {name}: no numeric priority")))?;
    Ok(ChainDef {
        name,
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
    })
}

fn protocol_word(word: &str) -> Option<Protocol> {
    match word {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn set_def(s: &Value) -> Result<SetDef, ListingError> {
    let name = str_field(s, "name")?.to_string();
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return err(format!("set {name}: no type")),
    };
    let flags: Vec<&str> = s
        .get("flags")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let data = s.get("map").and_then(Value::as_str);
    let is_addr = |t: &str| t == "ipv4_addr" || t == "ipv6_addr";
    let key = match (types.as_slice(), data) {
        ([a], _) if is_addr(a) && flags.contains(&"interval") => KeyType::Net,
        ([a], _) if is_addr(a) => KeyType::Addr,
        ([a, b], _) if is_addr(a) && is_addr(b) => KeyType::AddrPair,
        ([a, "inet_proto", "inet_service"], _) if is_addr(a) => KeyType::AddrProtoPort,
        (["inet_proto", "inet_service"], _) => KeyType::ProtoPort,
        ([a, "inet_service", "integer"], Some(_)) if is_addr(a) => {
            // The protocol is in the map's name (`load-balance-tcp-endpoints`).
            let proto = name
                .split('-')
                .find_map(protocol_word)
                .ok_or_else(|| ListingError(format!("map {name}: no protocol in its name")))?;
            KeyType::LoadBalance(proto)
        }
        _ => {
            return err(format!(
                "set {name}: type {types:?} is not one kube-proxy uses"
            ));
        }
    };
    Ok(SetDef {
        name,
        key,
        verdict_map: data == Some("verdict"),
        timeout: s
            .get("timeout")
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok()),
        comment: s.get("comment").and_then(Value::as_str).map(str::to_string),
    })
}

fn addr(v: &Value) -> Result<IpAddr, ListingError> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ListingError(format!("not an address: {v}")))
}

fn port(v: &Value) -> Result<u16, ListingError> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ListingError(format!("not a port: {v}")))
}

fn prefix(v: &Value) -> Result<IpNet, ListingError> {
    let p = v
        .get("prefix")
        .ok_or_else(|| ListingError(format!("not a prefix: {v}")))?;
    let a = addr(p.get("addr").unwrap_or(&Value::Null))?;
    let len = p
        .get("len")
        .and_then(Value::as_u64)
        .and_then(|l| u8::try_from(l).ok())
        .ok_or_else(|| ListingError(format!("bad prefix length: {v}")))?;
    IpNet::new(a, len).map_err(|e| ListingError(format!("bad prefix {v}: {e}")))
}

fn concat(v: &Value) -> Result<&Vec<Value>, ListingError> {
    v.get("concat")
        .and_then(Value::as_array)
        .ok_or_else(|| ListingError(format!("not a concatenation: {v}")))
}

fn protocol(v: &Value) -> Result<Protocol, ListingError> {
    v.as_str()
        .and_then(protocol_word)
        .ok_or_else(|| ListingError(format!("not a protocol: {v}")))
}

fn elem_key(key: KeyType, v: &Value) -> Result<ElemKey, ListingError> {
    Ok(match key {
        KeyType::Addr => ElemKey::Addr(addr(v)?),
        KeyType::Net if v.is_string() => ElemKey::Addr(addr(v)?),
        KeyType::Net => ElemKey::Net(prefix(v)?),
        KeyType::AddrPair => match concat(v)?.as_slice() {
            [a, b] => ElemKey::AddrPair(addr(a)?, addr(b)?),
            _ => return err(format!("not addr . addr: {v}")),
        },
        KeyType::AddrProtoPort => match concat(v)?.as_slice() {
            [a, p, n] => ElemKey::AddrProtoPort(addr(a)?, protocol(p)?, port(n)?),
            _ => return err(format!("not addr . proto . port: {v}")),
        },
        KeyType::ProtoPort => match concat(v)?.as_slice() {
            [p, n] => ElemKey::ProtoPort(protocol(p)?, port(n)?),
            _ => return err(format!("not proto . port: {v}")),
        },
        KeyType::LoadBalance(_) => match concat(v)?.as_slice() {
            [a, n, i] => ElemKey::LoadBalance(
                addr(a)?,
                port(n)?,
                i.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| ListingError(format!("not an index: {i}")))?,
            ),
            _ => return err(format!("not addr . port . index: {v}")),
        },
    })
}

fn verdict(v: &Value) -> Result<Option<Verdict>, ListingError> {
    let target = |k: &str| {
        v.get(k)
            .and_then(|j| j.get("target"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(if let Some(t) = target("jump") {
        Some(Verdict::Jump(t))
    } else if let Some(t) = target("goto") {
        Some(Verdict::Goto(t))
    } else if v.get("drop").is_some() {
        Some(Verdict::Drop)
    } else if v.get("return").is_some() {
        Some(Verdict::Return)
    } else {
        None
    })
}

fn element(def: &SetDef, e: &Value) -> Result<Element, ListingError> {
    let (key, value) = match e.as_array() {
        Some(pair) if pair.len() == 2 && def.is_map() => (&pair[0], Some(&pair[1])),
        _ => (e, None),
    };
    // `{"elem": {"val": K, "comment": C}}` wraps keys with a comment.
    let (key, comment) = match key.get("elem") {
        Some(inner) => (
            inner.get("val").unwrap_or(&Value::Null),
            inner
                .get("comment")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        None => (key, None),
    };
    let value = match value {
        None => None,
        Some(v) => Some(match verdict(v)? {
            Some(verdict) => ElemValue::Verdict(verdict),
            None => match concat(v)?.as_slice() {
                [a, n] => ElemValue::Endpoint(SocketAddr::new(addr(a)?, port(n)?)),
                _ => return err(format!("set {}: value {v} is not understood", def.name)),
            },
        }),
    };
    Ok(Element {
        set: def.name.clone(),
        key: elem_key(def.key, key)
            .map_err(|e| ListingError(format!("set {}: {}", def.name, e.0)))?,
        value,
        comment,
    })
}

/// `{"payload": {"protocol": P, "field": F}}` as `(P, F)`.
fn payload(v: &Value) -> Option<(&str, &str)> {
    let p = v.get("payload")?;
    Some((p.get("protocol")?.as_str()?, p.get("field")?.as_str()?))
}

fn meta(v: &Value) -> Option<&str> {
    v.get("meta")?.get("key")?.as_str()
}

fn set_name(v: &Value) -> Option<String> {
    v.as_str()
        .and_then(|s| s.strip_prefix('@'))
        .map(str::to_string)
}

fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn rule(r: &Value, family: IpFamily) -> Result<Rule, ListingError> {
    let exprs = r
        .get("expr")
        .and_then(Value::as_array)
        .ok_or_else(|| ListingError("no \"expr\"".into()))?;
    let ip = family_word(family);
    let mut stmts = Vec::new();
    for x in exprs {
        stmts.push(stmt(x, ip)?);
    }
    Ok(Rule {
        stmts,
        comment: r.get("comment").and_then(Value::as_str).map(str::to_string),
    })
}

fn stmt(x: &Value, ip: &str) -> Result<Stmt, ListingError> {
    let unknown = || ListingError(format!("statement {x} is not one kube-proxy writes"));
    if let Some(v) = verdict(x)? {
        return Ok(Stmt::Verdict(v));
    }
    if let Some(m) = x.get("match") {
        let op = m.get("op").and_then(Value::as_str).unwrap_or("");
        let left = m.get("left").unwrap_or(&Value::Null);
        let right = m.get("right").unwrap_or(&Value::Null);
        let negate = op == "!=";
        if !matches!(op, "==" | "!=" | "in") {
            return Err(unknown());
        }
        if let Some(ct) = left
            .get("ct")
            .and_then(|c| c.get("key"))
            .and_then(Value::as_str)
        {
            let has = |word: &str| {
                right.as_str() == Some(word)
                    || right
                        .as_array()
                        .is_some_and(|a| a.iter().any(|w| w.as_str() == Some(word)))
            };
            return match ct {
                "state" if has("new") => Ok(Stmt::CtStateNew),
                "status" if has("dnat") => Ok(Stmt::CtStatusDnat),
                _ => Err(unknown()),
            };
        }
        if let Some(f) = left.get("fib") {
            let flags = f.get("flags").and_then(Value::as_array);
            let on = |w: &str| flags.is_some_and(|a| a.iter().any(|x| x.as_str() == Some(w)));
            return match (right.as_str(), on("saddr"), on("daddr")) {
                (Some("local"), true, false) => Ok(Stmt::FibSaddrLocal),
                (Some("local"), false, true) => Ok(Stmt::FibDaddrLocal),
                _ => Err(unknown()),
            };
        }
        if let Some(ng) = left.get("numgen") {
            let modulus = ng.get("mod").and_then(u32_of).ok_or_else(unknown)?;
            let value = u32_of(right).ok_or_else(unknown)?;
            return Ok(Stmt::Numgen { modulus, value });
        }
        if let Some(key) = meta(left) {
            return match key {
                "l4proto" => Ok(Stmt::L4proto(protocol(right)?)),
                "iifname" => Ok(Stmt::Iifname {
                    name: right.as_str().ok_or_else(unknown)?.to_string(),
                    negate,
                }),
                _ => Err(unknown()),
            };
        }
        if let Some(and) = left.get("&").and_then(Value::as_array) {
            return match and.as_slice() {
                [m, mask] if meta(m) == Some("mark") && u32_of(right) == Some(0) => {
                    Ok(Stmt::MarkUnset(u32_of(mask).ok_or_else(unknown)?))
                }
                _ => Err(unknown()),
            };
        }
        if let Some(parts) = left.get("concat").and_then(Value::as_array) {
            let fields: Vec<_> = parts.iter().map(payload).collect();
            return match (fields.as_slice(), set_name(right)) {
                ([Some((p1, "saddr")), Some((p2, "daddr"))], Some(set))
                    if p1 == &ip && p2 == &ip =>
                {
                    Ok(Stmt::SaddrDaddrInSet(set))
                }
                _ => Err(unknown()),
            };
        }
        if let Some((proto, field)) = payload(left) {
            if proto == ip {
                return match (field, set_name(right), negate) {
                    ("daddr", Some(set), false) => Ok(Stmt::DaddrInSet(set)),
                    ("saddr", Some(set), false) => Ok(Stmt::SaddrInSet(set)),
                    ("daddr", None, false) => Ok(Stmt::DaddrIs(addr(right)?)),
                    ("saddr", None, false) if right.is_string() => Ok(Stmt::SaddrIs(addr(right)?)),
                    ("saddr", None, _) => Ok(Stmt::SaddrInNet {
                        net: match right.as_str() {
                            Some(_) => IpNet::from(addr(right)?),
                            None => prefix(right)?,
                        },
                        negate,
                    }),
                    ("daddr", None, true) => Ok(Stmt::DaddrNotInNet(match right.as_str() {
                        Some(_) => IpNet::from(addr(right)?),
                        None => prefix(right)?,
                    })),
                    _ => Err(unknown()),
                };
            }
            if field == "dport" && !negate {
                return Ok(Stmt::Dport(
                    protocol_word(proto).ok_or_else(unknown)?,
                    port(right)?,
                ));
            }
        }
        return Err(unknown());
    }
    if let Some(v) = x.get("vmap") {
        let map = v.get("data").and_then(set_name).ok_or_else(unknown)?;
        let parts = v
            .get("key")
            .and_then(|k| k.get("concat"))
            .and_then(Value::as_array)
            .ok_or_else(unknown)?;
        let key = match parts.as_slice() {
            [a, _, _] if payload(a) == Some((ip, "daddr")) => VmapKey::DaddrProtoPort,
            [l4, _] if meta(l4) == Some("l4proto") => VmapKey::ProtoPort,
            _ => return Err(unknown()),
        };
        return Ok(Stmt::Vmap { key, map });
    }
    if let Some(m) = x.get("mangle") {
        let is_mark = m.get("key").and_then(meta) == Some("mark");
        let value = m.get("value").unwrap_or(&Value::Null);
        let operand = |op: &str| {
            value
                .get(op)
                .and_then(Value::as_array)
                .and_then(|a| a.get(1))
                .and_then(u32_of)
        };
        return match (is_mark, operand("|"), operand("^")) {
            (true, Some(m), None) => Ok(Stmt::MarkOr(m)),
            (true, None, Some(m)) => Ok(Stmt::MarkXor(m)),
            _ => Err(unknown()),
        };
    }
    if let Some(s) = x.get("set") {
        let set = s.get("set").and_then(set_name).ok_or_else(unknown)?;
        let elem = s.get("elem").unwrap_or(&Value::Null);
        return match (s.get("op").and_then(Value::as_str), payload(elem)) {
            (Some("update"), Some((p, "saddr"))) if p == ip => Ok(Stmt::UpdateSaddr(set)),
            _ => Err(unknown()),
        };
    }
    if let Some(d) = x.get("dnat") {
        let to = d.get("addr").unwrap_or(&Value::Null);
        if let Some(m) = to.get("map") {
            let map = m.get("data").and_then(set_name).ok_or_else(unknown)?;
            let parts = m
                .get("key")
                .and_then(|k| k.get("concat"))
                .and_then(Value::as_array)
                .ok_or_else(unknown)?;
            return match parts.as_slice() {
                [a, p, n] if payload(a) == Some((ip, "daddr")) => {
                    let proto = payload(p)
                        .filter(|(_, f)| *f == "dport")
                        .and_then(|(p, _)| protocol_word(p))
                        .ok_or_else(unknown)?;
                    let modulus = n
                        .get("numgen")
                        .and_then(|g| g.get("mod"))
                        .and_then(u32_of)
                        .ok_or_else(unknown)?;
                    Ok(Stmt::DnatLoadBalance {
                        proto,
                        map,
                        modulus,
                    })
                }
                _ => Err(unknown()),
            };
        }
        let port = d.get("port").map(port).transpose()?.ok_or_else(unknown)?;
        return Ok(Stmt::Dnat(SocketAddr::new(addr(to)?, port)));
    }
    if x.get("masquerade").is_some() {
        return Ok(Stmt::Masquerade);
    }
    if x.get("reject").is_some() {
        return Ok(Stmt::Reject);
    }
    Err(unknown())
}
