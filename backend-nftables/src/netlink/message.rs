//! One nf_tables message per command, as nft 1.0.6 sends it.

use proxy_core::IpFamily;
use proxy_core::model::rule_comment;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::{ChainType, Command, ElemKey, Element, Hook, TABLE};
use crate::names::COMMENT_MAX;
use crate::render::skeleton_names::NODEPORT_IPS;

use super::attr::{Writer, comment_udata};
use super::consts::*;
use super::element::{ValueBytes, addr, key_bytes, put_verdict, value_bytes};
use super::expr::Exprs;
use super::set::set_spec;

/// The table comment nft writes for [`Command::AddTable`].
const TABLE_COMMENT: &str = "rules for kube-proxy";

/// The `nfgenmsg` family of `family`'s table.
pub fn nfproto(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    }
}

/// Writes `command` as one message with sequence number `seq`; `false`
/// (and nothing written) when this encoder cannot write it as nft would.
///
/// `zero_end`: interval sets declared in this batch whose first element
/// must be preceded by an interval end at address 0 (what nft sends when
/// it fills a set it creates, unless an element starts at 0); the set is
/// taken out once written.
pub fn write_command(
    w: &mut Writer,
    family: IpFamily,
    command: &Command,
    seq: u32,
    zero_end: &mut BTreeSet<String>,
) -> bool {
    let mark = w.bytes().len();
    let written = write(w, family, command, seq, zero_end);
    if !written {
        w.truncate(mark);
    }
    written
}

fn write(
    w: &mut Writer,
    family: IpFamily,
    command: &Command,
    seq: u32,
    zero_end: &mut BTreeSet<String>,
) -> bool {
    let fam = nfproto(family);
    // Errors are answered whatever the flags; the batch's last message
    // asks for an acknowledgement too ([`super::batch`]).
    let ack = NLM_F_REQUEST;
    let start;
    match command {
        Command::AddTable => {
            start = w.begin_nft(NFT_MSG_NEWTABLE, ack | NLM_F_CREATE, seq, fam);
            w.put_str(NFTA_TABLE_NAME, TABLE);
            w.put_u32(NFTA_TABLE_FLAGS, 0);
            w.put(
                NFTA_TABLE_USERDATA,
                &comment_udata(UDATA_COMMENT, TABLE_COMMENT),
            );
        }
        Command::DeleteTable => {
            start = w.begin_nft(NFT_MSG_DELTABLE, ack, seq, fam);
            w.put_str(NFTA_TABLE_NAME, TABLE);
        }
        Command::AddChain(c) => {
            start = w.begin_nft(NFT_MSG_NEWCHAIN, ack | NLM_F_CREATE, seq, fam);
            w.put_str(NFTA_CHAIN_TABLE, TABLE);
            w.put_str(NFTA_CHAIN_NAME, &c.name);
            if let Some(b) = c.base {
                let hook = w.open(NFTA_CHAIN_HOOK);
                w.put_u32(NFTA_HOOK_HOOKNUM, hook_number(b.hook));
                w.put_u32(NFTA_HOOK_PRIORITY, b.priority as u32);
                w.close(hook);
                w.put_str(
                    NFTA_CHAIN_TYPE,
                    match b.kind {
                        ChainType::Filter => "filter",
                        ChainType::Nat => "nat",
                    },
                );
            }
        }
        Command::FlushChain(chain) => {
            start = w.begin_nft(NFT_MSG_DELRULE, ack, seq, fam);
            w.put_str(NFTA_RULE_TABLE, TABLE);
            w.put_str(NFTA_RULE_CHAIN, chain);
        }
        Command::DeleteChain(chain) => {
            start = w.begin_nft(NFT_MSG_DELCHAIN, ack, seq, fam);
            w.put_str(NFTA_CHAIN_TABLE, TABLE);
            w.put_str(NFTA_CHAIN_NAME, chain);
        }
        Command::AddRule { chain, rule } => {
            start = w.begin_nft(NFT_MSG_NEWRULE, ack | NLM_F_CREATE | NLM_F_APPEND, seq, fam);
            w.put_str(NFTA_RULE_TABLE, TABLE);
            w.put_str(NFTA_RULE_CHAIN, chain);
            let list = w.open(NFTA_RULE_EXPRESSIONS);
            let mut exprs = Exprs::new(w, family);
            for stmt in &rule.stmts {
                if !exprs.stmt(stmt) {
                    return false;
                }
            }
            w.close(list);
            if let Some(c) = &rule.comment {
                let text = rule_comment(c, COMMENT_MAX);
                w.put(NFTA_RULE_USERDATA, &comment_udata(UDATA_COMMENT, &text));
            }
        }
        Command::AddSet(set) => {
            let spec = set_spec(family, set);
            start = w.begin_nft(NFT_MSG_NEWSET, ack | NLM_F_CREATE, seq, fam);
            w.put_str(NFTA_SET_TABLE, TABLE);
            w.put_str(NFTA_SET_NAME, &set.name);
            w.put_u32(NFTA_SET_FLAGS, spec.flags);
            w.put_u32(NFTA_SET_KEY_TYPE, spec.key_type);
            w.put_u32(NFTA_SET_KEY_LEN, spec.key_len);
            if let Some((data_type, data_len)) = spec.data {
                w.put_u32(NFTA_SET_DATA_TYPE, data_type);
                w.put_u32(NFTA_SET_DATA_LEN, data_len);
            }
            // The set's id within the batch: any number unique in it.
            w.put_u32(NFTA_SET_ID, seq);
            if let Some(ms) = spec.timeout_ms {
                w.put(NFTA_SET_TIMEOUT, &ms.to_be_bytes());
            }
            w.put(NFTA_SET_USERDATA, &spec.userdata);
        }
        Command::FlushSet { name, .. } => {
            start = w.begin_nft(NFT_MSG_DELSETELEM, ack, seq, fam);
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.put_str(NFTA_SET_ELEM_LIST_SET, name);
        }
        Command::DeleteSet(name) => {
            start = w.begin_nft(NFT_MSG_DELSET, ack, seq, fam);
            w.put_str(NFTA_SET_TABLE, TABLE);
            w.put_str(NFTA_SET_NAME, name);
        }
        Command::AddElement(e) => {
            start = w.begin_nft(NFT_MSG_NEWSETELEM, ack | NLM_F_CREATE, seq, fam);
            let written = match &e.key {
                ElemKey::Net(net) => {
                    let lead = zero_end.remove(&e.set);
                    interval_element(w, e, net, true, lead)
                }
                _ => element(w, e, true),
            };
            if !written {
                return false;
            }
        }
        Command::DeleteElement(e) => {
            start = w.begin_nft(NFT_MSG_DELSETELEM, ack, seq, fam);
            let written = match &e.key {
                ElemKey::Net(net) => interval_element(w, e, net, false, false),
                _ => element(w, e, false),
            };
            if !written {
                return false;
            }
        }
    }
    w.end(start);
    true
}

/// `NFTA_SET_ELEM_LIST_*` for one element (with its value and comment when
/// it is added).
fn element(w: &mut Writer, e: &Element, add: bool) -> bool {
    let Some(key) = key_bytes(&e.key) else {
        return false;
    };
    if e.set == NODEPORT_IPS {
        // An address in the interval set is a one-address interval: nft
        // writes it as such (left to nft).
        return false;
    }
    w.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    w.put_str(NFTA_SET_ELEM_LIST_SET, &e.set);
    let list = w.open(NFTA_SET_ELEM_LIST_ELEMENTS);
    let elem = w.open(NFTA_LIST_ELEM);
    let k = w.open(NFTA_SET_ELEM_KEY);
    w.put(NFTA_DATA_VALUE, &key);
    w.close(k);
    if add {
        if let Some(value) = &e.value {
            let data = w.open(NFTA_SET_ELEM_DATA);
            match value_bytes(value) {
                ValueBytes::Data(bytes) => w.put(NFTA_DATA_VALUE, &bytes),
                ValueBytes::Verdict(v) => put_verdict(w, v),
            }
            w.close(data);
        }
        if let Some(c) = &e.comment {
            let text = rule_comment(c, COMMENT_MAX);
            w.put(NFTA_SET_ELEM_USERDATA, &comment_udata(UDATA_COMMENT, &text));
        }
    }
    w.close(elem);
    w.close(list);
    true
}

fn hook_number(hook: Hook) -> u32 {
    match hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// `NFT_SET_ELEM_INTERVAL_END`.
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// `NFTNL_UDATA_SET_ELEM_FLAGS` with `NFTNL_SET_ELEM_F_INTERVAL_OPEN`: an
/// interval that runs to the end of the address space (no end element).
const INTERVAL_OPEN_UDATA: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// A prefix of an interval set as nft writes it: its first address, and
/// an interval end at the address after its last (none when it runs to the
/// top of the address space, marked "open" instead); `zero_end` first puts
/// an interval end at address 0.
fn interval_element(w: &mut Writer, e: &Element, net: &IpNet, add: bool, zero_end: bool) -> bool {
    if e.value.is_some() || e.comment.is_some() {
        return false;
    }
    let mut start = Vec::new();
    addr(&mut start, &net.network());
    let end = next_address(&net.broadcast());
    if end.is_none() && !add {
        return false; // how nft deletes an open interval is not checked
    }
    w.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    w.put_str(NFTA_SET_ELEM_LIST_SET, &e.set);
    let list = w.open(NFTA_SET_ELEM_LIST_ELEMENTS);
    let key = |w: &mut Writer, bytes: &[u8], flags: u32, udata: Option<&[u8]>| {
        let elem = w.open(NFTA_LIST_ELEM);
        if flags != 0 {
            w.put_u32(NFTA_SET_ELEM_FLAGS, flags);
        }
        let k = w.open(NFTA_SET_ELEM_KEY);
        w.put(NFTA_DATA_VALUE, bytes);
        w.close(k);
        if let Some(u) = udata {
            w.put(NFTA_SET_ELEM_USERDATA, u);
        }
        w.close(elem);
    };
    if zero_end {
        key(w, &vec![0; start.len()], NFT_SET_ELEM_INTERVAL_END, None);
    }
    match end {
        Some(end) => {
            key(w, &start, 0, None);
            let mut bytes = Vec::new();
            addr(&mut bytes, &end);
            key(w, &bytes, NFT_SET_ELEM_INTERVAL_END, None);
        }
        None => key(w, &start, 0, Some(&INTERVAL_OPEN_UDATA)),
    }
    w.close(list);
    true
}

/// The address after `a`, if any.
fn next_address(a: &IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v4) => u32::from(*v4).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v6) => u128::from(*v6).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Rule, Stmt, Verdict};
    use proxy_core::Protocol;

    /// The message's attributes (after `nlmsghdr` and `nfgenmsg`), in hex.
    fn body(command: &Command) -> String {
        let mut w = Writer::new();
        assert!(write_command(
            &mut w,
            IpFamily::V4,
            command,
            1,
            &mut BTreeSet::new()
        ));
        let bytes = w.into_bytes();
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(len, bytes.len());
        bytes[20..].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes `nft --debug=mnl` (1.0.6) sent for `add rule ip kube-proxy
    /// c ip daddr 10.96.0.1 tcp dport 80 ip saddr 10.0.0.0/8 mark set mark
    /// or 0x4000 jump d comment "ns/web:http"`.
    #[test]
    fn a_rule_is_the_bytes_nft_sends() {
        let rule = Rule::new(vec![
            Stmt::DaddrIs("10.96.0.1".parse().unwrap()),
            Stmt::Dport(Protocol::Tcp, 80),
            Stmt::SaddrInNet {
                net: "10.0.0.0/8".parse().unwrap(),
                negate: false,
            },
            Stmt::MarkOr(0x4000),
            Stmt::Verdict(Verdict::Jump("d".into())),
        ])
        .comment("ns/web:http");
        let command = Command::AddRule {
            chain: "c".into(),
            rule,
        };
        assert_eq!(
            body(&command),
            "0f0001006b7562652d70726f78790000060002006300000040020480340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000001008000400000000042c00018008000100636d700020000280080001000000000108000200000000000c000380080001000a60000124000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c0003800500010006000000340001800c0001007061796c6f6164002400028008000100000000010800020000000002080003000000000208000400000000022c00018008000100636d700020000280080001000000000108000200000000000c0003800600010000500000340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400000000012c00018008000100636d700020000280080001000000000108000200000000000c000380050001000a00000024000180090001006d6574610000000014000280080002000000000308000100000000014c0001800c00010062697477697365003c00028008000100000000010800020000000001080006000000000008000300000000040c00048008000100ffbfffff0c000580080001000040000024000180090001006d657461000000001400028008000200000000030800030000000001380001800e000100696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffd060002006400000012000700000c6e732f7765623a68747470000000"
        );
    }

    /// The bytes nft sent for `add element ip kube-proxy s { 10.96.0.7 }`,
    /// less the set's transaction id nft adds from its cache (the kernel
    /// finds the set by name first).
    #[test]
    fn an_element_is_the_bytes_nft_sends() {
        let command = Command::AddElement(Element {
            set: "s".into(),
            key: ElemKey::Addr("10.96.0.7".parse().unwrap()),
            value: None,
            comment: None,
        });
        assert_eq!(
            body(&command),
            "0f0001006b7562652d70726f78790000060002007300000014000380100001800c000180080001000a600007"
        );
    }
}
