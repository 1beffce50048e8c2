//! The few parts of nf_tables netlink notifications the watcher needs,
//! parsed by hand: `nlmsghdr` + `nfgenmsg` + attribute TLVs
//! (`include/uapi/linux/netfilter/nf_tables.h`). The netlink-packet-netfilter
//! crate models conntrack, not nf_tables.
//!
//! A committed transaction is announced to the `NFNLGRP_NFTABLES` group as
//! one message per object it added or deleted, followed by one
//! `NFT_MSG_NEWGEN` naming the new generation and the committing process.

/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_OVERRUN`.
const NLMSG_OVERRUN: u16 = 4;
/// `NLA_TYPE_MASK`: an attribute type without the nested / byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `NFPROTO_IPV4`.
pub(crate) const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
pub(crate) const NFPROTO_IPV6: u8 = 10;

// enum nf_tables_msg_types.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_DELOBJ: u16 = 20;
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_DELFLOWTABLE: u16 = 24;
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_DESTROYCHAIN: u16 = 27;
const NFT_MSG_DESTROYRULE: u16 = 28;
const NFT_MSG_DESTROYSET: u16 = 29;
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFT_MSG_DESTROYOBJ: u16 = 31;
const NFT_MSG_DESTROYFLOWTABLE: u16 = 32;

// Attributes. The table name is attribute 1 of every object message
// (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
// NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
const NFTA_OBJECT_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

/// What kind of object a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// A table.
    Table,
    /// A chain.
    Chain,
    /// A rule.
    Rule,
    /// A set or map, or elements of one, a stateful object or a flowtable:
    /// anything else that lives in a table.
    Other,
}

/// One added or deleted object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectChange {
    /// `NFPROTO_*` of the table.
    pub family: u8,
    /// Added (`NEW*`) or deleted (`DEL*`, `DESTROY*`).
    pub added: bool,
    /// Its kind.
    pub kind: ObjectKind,
    /// The table it lives in.
    pub table: String,
    /// The chain: the chain's own name for a chain, the chain a rule is in.
    pub chain: Option<String>,
    /// For a rule: the chains its `jump` / `goto` verdicts name.
    pub jumps_to: Vec<String>,
}

/// One message of a notification datagram, as far as the watcher cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notification {
    /// An object was added or deleted (part of the transaction that the
    /// next [`Notification::Generation`] closes).
    Object(ObjectChange),
    /// `NFT_MSG_NEWGEN`: a transaction was committed.
    Generation {
        /// The new generation id.
        id: u32,
        /// The committing process (`NFTA_GEN_PROC_PID`), when the kernel
        /// says.
        pid: Option<u32>,
        /// Its command name (`NFTA_GEN_PROC_NAME`), for logs.
        process: Option<String>,
    },
    /// The kernel dropped messages (`NLMSG_OVERRUN`).
    Overrun,
}

/// The messages of one datagram; malformed or foreign messages are skipped
/// (a truncated tail ends the parse).
pub(crate) fn parse_datagram(mut bytes: &[u8]) -> Vec<Notification> {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < 16 || len > bytes.len() {
            break;
        }
        if let Some(n) = parse_message(kind, &bytes[16..len]) {
            out.push(n);
        }
        let next = len.next_multiple_of(4).min(bytes.len());
        bytes = &bytes[next..];
    }
    out
}

fn parse_message(kind: u16, payload: &[u8]) -> Option<Notification> {
    if kind == NLMSG_OVERRUN {
        return Some(Notification::Overrun);
    }
    if kind == NLMSG_ERROR || kind >> 8 != NFNL_SUBSYS_NFTABLES || payload.len() < 4 {
        return None;
    }
    let family = payload[0];
    let attrs = &payload[4..];
    let message = kind & 0xff;
    let (kind, added) = match message {
        NFT_MSG_NEWGEN => {
            return Some(Notification::Generation {
                id: attr(attrs, NFTA_GEN_ID).and_then(be_u32)?,
                pid: attr(attrs, NFTA_GEN_PROC_PID).and_then(be_u32),
                process: attr(attrs, NFTA_GEN_PROC_NAME).and_then(string),
            });
        }
        NFT_MSG_NEWTABLE => (ObjectKind::Table, true),
        NFT_MSG_DELTABLE | NFT_MSG_DESTROYTABLE => (ObjectKind::Table, false),
        NFT_MSG_NEWCHAIN => (ObjectKind::Chain, true),
        NFT_MSG_DELCHAIN | NFT_MSG_DESTROYCHAIN => (ObjectKind::Chain, false),
        NFT_MSG_NEWRULE => (ObjectKind::Rule, true),
        NFT_MSG_DELRULE | NFT_MSG_DESTROYRULE => (ObjectKind::Rule, false),
        NFT_MSG_NEWSET | NFT_MSG_NEWSETELEM | NFT_MSG_NEWOBJ | NFT_MSG_NEWFLOWTABLE => {
            (ObjectKind::Other, true)
        }
        NFT_MSG_DELSET
        | NFT_MSG_DELSETELEM
        | NFT_MSG_DELOBJ
        | NFT_MSG_DELFLOWTABLE
        | NFT_MSG_DESTROYSET
        | NFT_MSG_DESTROYSETELEM
        | NFT_MSG_DESTROYOBJ
        | NFT_MSG_DESTROYFLOWTABLE => (ObjectKind::Other, false),
        _ => return None,
    };
    let table = attr(attrs, NFTA_OBJECT_TABLE).and_then(string)?;
    let (chain, jumps_to) = match kind {
        ObjectKind::Chain => (attr(attrs, NFTA_CHAIN_NAME).and_then(string), Vec::new()),
        ObjectKind::Rule => (
            attr(attrs, NFTA_RULE_CHAIN).and_then(string),
            attr(attrs, NFTA_RULE_EXPRESSIONS)
                .map(verdict_chains)
                .unwrap_or_default(),
        ),
        ObjectKind::Table | ObjectKind::Other => (None, Vec::new()),
    };
    Some(Notification::Object(ObjectChange {
        family,
        added,
        kind,
        table,
        chain,
        jumps_to,
    }))
}

/// The attributes of a TLV stream: `(type without flags, value)`.
fn attrs(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > bytes.len() {
            return None;
        }
        let value = &bytes[4..len];
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
        Some((kind, value))
    })
}

/// The value of the first attribute of type `kind`.
fn attr(bytes: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(bytes).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
fn string(value: &[u8]) -> Option<String> {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    std::str::from_utf8(&value[..end]).ok().map(str::to_string)
}

/// A big-endian 32-bit attribute (`NLA_PUT_BE32`).
fn be_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// The chains named by the `immediate` verdicts (`jump` / `goto`) of a
/// rule's expression list.
fn verdict_chains(expressions: &[u8]) -> Vec<String> {
    attrs(expressions)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .filter(|(_, e)| attr(e, NFTA_EXPR_NAME).and_then(string).as_deref() == Some("immediate"))
        .filter_map(|(_, e)| {
            let data = attr(e, NFTA_EXPR_DATA)?;
            let value = attr(data, NFTA_IMMEDIATE_DATA)?;
            let verdict = attr(value, NFTA_DATA_VERDICT)?;
            attr(verdict, NFTA_VERDICT_CHAIN).and_then(string)
        })
        .collect()
}

/// Builders of notification bytes, for tests (ours and the watcher's).
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// An attribute; `nested` sets `NLA_F_NESTED`.
    pub fn attr(kind: u16, value: &[u8], nested: bool) -> Vec<u8> {
        let len = 4 + value.len();
        let kind = if nested { kind | 0x8000 } else { kind };
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    /// A string attribute (NUL-terminated).
    pub fn text(kind: u16, value: &str) -> Vec<u8> {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        attr(kind, &v, false)
    }

    /// One nf_tables message of type `msg` in `family`.
    pub fn message(msg: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let len = 16 + 4 + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[family, 0, 0, 0]);
        out.extend_from_slice(&body);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    /// `NFT_MSG_NEWGEN` by `pid`.
    pub fn generation(id: u32, pid: u32, name: &str) -> Vec<u8> {
        message(
            NFT_MSG_NEWGEN,
            0,
            &[
                attr(NFTA_GEN_ID, &id.to_be_bytes(), false),
                attr(NFTA_GEN_PROC_PID, &pid.to_be_bytes(), false),
                text(NFTA_GEN_PROC_NAME, name),
            ],
        )
    }

    /// `NFT_MSG_DELTABLE` / `NEWTABLE`.
    pub fn table(added: bool, family: u8, table: &str) -> Vec<u8> {
        let msg = if added {
            NFT_MSG_NEWTABLE
        } else {
            NFT_MSG_DELTABLE
        };
        message(msg, family, &[text(NFTA_OBJECT_TABLE, table)])
    }

    /// `NFT_MSG_NEWCHAIN` / `DELCHAIN`.
    pub fn chain(added: bool, family: u8, table: &str, chain: &str) -> Vec<u8> {
        let msg = if added {
            NFT_MSG_NEWCHAIN
        } else {
            NFT_MSG_DELCHAIN
        };
        message(
            msg,
            family,
            &[text(NFTA_OBJECT_TABLE, table), text(NFTA_CHAIN_NAME, chain)],
        )
    }

    /// `NFT_MSG_NEWRULE` / `DELRULE`; `jump` adds an `immediate` expression
    /// jumping there, after a `counter`.
    pub fn rule(added: bool, family: u8, table: &str, chain: &str, jump: Option<&str>) -> Vec<u8> {
        let msg = if added {
            NFT_MSG_NEWRULE
        } else {
            NFT_MSG_DELRULE
        };
        let counter = attr(NFTA_LIST_ELEM, &text(NFTA_EXPR_NAME, "counter"), true);
        let mut elems = vec![counter];
        if let Some(target) = jump {
            let verdict = [
                attr(1, &(-3i32).to_be_bytes(), false), // NFTA_VERDICT_CODE: NFT_JUMP
                text(NFTA_VERDICT_CHAIN, target),
            ]
            .concat();
            let value = attr(NFTA_DATA_VERDICT, &verdict, true);
            let data = [
                attr(1, &0u32.to_be_bytes(), false), // NFTA_IMMEDIATE_DREG
                attr(NFTA_IMMEDIATE_DATA, &value, true),
            ]
            .concat();
            let expr = [
                text(NFTA_EXPR_NAME, "immediate"),
                attr(NFTA_EXPR_DATA, &data, true),
            ]
            .concat();
            elems.push(attr(NFTA_LIST_ELEM, &expr, true));
        }
        message(
            msg,
            family,
            &[
                text(NFTA_OBJECT_TABLE, table),
                text(NFTA_RULE_CHAIN, chain),
                attr(3, &7u64.to_be_bytes(), false), // NFTA_RULE_HANDLE
                attr(NFTA_RULE_EXPRESSIONS, &elems.concat(), true),
            ],
        )
    }

    /// `NFT_MSG_DELSETELEM` in `set`.
    pub fn set_element_deleted(family: u8, table: &str, set: &str) -> Vec<u8> {
        message(
            NFT_MSG_DELSETELEM,
            family,
            &[text(NFTA_OBJECT_TABLE, table), text(2, set)],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::build::*;
    use super::*;

    #[test]
    fn a_generation_names_its_id_and_process() {
        let n = parse_datagram(&generation(42, 4711, "nft"));
        assert_eq!(
            n,
            [Notification::Generation {
                id: 42,
                pid: Some(4711),
                process: Some("nft".to_string())
            }]
        );
    }

    #[test]
    fn objects_name_their_table_chain_and_jumps() {
        let bytes = [
            table(false, NFPROTO_IPV4, "kube-proxy"),
            chain(true, NFPROTO_IPV6, "nat", "KUBE-SERVICES"),
            rule(
                false,
                NFPROTO_IPV4,
                "nat",
                "PREROUTING",
                Some("KUBE-SERVICES"),
            ),
            rule(true, NFPROTO_IPV4, "filter", "INPUT", None),
            set_element_deleted(NFPROTO_IPV4, "kube-proxy", "service-ips"),
        ]
        .concat();
        let n = parse_datagram(&bytes);
        let objects: Vec<ObjectChange> = n
            .into_iter()
            .map(|n| match n {
                Notification::Object(o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(objects.len(), 5);
        assert_eq!(
            objects[0],
            ObjectChange {
                family: NFPROTO_IPV4,
                added: false,
                kind: ObjectKind::Table,
                table: "kube-proxy".to_string(),
                chain: None,
                jumps_to: vec![],
            }
        );
        assert_eq!(objects[1].family, NFPROTO_IPV6);
        assert!(objects[1].added);
        assert_eq!(objects[1].kind, ObjectKind::Chain);
        assert_eq!(objects[1].chain.as_deref(), Some("KUBE-SERVICES"));
        assert_eq!(objects[2].kind, ObjectKind::Rule);
        assert_eq!(objects[2].chain.as_deref(), Some("PREROUTING"));
        assert_eq!(objects[2].jumps_to, ["KUBE-SERVICES"]);
        assert!(objects[3].jumps_to.is_empty());
        assert_eq!(objects[4].kind, ObjectKind::Other);
        assert_eq!(objects[4].table, "kube-proxy");
    }

    #[test]
    fn foreign_and_malformed_messages_are_skipped() {
        // A conntrack message (subsystem 1), an error, then a good one.
        let mut ct = message(0, NFPROTO_IPV4, &[]);
        ct[4..6].copy_from_slice(&(1u16 << 8).to_ne_bytes());
        let mut error = message(0, 0, &[]);
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        // A table message without its name.
        let nameless = message(NFT_MSG_DELTABLE, NFPROTO_IPV4, &[]);
        let good = table(false, NFPROTO_IPV4, "kube-proxy");
        let n = parse_datagram(&[ct, error, nameless, good].concat());
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn truncated_input_never_panics() {
        let bytes = [
            rule(
                false,
                NFPROTO_IPV4,
                "nat",
                "PREROUTING",
                Some("KUBE-SERVICES"),
            ),
            generation(1, 2, "iptables-nft-re"),
        ]
        .concat();
        for cut in 0..bytes.len() {
            let n = parse_datagram(&bytes[..cut]);
            assert!(n.len() <= 2);
        }
        // A length field pointing past the end, and a zero-length attribute.
        let mut bad = table(false, NFPROTO_IPV4, "kube-proxy");
        bad[20..22].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse_datagram(&bad).is_empty());
        let mut long = generation(1, 2, "nft");
        long[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_datagram(&long).is_empty());
    }

    #[test]
    fn an_overrun_is_reported() {
        let mut m = message(0, 0, &[]);
        m[4..6].copy_from_slice(&NLMSG_OVERRUN.to_ne_bytes());
        assert_eq!(parse_datagram(&m), [Notification::Overrun]);
    }
}
