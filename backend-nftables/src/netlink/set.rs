//! A set's declaration as nft 1.0.6 writes it: key and data types (nft's
//! type numbers, concatenations 6 bits per field), lengths, flags, and the
//! user data nft reads back to print the set (byte order, `typeof`
//! expressions, comment). Checked against `nft --debug=mnl` (the tests).

use proxy_core::{IpFamily, Protocol};

use crate::ir::{KeyType, SetDef};

/// `NFT_SET_INTERVAL`.
const NFT_SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_MAP`.
const NFT_SET_MAP: u32 = 0x8;
/// `NFT_SET_TIMEOUT`.
const NFT_SET_TIMEOUT: u32 = 0x10;
/// `NFT_SET_EVAL`.
const NFT_SET_EVAL: u32 = 0x20;
/// `NFT_DATA_VERDICT`: the data type of verdict maps.
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// nft's type numbers.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_PROTO: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// Bits per field of a concatenated type.
const TYPE_BITS: u32 = 6;

/// The user data of a load-balancing map (`typeof FAMILY daddr . P dport .
/// numgen random mod 1 : FAMILY daddr . P dport`), with `PP` where nft
/// writes the protocol's header description.
const LOAD_BALANCE_V4: &str = "000400000000010400000000035000040d00000001480014000407000000010c00040c00000001040c0000000114000407000000010c0004PP000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c0004PP000000010402000000060400000000";
const LOAD_BALANCE_V6: &str = "000400000000010400000000035000040d00000001480014000407000000010c00040d0000000104090000000114000407000000010c0004PP000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040d0000000104090000000114000407000000010c0004PP000000010402000000060400000000";

/// What `NFTA_SET_*` carries for a set, less table, name and id.
#[derive(Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// `NFTA_SET_FLAGS`.
    pub flags: u32,
    /// `NFTA_SET_KEY_TYPE`.
    pub key_type: u32,
    /// `NFTA_SET_KEY_LEN`.
    pub key_len: u32,
    /// `NFTA_SET_DATA_TYPE` and `NFTA_SET_DATA_LEN`, for maps.
    pub data: Option<(u32, u32)>,
    /// `NFTA_SET_TIMEOUT`, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `NFTA_SET_USERDATA`.
    pub userdata: Vec<u8>,
}

fn concat(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| acc << TYPE_BITS | t)
}

/// The declaration of `set` in `family`'s table.
pub fn set_spec(family: IpFamily, set: &SetDef) -> SetSpec {
    let (addr, addr_len) = match family {
        IpFamily::V4 => (TYPE_IPV4_ADDR, 4),
        IpFamily::V6 => (TYPE_IPV6_ADDR, 16),
    };
    let (key_type, key_len) = match set.key {
        KeyType::Addr | KeyType::Net => (addr, addr_len),
        KeyType::AddrPair => (concat(&[addr, addr]), 2 * addr_len),
        KeyType::AddrProtoPort => (
            concat(&[addr, TYPE_INET_PROTO, TYPE_INET_SERVICE]),
            addr_len + 8,
        ),
        KeyType::ProtoPort => (concat(&[TYPE_INET_PROTO, TYPE_INET_SERVICE]), 8),
        KeyType::LoadBalance(_) => (
            concat(&[addr, TYPE_INET_SERVICE, TYPE_INTEGER]),
            addr_len + 8,
        ),
    };
    let mut flags = 0;
    if set.is_map() {
        flags |= NFT_SET_MAP;
    }
    if set.key == KeyType::Net {
        flags |= NFT_SET_INTERVAL;
    }
    if set.timeout.is_some() {
        flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
    }
    let data = if set.verdict_map {
        Some((NFT_DATA_VERDICT, 0))
    } else if let KeyType::LoadBalance(_) = set.key {
        Some((concat(&[addr, TYPE_INET_SERVICE]), addr_len + 4))
    } else {
        None
    };
    // NFTNL_UDATA_SET_*: KEYBYTEORDER 0, DATABYTEORDER 1, KEY_TYPEOF 3,
    // DATA_INTERVAL 6, COMMENT 7; each a TLV of one-byte type and length.
    let mut userdata = Vec::new();
    let single = matches!(set.key, KeyType::Addr | KeyType::Net);
    match set.key {
        KeyType::LoadBalance(proto) => {
            let template = match family {
                IpFamily::V4 => LOAD_BALANCE_V4,
                IpFamily::V6 => LOAD_BALANCE_V6,
            };
            let code = match proto {
                Protocol::Tcp => "08",
                Protocol::Udp => "06",
                Protocol::Sctp => "0a",
            };
            userdata = hex(&template.replace("PP", code));
        }
        _ => {
            // Key byte order: big endian for an address, none for a
            // concatenation.
            userdata.extend_from_slice(&[0, 4]);
            userdata.extend_from_slice(&(if single { 2u32 } else { 0 }).to_ne_bytes());
            if set.verdict_map {
                userdata.extend_from_slice(&[1, 4]);
                userdata.extend_from_slice(&0u32.to_ne_bytes());
            }
            if !single {
                // `typeof`: a concatenation (expression type 13), no data.
                userdata.extend_from_slice(&[3, 8, 0, 4]);
                userdata.extend_from_slice(&13u32.to_ne_bytes());
                userdata.extend_from_slice(&[1, 0]);
            }
            if set.verdict_map {
                userdata.extend_from_slice(&[6, 4]);
                userdata.extend_from_slice(&0u32.to_ne_bytes());
            }
        }
    }
    if let Some(c) = &set.comment {
        let text = proxy_core::model::rule_comment(c, crate::names::COMMENT_MAX);
        userdata.extend_from_slice(&super::attr::comment_udata(7, &text));
    }
    SetSpec {
        flags,
        key_type,
        key_len,
        data,
        timeout_ms: set.timeout.map(|s| u64::from(s) * 1000),
        userdata,
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        key: KeyType,
        verdict_map: bool,
        timeout: Option<u32>,
        comment: Option<&str>,
    ) -> SetDef {
        SetDef {
            name: "s".into(),
            key,
            verdict_map,
            timeout,
            comment: comment.map(str::to_string),
        }
    }

    fn text(s: &SetSpec) -> String {
        let mut out = format!("3={:08x} 4={:08x} 5={:08x}", s.flags, s.key_type, s.key_len);
        if let Some((t, l)) = s.data {
            out += &format!(" 6={t:08x} 7={l:08x}");
        }
        if let Some(ms) = s.timeout_ms {
            out += &format!(" 11={ms:016x}");
        }
        out += " 13=";
        for b in &s.userdata {
            out += &format!("{b:02x}");
        }
        out
    }

    /// What `nft --debug=mnl` (1.0.6) sent for the same declarations
    /// (attributes by number; user data without the attribute's padding).
    #[test]
    fn declarations_are_what_nft_sends() {
        use IpFamily::{V4, V6};
        let cases = [
            (
                V4,
                spec(KeyType::Addr, false, None, Some("Active ClusterIPs")),
                "3=00000000 4=00000007 5=00000004 13=000402000000071241637469766520436c757374657249507300",
            ),
            (
                V4,
                spec(KeyType::AddrPair, false, None, None),
                "3=00000000 4=000001c7 5=00000008 13=000400000000030800040d0000000100",
            ),
            (
                V4,
                spec(KeyType::AddrProtoPort, true, None, Some("x")),
                "3=00000008 4=0000730d 5=0000000c 6=ffffff00 7=00000000 13=000400000000010400000000030800040d000000010006040000000007027800",
            ),
            (
                V4,
                spec(KeyType::ProtoPort, true, None, None),
                "3=00000008 4=0000030d 5=00000008 6=ffffff00 7=00000000 13=000400000000010400000000030800040d0000000100060400000000",
            ),
            (
                V4,
                spec(KeyType::Net, false, None, Some("n")),
                "3=00000004 4=00000007 5=00000004 13=00040200000007026e00",
            ),
            (
                V4,
                spec(KeyType::Addr, false, Some(10800), Some("aff")),
                "3=00000030 4=00000007 5=00000004 11=0000000000a4cb80 13=000402000000070461666600",
            ),
            (
                V4,
                spec(KeyType::LoadBalance(Protocol::Udp), false, None, None),
                "3=00000008 4=00007344 5=0000000c 6=000001cd 7=00000008 13=000400000000010400000000035000040d00000001480014000407000000010c00040c00000001040c0000000114000407000000010c000406000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c000406000000010402000000060400000000",
            ),
            (
                V6,
                spec(KeyType::AddrProtoPort, true, None, Some("x")),
                "3=00000008 4=0000830d 5=00000018 6=ffffff00 7=00000000 13=000400000000010400000000030800040d000000010006040000000007027800",
            ),
            (
                V6,
                spec(KeyType::LoadBalance(Protocol::Sctp), false, None, None),
                "3=00000008 4=00008344 5=00000018 6=0000020d 7=00000014 13=000400000000010400000000035000040d00000001480014000407000000010c00040d0000000104090000000114000407000000010c00040a000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040d0000000104090000000114000407000000010c00040a000000010402000000060400000000",
            ),
            (
                V6,
                spec(KeyType::AddrPair, false, None, None),
                "3=00000000 4=00000208 5=00000020 13=000400000000030800040d0000000100",
            ),
        ];
        for (family, set, expected) in cases {
            assert_eq!(
                text(&set_spec(family, &set)),
                expected,
                "{family:?} {set:?}"
            );
        }
    }
}
