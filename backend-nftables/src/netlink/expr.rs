//! Rule statements as the expressions nft 1.0.6 generates for them (seen
//! with `nft --debug=netlink`; the tests hold what it printed).

use std::net::IpAddr;

use ipnet::IpNet;
use proxy_core::IpFamily;

use crate::ir::{Stmt, Verdict, VmapKey};

use super::attr::Writer;
use super::consts::*;
use super::element::{addr, proto_number, put_verdict};

/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// The register nft names for the 32-bit word `word` of a concatenation
/// that starts in `NFT_REG_1` (the kernel numbers 16-byte registers 1–4 and
/// 32-bit ones from 8).
pub fn reg(word: u32) -> u32 {
    let index = 4 + word;
    if index.is_multiple_of(4) {
        index / 4
    } else {
        index - 4 + 8
    }
}

/// Writes the expressions of rule statements.
pub struct Exprs<'a> {
    w: &'a mut Writer,
    family: IpFamily,
}

impl<'a> Exprs<'a> {
    /// Expressions of `family`'s table into `w` (inside `NFTA_RULE_EXPRESSIONS`).
    pub fn new(w: &'a mut Writer, family: IpFamily) -> Self {
        Exprs { w, family }
    }

    fn addr_len(&self) -> u32 {
        match self.family {
            IpFamily::V4 => 4,
            IpFamily::V6 => 16,
        }
    }

    fn saddr_offset(&self) -> u32 {
        match self.family {
            IpFamily::V4 => 12,
            IpFamily::V6 => 8,
        }
    }

    fn daddr_offset(&self) -> u32 {
        self.saddr_offset() + self.addr_len()
    }

    fn nfproto(&self) -> u32 {
        u32::from(match self.family {
            IpFamily::V4 => NFPROTO_IPV4,
            IpFamily::V6 => NFPROTO_IPV6,
        })
    }

    /// One expression: `NFTA_LIST_ELEM { NAME, DATA { body } }`.
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Writer)) {
        let elem = self.w.open(NFTA_LIST_ELEM);
        self.w.put_str(NFTA_EXPR_NAME, name);
        let data = self.w.open(NFTA_EXPR_DATA);
        body(self.w);
        self.w.close(data);
        self.w.close(elem);
    }

    fn value(w: &mut Writer, kind: u16, bytes: &[u8]) {
        let n = w.open(kind);
        w.put(NFTA_DATA_VALUE, bytes);
        w.close(n);
    }

    fn payload(&mut self, dreg: u32, base: u32, offset: u32, len: u32) {
        self.expr("payload", |w| {
            w.put_u32(NFTA_PAYLOAD_DREG, dreg);
            w.put_u32(NFTA_PAYLOAD_BASE, base);
            w.put_u32(NFTA_PAYLOAD_OFFSET, offset);
            w.put_u32(NFTA_PAYLOAD_LEN, len);
        });
    }

    fn network(&mut self, dreg: u32, offset: u32, len: u32) {
        self.payload(dreg, NFT_PAYLOAD_NETWORK_HEADER, offset, len);
    }

    fn dport(&mut self, dreg: u32) {
        self.payload(dreg, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    }

    fn cmp(&mut self, op: u32, bytes: &[u8]) {
        self.expr("cmp", |w| {
            w.put_u32(NFTA_CMP_SREG, NFT_REG_1);
            w.put_u32(NFTA_CMP_OP, op);
            Self::value(w, NFTA_CMP_DATA, bytes);
        });
    }

    fn meta(&mut self, dreg: u32, key: u32) {
        self.expr("meta", |w| {
            w.put_u32(NFTA_META_KEY, key);
            w.put_u32(NFTA_META_DREG, dreg);
        });
    }

    fn bitwise(&mut self, mask: &[u8], xor: &[u8]) {
        let len = mask.len() as u32;
        self.expr("bitwise", |w| {
            w.put_u32(NFTA_BITWISE_SREG, NFT_REG_1);
            w.put_u32(NFTA_BITWISE_DREG, NFT_REG_1);
            w.put_u32(NFTA_BITWISE_OP, NFT_BITWISE_BOOL);
            w.put_u32(NFTA_BITWISE_LEN, len);
            Self::value(w, NFTA_BITWISE_MASK, mask);
            Self::value(w, NFTA_BITWISE_XOR, xor);
        });
    }

    fn ct_flag(&mut self, key: u32, flag: u32) {
        self.expr("ct", |w| {
            w.put_u32(NFTA_CT_KEY, key);
            w.put_u32(NFTA_CT_DREG, NFT_REG_1);
        });
        self.bitwise(&flag.to_ne_bytes(), &[0; 4]);
        self.cmp(NFT_CMP_NEQ, &[0; 4]);
    }

    fn lookup(&mut self, set: &str, dreg: Option<u32>) {
        self.expr("lookup", |w| {
            w.put_str(NFTA_LOOKUP_SET, set);
            w.put_u32(NFTA_LOOKUP_SREG, NFT_REG_1);
            if let Some(d) = dreg {
                w.put_u32(NFTA_LOOKUP_DREG, d);
            }
        });
    }

    fn l4proto_is(&mut self, p: proxy_core::Protocol) {
        self.meta(NFT_REG_1, NFT_META_L4PROTO);
        self.cmp(NFT_CMP_EQ, &[proto_number(p)]);
    }

    fn addr_is(&mut self, offset: u32, a: &IpAddr, op: u32) {
        let mut bytes = Vec::new();
        addr(&mut bytes, a);
        self.network(NFT_REG_1, offset, bytes.len() as u32);
        self.cmp(op, &bytes);
    }

    /// `ip saddr|daddr [!=] net`: a whole-byte prefix compares its bytes
    /// only; another prefix masks the address first.
    fn addr_in_net(&mut self, offset: u32, net: &IpNet, op: u32) {
        let full = self.addr_len();
        let prefix = u32::from(net.prefix_len());
        let mut bytes = Vec::new();
        addr(&mut bytes, &net.network());
        if prefix == full * 8 {
            self.network(NFT_REG_1, offset, full);
            self.cmp(op, &bytes);
        } else if prefix > 0 && prefix.is_multiple_of(8) {
            let n = (prefix / 8) as usize;
            self.network(NFT_REG_1, offset, n as u32);
            self.cmp(op, &bytes[..n]);
        } else {
            let mut mask = Vec::new();
            addr(&mut mask, &net.netmask());
            self.network(NFT_REG_1, offset, full);
            self.bitwise(&mask, &vec![0; full as usize]);
            self.cmp(op, &bytes);
        }
    }

    fn verdict(&mut self, v: &Verdict) {
        self.expr("immediate", |w| {
            w.put_u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            let data = w.open(NFTA_IMMEDIATE_DATA);
            put_verdict(w, v);
            w.close(data);
        });
    }

    fn immediate(&mut self, dreg: u32, bytes: &[u8]) {
        self.expr("immediate", |w| {
            w.put_u32(NFTA_IMMEDIATE_DREG, dreg);
            Self::value(w, NFTA_IMMEDIATE_DATA, bytes);
        });
    }

    fn dnat(&mut self, addr_reg: u32, proto_reg: u32, flags: Option<u32>) {
        let family = self.nfproto();
        self.expr("nat", |w| {
            w.put_u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
            w.put_u32(NFTA_NAT_FAMILY, family);
            w.put_u32(NFTA_NAT_REG_ADDR_MIN, addr_reg);
            w.put_u32(NFTA_NAT_REG_PROTO_MIN, proto_reg);
            if let Some(f) = flags {
                w.put_u32(NFTA_NAT_FLAGS, f);
            }
        });
    }

    /// Writes `stmt`; `false` when nft would write what this encoder does
    /// not know (the caller falls back to `nft`).
    pub fn stmt(&mut self, stmt: &Stmt) -> bool {
        let words = self.addr_len() / 4;
        match stmt {
            Stmt::CtStateNew => self.ct_flag(NFT_CT_STATE, 0x8),
            Stmt::CtStatusDnat => self.ct_flag(NFT_CT_STATUS, 0x20),
            Stmt::DaddrInSet(set) => {
                self.network(NFT_REG_1, self.daddr_offset(), self.addr_len());
                self.lookup(set, None);
            }
            Stmt::SaddrInSet(set) => {
                self.network(NFT_REG_1, self.saddr_offset(), self.addr_len());
                self.lookup(set, None);
            }
            Stmt::SaddrDaddrInSet(set) => {
                self.network(NFT_REG_1, self.saddr_offset(), self.addr_len());
                self.network(reg(words), self.daddr_offset(), self.addr_len());
                self.lookup(set, None);
            }
            Stmt::DaddrIs(a) => self.addr_is(self.daddr_offset(), a, NFT_CMP_EQ),
            Stmt::SaddrIs(a) => self.addr_is(self.saddr_offset(), a, NFT_CMP_EQ),
            Stmt::SaddrInNet { net, negate } => {
                let op = if *negate { NFT_CMP_NEQ } else { NFT_CMP_EQ };
                self.addr_in_net(self.saddr_offset(), net, op);
            }
            Stmt::DaddrNotInNet(net) => self.addr_in_net(self.daddr_offset(), net, NFT_CMP_NEQ),
            Stmt::Iifname { name, negate } => {
                let op = if *negate { NFT_CMP_NEQ } else { NFT_CMP_EQ };
                // A trailing `*` compares the prefix only; otherwise the
                // whole IFNAMSIZ buffer. What nft would read differently
                // (escapes, an empty prefix, a name too long) goes to nft.
                let text = name.strip_suffix('*').unwrap_or(name);
                if text.is_empty() || text.len() >= IFNAMSIZ || text.contains(['\\', '*', '"']) {
                    return false;
                }
                let mut bytes = text.as_bytes().to_vec();
                if text.len() == name.len() {
                    bytes.resize(IFNAMSIZ, 0);
                }
                self.meta(NFT_REG_1, NFT_META_IIFNAME);
                self.cmp(op, &bytes);
            }
            Stmt::FibSaddrLocal | Stmt::FibDaddrLocal => {
                let flags = if matches!(stmt, Stmt::FibSaddrLocal) {
                    NFTA_FIB_F_SADDR
                } else {
                    NFTA_FIB_F_DADDR
                };
                self.expr("fib", |w| {
                    w.put_u32(NFTA_FIB_DREG, NFT_REG_1);
                    w.put_u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                    w.put_u32(NFTA_FIB_FLAGS, flags);
                });
                self.cmp(NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
            }
            Stmt::L4proto(p) => self.l4proto_is(*p),
            Stmt::Dport(p, n) => {
                self.l4proto_is(*p);
                self.dport(NFT_REG_1);
                self.cmp(NFT_CMP_EQ, &n.to_be_bytes());
            }
            Stmt::MarkUnset(m) => {
                self.meta(NFT_REG_1, NFT_META_MARK);
                self.bitwise(&m.to_ne_bytes(), &[0; 4]);
                self.cmp(NFT_CMP_EQ, &[0; 4]);
            }
            Stmt::Numgen { modulus, value } => {
                self.numgen(NFT_REG_1, *modulus);
                self.cmp(NFT_CMP_EQ, &value.to_ne_bytes());
            }
            Stmt::MarkOr(m) | Stmt::MarkXor(m) => {
                let mask = if matches!(stmt, Stmt::MarkOr(_)) {
                    !m
                } else {
                    u32::MAX
                };
                self.meta(NFT_REG_1, NFT_META_MARK);
                self.bitwise(&mask.to_ne_bytes(), &m.to_ne_bytes());
                self.expr("meta", |w| {
                    w.put_u32(NFTA_META_KEY, NFT_META_MARK);
                    w.put_u32(NFTA_META_SREG, NFT_REG_1);
                });
            }
            Stmt::UpdateSaddr(set) => {
                self.network(NFT_REG_1, self.saddr_offset(), self.addr_len());
                self.expr("dynset", |w| {
                    w.put_str(NFTA_DYNSET_SET_NAME, set);
                    w.put_u32(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
                    w.put_u32(NFTA_DYNSET_SREG_KEY, NFT_REG_1);
                });
            }
            Stmt::Vmap { key, map } => {
                let first = match key {
                    VmapKey::DaddrProtoPort => {
                        self.network(NFT_REG_1, self.daddr_offset(), self.addr_len());
                        words
                    }
                    VmapKey::ProtoPort => 0,
                };
                self.meta(reg(first), NFT_META_L4PROTO);
                self.dport(reg(first + 1));
                self.lookup(map, Some(NFT_REG_VERDICT));
            }
            Stmt::Dnat(to) => {
                let mut a = Vec::new();
                addr(&mut a, &to.ip());
                self.immediate(NFT_REG_1, &a);
                self.immediate(2, &to.port().to_be_bytes());
                self.dnat(NFT_REG_1, 2, Some(NF_NAT_RANGE_PROTO_SPECIFIED));
            }
            Stmt::DnatLoadBalance {
                proto,
                map,
                modulus,
            } => {
                self.l4proto_is(*proto);
                self.network(NFT_REG_1, self.daddr_offset(), self.addr_len());
                self.dport(reg(words));
                self.numgen(reg(words + 1), *modulus);
                self.lookup(map, Some(NFT_REG_1));
                self.dnat(NFT_REG_1, reg(words), None);
            }
            Stmt::Masquerade => self.expr("masq", |w| {
                w.put_u32(NFTA_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY);
            }),
            Stmt::Reject => {
                let code = match self.family {
                    IpFamily::V4 => ICMP_PORT_UNREACH,
                    IpFamily::V6 => ICMPV6_PORT_UNREACH,
                };
                self.expr("reject", |w| {
                    w.put_u32(NFTA_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
                    w.put(NFTA_REJECT_ICMP_CODE, &[code]);
                });
            }
            Stmt::Verdict(v) => self.verdict(v),
        }
        true
    }

    fn numgen(&mut self, dreg: u32, modulus: u32) {
        self.expr("numgen", |w| {
            w.put_u32(NFTA_NG_DREG, dreg);
            w.put_u32(NFTA_NG_MODULUS, modulus);
            w.put_u32(NFTA_NG_TYPE, NFT_NG_RANDOM);
        });
    }
}
