//! Element keys and values as nft 1.0.6 writes them: each field of a
//! concatenation padded to 4 bytes; addresses and ports in network order;
//! the load-balancing index (what `numgen` yields) in host order.

use std::net::{IpAddr, SocketAddr};

use proxy_core::Protocol;

use crate::ir::{ElemKey, ElemValue, Verdict};

use super::attr::Writer;
use super::consts::{
    NF_DROP, NFT_GOTO, NFT_JUMP, NFT_RETURN, NFTA_DATA_VERDICT, NFTA_VERDICT_CHAIN,
    NFTA_VERDICT_CODE,
};

/// A key's bytes, or `None` when it cannot be written as one element
/// (a prefix of an interval set needs start and end elements, and knowledge
/// of its neighbours: those go to `nft`).
pub fn key_bytes(key: &ElemKey) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(40);
    match key {
        ElemKey::Addr(a) => addr(&mut out, a),
        ElemKey::AddrPair(a, b) => {
            addr(&mut out, a);
            addr(&mut out, b);
        }
        ElemKey::AddrProtoPort(a, p, n) => {
            addr(&mut out, a);
            proto(&mut out, *p);
            port(&mut out, *n);
        }
        ElemKey::ProtoPort(p, n) => {
            proto(&mut out, *p);
            port(&mut out, *n);
        }
        ElemKey::LoadBalance(a, n, i) => {
            addr(&mut out, a);
            port(&mut out, *n);
            out.extend_from_slice(&i.to_ne_bytes());
        }
        ElemKey::Net(_) => return None,
    }
    Some(out)
}

/// A DNAT destination `addr . port`.
pub fn endpoint_bytes(to: &SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    addr(&mut out, &to.ip());
    port(&mut out, to.port());
    out
}

/// Writes `v` as an `NFTA_DATA_VERDICT` nest (its code, and the chain of a
/// jump or goto): the data of a verdict-map element and of an `immediate`.
pub fn put_verdict(w: &mut Writer, v: &Verdict) {
    let (code, chain) = match v {
        Verdict::Jump(c) => (NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Drop => (NF_DROP, None),
    };
    let verdict = w.open(NFTA_DATA_VERDICT);
    w.put_u32(NFTA_VERDICT_CODE, code as u32);
    if let Some(c) = chain {
        w.put_str(NFTA_VERDICT_CHAIN, c);
    }
    w.close(verdict);
}

/// A map value: bytes, or a verdict.
pub enum ValueBytes<'a> {
    /// `NFTA_DATA_VALUE`.
    Data(Vec<u8>),
    /// `NFTA_DATA_VERDICT`.
    Verdict(&'a Verdict),
}

/// The encoding of a map element's value.
pub fn value_bytes(value: &ElemValue) -> ValueBytes<'_> {
    match value {
        ElemValue::Verdict(v) => ValueBytes::Verdict(v),
        ElemValue::Endpoint(to) => ValueBytes::Data(endpoint_bytes(to)),
    }
}

/// An address in network order.
pub fn addr(out: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

/// An `inet_proto`, padded to 4 bytes.
pub fn proto(out: &mut Vec<u8>, p: Protocol) {
    out.extend_from_slice(&[proto_number(p), 0, 0, 0]);
}

/// An `inet_service`, padded to 4 bytes.
pub fn port(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// The IP protocol number.
pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words nft's `--debug=netlink` prints for the bytes (host-order
    /// 32-bit words, as libnftnl prints them).
    pub(crate) fn words(bytes: &[u8]) -> String {
        bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                format!("{:08x}", u32::from_ne_bytes(w))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Each expectation is what `nft --debug=netlink` (1.0.6) printed for
    /// the same element (see the module's tests in `netlink/mod.rs`).
    #[test]
    fn keys_match_nfts_bytes() {
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let cases = [
            (ElemKey::Addr(v4("10.96.0.1")), "0100600a"),
            (
                ElemKey::AddrPair(v4("10.0.0.1"), v4("10.0.0.2")),
                "0100000a 0200000a",
            ),
            (
                ElemKey::AddrProtoPort(v4("10.96.0.1"), Protocol::Tcp, 80),
                "0100600a 00000006 00005000",
            ),
            (
                ElemKey::ProtoPort(Protocol::Tcp, 30000),
                "00000006 00003075",
            ),
            (
                ElemKey::LoadBalance(v4("10.96.0.1"), 80, 2),
                "0100600a 00005000 00000002",
            ),
            (
                ElemKey::AddrPair(v4("fd00::1"), v4("fd00::2")),
                "000000fd 00000000 00000000 01000000 000000fd 00000000 00000000 02000000",
            ),
            (
                ElemKey::LoadBalance(v4("fd00::1"), 53, 0),
                "000000fd 00000000 00000000 01000000 00003500 00000000",
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(words(&key_bytes(&key).unwrap()), expected, "{key:?}");
        }
        assert!(key_bytes(&ElemKey::Net("10.0.0.0/8".parse().unwrap())).is_none());
        assert_eq!(
            words(&endpoint_bytes(&"10.1.0.5:8080".parse().unwrap())),
            "0500010a 0000901f"
        );
        assert_eq!(
            words(&endpoint_bytes(&"[fd00::9]:5353".parse().unwrap())),
            "000000fd 00000000 00000000 09000000 0000e914"
        );
    }
}
