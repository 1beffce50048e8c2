//! Questions about the nf_tables ruleset asked of the kernel over
//! `NETLINK_NETFILTER`, whose cost does not grow with the rules: "does
//! table T of family F exist?" (one `NFT_MSG_GETTABLE` request,
//! [`table_exists`]), "does chain C of table T exist?" (one
//! `NFT_MSG_GETCHAIN`, [`chain_exists`]: a lookup, where a dump of chain
//! names walks every chain of the family), and dumps of table or chain
//! names ([`dump`]). `nft
//! list tables` (nft 1.0.6) loads the whole ruleset to print the table
//! names, and `iptables-nft-save` decodes every rule to print chain names:
//! seconds to minutes and hundreds of MiB beside a 10k-Service table.
//!
//! The socket is opened per question on the calling thread, so the answer
//! is about the network namespace of that thread.

use std::io;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};

use super::netlink_datagram::recv_datagram;
use crate::IpFamily;

/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWTABLE`: the kernel's answer describing a table.
const NFT_MSG_NEWTABLE: u16 = 0;
/// `NFT_MSG_GETTABLE`.
const NFT_MSG_GETTABLE: u16 = 1;
/// `NFTA_TABLE_NAME`.
const NFTA_TABLE_NAME: u16 = 1;
/// `NFT_MSG_NEWCHAIN`: the kernel's answer describing a chain.
const NFT_MSG_NEWCHAIN: u16 = 3;
/// `NFT_MSG_GETCHAIN`.
const NFT_MSG_GETCHAIN: u16 = 4;
/// `NFTA_CHAIN_TABLE`.
const NFTA_CHAIN_TABLE: u16 = 1;
/// `NFTA_CHAIN_NAME`.
const NFTA_CHAIN_NAME: u16 = 3;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 4;
/// `NLMSG_ERROR`: an acknowledgement (error 0) or an error.
const NLMSG_ERROR: u16 = 2;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;
/// `NFPROTO_IPV4`.
const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
const NFPROTO_IPV6: u8 = 10;
/// `ENOENT`: no such table.
const ENOENT: i32 = 2;
/// `nlmsghdr` + `nfgenmsg`.
const HEADERS: usize = 16 + 4;

/// Whether table `name` of `family` exists in the network namespace of the
/// calling thread. An error when netlink is unavailable or the kernel
/// refuses (`EPERM` without `CAP_NET_ADMIN`).
pub fn table_exists(family: IpFamily, name: &str) -> io::Result<bool> {
    object_exists(&get_table_request(family, name, SEQUENCE))
}

/// Whether chain `chain` of table `table` of `family` exists in the network
/// namespace of the calling thread (errors as [`table_exists`]). The
/// kernel looks the chain up by name: beside the 330k chains of a
/// 30k-Service iptables `nat` table this is one round trip, where a dump of
/// the chain names walks them all (seconds).
pub fn chain_exists(family: IpFamily, table: &str, chain: &str) -> io::Result<bool> {
    let request = get_request(
        NFT_MSG_GETCHAIN,
        &[(NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, chain)],
        SEQUENCE,
        family,
    );
    object_exists(&request)
}

/// The sequence number of a single-object request (one per socket).
const SEQUENCE: u32 = 1;

/// Sends `request` (a single-object get, sequence [`SEQUENCE`]) and tells
/// whether the kernel found the object.
fn object_exists(request: &[u8]) -> io::Result<bool> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(request, 0)?;
    let mut seen = false;
    let mut datagram = Vec::new();
    loop {
        recv_datagram(&socket, &mut datagram)?;
        if let Some(answer) = read_answer(&datagram, SEQUENCE, &mut seen) {
            return answer;
        }
    }
}

/// The `NFT_MSG_GETTABLE` request for table `name` of `family` (a single
/// table, not a dump; acknowledged).
pub fn get_table_request(family: IpFamily, name: &str, sequence: u32) -> Vec<u8> {
    get_request(
        NFT_MSG_GETTABLE,
        &[(NFTA_TABLE_NAME, name)],
        sequence,
        family,
    )
}

/// A single-object (not dump), acknowledged `message` request carrying the
/// string attributes `attributes`.
fn get_request(
    message: u16,
    attributes: &[(u16, &str)],
    sequence: u32,
    family: IpFamily,
) -> Vec<u8> {
    // Each attribute: its header, the NUL-terminated string, padding to 4.
    let padded = |value: &str| (4 + value.len() + 1).next_multiple_of(4);
    let total = HEADERS + attributes.iter().map(|(_, v)| padded(v)).sum::<usize>();
    let mut out = headers(total, message, NLM_F_REQUEST | NLM_F_ACK, sequence, family);
    for (kind, value) in attributes {
        let len = 4 + value.len() + 1;
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// Reads one datagram of answers to request `sequence`: `Some` once the
/// kernel has acknowledged or refused it, `None` to read on. `seen` keeps
/// whether an nf_tables answer describing the object came (before the
/// acknowledgement).
pub fn read_answer(
    mut datagram: &[u8],
    sequence: u32,
    seen: &mut bool,
) -> Option<io::Result<bool>> {
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        let seq = u32::from_ne_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
        if len < 16 || len > datagram.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink answer",
            )));
        }
        if seq == sequence {
            if kind == NLMSG_ERROR {
                let Some(code) = datagram.get(16..20) else {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink error message without a code",
                    )));
                };
                let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                return Some(match -code {
                    0 => Ok(true),
                    ENOENT => Ok(false),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                });
            }
            if kind >> 8 == NFNL_SUBSYS_NFTABLES {
                *seen = true;
            }
        }
        datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
    }
    if *seen {
        // The acknowledgement follows in the next datagram; the object
        // exists either way.
        return Some(Ok(true));
    }
    None
}

/// The nlmsghdr and nfgenmsg of an nf_tables request of `total` bytes.
fn headers(total: usize, message: u16, flags: u16, sequence: u32, family: IpFamily) -> Vec<u8> {
    let mut out = Vec::with_capacity(total);
    // nlmsghdr
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | message).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // nfgenmsg
    out.push(match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    });
    out.push(NFNETLINK_V0);
    out.extend_from_slice(&0u16.to_be_bytes()); // res_id
    out
}

/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
const NLM_F_DUMP: u16 = 0x300;
/// The ruleset changed while the kernel was dumping it.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLMSG_DONE`: the end of a dump.
const NLMSG_DONE: u16 = 3;
/// A dump interrupted by concurrent changes is asked again this many times.
const DUMP_ATTEMPTS: u32 = 3;

/// What a dump lists: headers only (names), never rules, sets or elements,
/// so its cost does not grow with the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Every table of the family (`NFT_MSG_GETTABLE`).
    Tables,
    /// Every chain of every table of the family (`NFT_MSG_GETCHAIN`; the
    /// kernel does not filter chain dumps by table).
    Chains,
}

impl Listed {
    /// The request and the answers' message types.
    fn messages(self) -> (u16, u16) {
        match self {
            Listed::Tables => (NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE),
            Listed::Chains => (NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN),
        }
    }

    /// The attribute naming the object (`NFTA_TABLE_NAME`,
    /// `NFTA_CHAIN_NAME`); attribute 1 is the table in both.
    fn name_attribute(self) -> u16 {
        match self {
            Listed::Tables => NFTA_TABLE_NAME,
            Listed::Chains => NFTA_CHAIN_NAME,
        }
    }
}

/// One object of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumped {
    /// Its table (a table's own name, for tables).
    pub table: String,
    /// Its name.
    pub name: String,
}

/// Every object `what` lists in `family`, in the network namespace of the
/// calling thread, in the kernel's order. A dump the kernel marks
/// interrupted (the ruleset changed meanwhile) is asked again, up to three
/// times; the last one stands, as a listing taken at that moment would.
pub fn dump(family: IpFamily, what: Listed) -> io::Result<Vec<Dumped>> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut last = Vec::new();
    for sequence in 1..=DUMP_ATTEMPTS {
        socket.send(&dump_request(family, what, sequence), 0)?;
        let mut reader = DumpReader::new(what, sequence);
        let mut datagram = Vec::new();
        loop {
            recv_datagram(&socket, &mut datagram)?;
            if reader.read(&datagram)? {
                break;
            }
        }
        if !reader.interrupted {
            return Ok(reader.objects);
        }
        last = reader.objects;
    }
    Ok(last)
}

/// Whether a dump of the tables of `family` lists table `name`: an answer
/// independent of [`table_exists`]'s single-table request, as cheap
/// whatever the size of the ruleset (`nft list tables` loads it all:
/// hundreds of MiB beside a 10k-Service table).
pub fn table_listed(family: IpFamily, name: &str) -> io::Result<bool> {
    Ok(dump(family, Listed::Tables)?.iter().any(|t| t.name == name))
}

/// The names of the chains of table `table` of `family` (for iptables-nft,
/// the iptables table of that name), empty when the table does not exist.
/// Unlike `iptables-save`, built-in chains (`PREROUTING`, …) are named only
/// once they exist: iptables-nft creates them when first used.
/// `iptables-nft-save -t nat` decodes every rule to print the names: beside
/// 10k Services × 10 endpoints (220k chains) it ran 331 s and crashed.
pub fn chain_names(family: IpFamily, table: &str) -> io::Result<Vec<String>> {
    Ok(dump(family, Listed::Chains)?
        .into_iter()
        .filter(|c| c.table == table)
        .map(|c| c.name)
        .collect())
}

/// The dump request for `what` of `family` (headers only, no attribute).
pub fn dump_request(family: IpFamily, what: Listed, sequence: u32) -> Vec<u8> {
    headers(
        HEADERS,
        what.messages().0,
        NLM_F_REQUEST | NLM_F_DUMP,
        sequence,
        family,
    )
}

/// The answers to one dump request, read datagram by datagram.
#[derive(Debug)]
pub struct DumpReader {
    what: Listed,
    sequence: u32,
    /// The objects listed so far.
    pub objects: Vec<Dumped>,
    /// Whether the kernel said the ruleset changed during the dump.
    pub interrupted: bool,
}

impl DumpReader {
    /// A reader of the answers to dump request `sequence` for `what`.
    pub fn new(what: Listed, sequence: u32) -> Self {
        DumpReader {
            what,
            sequence,
            objects: Vec::new(),
            interrupted: false,
        }
    }

    /// Reads one datagram; `Ok(true)` once the dump is complete, an error
    /// when the kernel refused it or the answer is truncated.
    pub fn read(&mut self, mut datagram: &[u8]) -> io::Result<bool> {
        let listed = NFNL_SUBSYS_NFTABLES << 8 | self.what.messages().1;
        while datagram.len() >= 16 {
            let len =
                u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
            let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
            let flags = u16::from_ne_bytes([datagram[6], datagram[7]]);
            let seq = u32::from_ne_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
            if len < 16 || len > datagram.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink answer",
                ));
            }
            if seq == self.sequence {
                self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match kind {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR => {
                        let code = datagram
                            .get(16..20)
                            .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(true);
                    }
                    k if k == listed => {
                        let attributes = &datagram[HEADERS.min(len)..len];
                        if let (Some(table), Some(name)) = (
                            attribute(attributes, 1),
                            attribute(attributes, self.what.name_attribute()),
                        ) {
                            self.objects.push(Dumped { table, name });
                        }
                    }
                    _ => {}
                }
            }
            datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
        }
        Ok(false)
    }
}

/// The string attribute `wanted` of a message's attributes, without its NUL.
fn attribute(mut attributes: &[u8], wanted: u16) -> Option<String> {
    while attributes.len() >= 4 {
        let len = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind == wanted {
            let value = &attributes[4..len];
            let value = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        attributes = &attributes[len.next_multiple_of(4).min(attributes.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_one_gettable_with_the_name_not_a_dump() {
        let bytes = get_table_request(IpFamily::V6, "kube-proxy", 7);
        // 16 (nlmsghdr) + 4 (nfgenmsg) + 4 + "kube-proxy\0" (11) padded to 16.
        assert_eq!(bytes.len(), 36);
        assert_eq!(
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            36
        );
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), (10 << 8) | 1);
        let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
        assert_eq!(flags, 1 | 4, "NLM_F_REQUEST | NLM_F_ACK, no NLM_F_DUMP");
        assert_eq!(
            u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            7
        );
        assert_eq!(bytes[16], 10, "NFPROTO_IPV6");
        assert_eq!(bytes[17], 0, "NFNETLINK_V0");
        assert_eq!(
            u16::from_ne_bytes([bytes[20], bytes[21]]),
            15,
            "attribute length"
        );
        assert_eq!(
            u16::from_ne_bytes([bytes[22], bytes[23]]),
            1,
            "NFTA_TABLE_NAME"
        );
        assert_eq!(&bytes[24..35], b"kube-proxy\0");
        assert_eq!(bytes[35], 0, "padding");

        let v4 = get_table_request(IpFamily::V4, "abc", 1);
        assert_eq!(v4.len(), 28);
        assert_eq!(v4[16], 2, "NFPROTO_IPV4");
        assert_eq!(u16::from_ne_bytes([v4[20], v4[21]]), 8);
    }

    #[test]
    fn the_chain_request_names_table_and_chain_and_is_not_a_dump() {
        let bytes = get_request(
            NFT_MSG_GETCHAIN,
            &[
                (NFTA_CHAIN_TABLE, "mangle"),
                (NFTA_CHAIN_NAME, "KUBE-PROXY-CANARY"),
            ],
            3,
            IpFamily::V4,
        );
        // Headers 20, "mangle\0" 4 + 7 → 12, "KUBE-PROXY-CANARY\0" 4 + 18 → 24.
        assert_eq!(bytes.len(), 56);
        assert_eq!(
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            56
        );
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), (10 << 8) | 4);
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            1 | 4,
            "no NLM_F_DUMP"
        );
        assert_eq!(u16::from_ne_bytes([bytes[20], bytes[21]]), 11);
        assert_eq!(
            u16::from_ne_bytes([bytes[22], bytes[23]]),
            1,
            "NFTA_CHAIN_TABLE"
        );
        assert_eq!(&bytes[24..31], b"mangle\0");
        assert_eq!(u16::from_ne_bytes([bytes[32], bytes[33]]), 22);
        assert_eq!(
            u16::from_ne_bytes([bytes[34], bytes[35]]),
            3,
            "NFTA_CHAIN_NAME"
        );
        assert_eq!(&bytes[36..54], b"KUBE-PROXY-CANARY\0");
        // A NEWCHAIN answer, then the acknowledgement, means present.
        let mut seen = false;
        assert!(
            read_answer(
                &object(3, 3, 0, "mangle", Some("KUBE-PROXY-CANARY")),
                3,
                &mut seen
            )
            .unwrap()
            .unwrap()
        );
    }

    fn message(kind: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&sequence.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    fn error(sequence: u32, code: i32) -> Vec<u8> {
        let mut payload = code.to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]); // the request's header
        message(NLMSG_ERROR, sequence, &payload)
    }

    fn attribute_bytes(kind: u16, value: &str) -> Vec<u8> {
        let len = 4 + value.len() + 1;
        let mut out = (len as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value.as_bytes());
        out.push(0);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    /// A listed object: nfgenmsg, then its table and name attributes.
    fn object(kind: u16, sequence: u32, flags: u16, table: &str, name: Option<&str>) -> Vec<u8> {
        let mut payload = vec![10, 0, 0, 0];
        payload.extend(attribute_bytes(1, table));
        if let Some(name) = name {
            payload.extend(attribute_bytes(3, name));
        }
        let mut out = message(10 << 8 | kind, sequence, &payload);
        out[6..8].copy_from_slice(&flags.to_ne_bytes());
        out
    }

    #[test]
    fn dump_requests_name_the_object_kind_and_ask_for_a_dump() {
        let request = dump_request(IpFamily::V6, Listed::Chains, 7);
        assert_eq!(request.len(), HEADERS);
        assert_eq!(u16::from_ne_bytes([request[4], request[5]]), 10 << 8 | 4);
        assert_eq!(u16::from_ne_bytes([request[6], request[7]]), 1 | 0x300);
        assert_eq!(request[16], NFPROTO_IPV6);
        let tables = dump_request(IpFamily::V4, Listed::Tables, 1);
        assert_eq!(u16::from_ne_bytes([tables[4], tables[5]]), 10 << 8 | 1);
    }

    #[test]
    fn dumps_list_tables_by_name() {
        let mut reader = DumpReader::new(Listed::Tables, 5);
        let mut datagram = object(0, 5, 0, "filter", None);
        datagram.extend(object(0, 5, 0, "kube-proxy", None));
        assert!(!reader.read(&datagram).unwrap());
        assert!(reader.read(&message(NLMSG_DONE, 5, &[0; 4])).unwrap());
        let names: Vec<&str> = reader.objects.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["filter", "kube-proxy"]);
        assert!(!reader.interrupted);
        assert!(
            DumpReader::new(Listed::Tables, 5)
                .read(&error(5, -1))
                .is_err()
        );
    }

    #[test]
    fn chain_dumps_keep_table_and_name_and_notice_interruptions() {
        let mut reader = DumpReader::new(Listed::Chains, 2);
        let mut first = object(3, 2, 0, "nat", Some("PREROUTING"));
        first.extend(object(3, 2, 0, "filter", Some("INPUT")));
        first.extend(object(3, 1, 0, "nat", Some("KUBE-OLD"))); // an earlier request's
        assert!(!reader.read(&first).unwrap());
        let mut second = object(3, 2, NLM_F_DUMP_INTR, "nat", Some("KUBE-SVC-X"));
        second.extend(message(NLMSG_DONE, 2, &[0; 4]));
        assert!(reader.read(&second).unwrap());
        let nat: Vec<&str> = reader
            .objects
            .iter()
            .filter(|c| c.table == "nat")
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(nat, ["PREROUTING", "KUBE-SVC-X"]);
        assert_eq!(reader.objects.len(), 3);
        assert!(reader.interrupted);
        let mut truncated = object(3, 1, 0, "nat", Some("X"));
        truncated[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(DumpReader::new(Listed::Chains, 1).read(&truncated).is_err());
    }

    #[test]
    fn answers_are_read_as_exists_absent_or_refused() {
        let mut seen = false;
        assert!(matches!(
            read_answer(&error(3, -2), 3, &mut seen),
            Some(Ok(false))
        ));
        assert!(matches!(
            read_answer(&error(3, 0), 3, &mut seen),
            Some(Ok(true))
        ));
        let refused = read_answer(&error(3, -1), 3, &mut seen);
        assert!(
            matches!(&refused, Some(Err(e)) if e.raw_os_error() == Some(1)),
            "{refused:?}"
        );

        // The table's description, then the acknowledgement, in one datagram.
        let mut both = message(10 << 8, 3, &[10, 0, 0, 0]);
        both.extend(error(3, 0));
        assert!(matches!(read_answer(&both, 3, &mut seen), Some(Ok(true))));

        // Only the description: it exists, whatever the next datagram says.
        let mut seen = false;
        let table = message(10 << 8, 3, &[10, 0, 0, 0]);
        assert!(matches!(read_answer(&table, 3, &mut seen), Some(Ok(true))));

        // Answers to other requests are skipped; nothing yet means read on.
        let mut seen = false;
        assert!(read_answer(&error(4, -2), 3, &mut seen).is_none());
        assert!(read_answer(&message(10 << 8, 4, &[2, 0, 0, 0]), 3, &mut seen).is_none());
        assert!(!seen);

        let truncated = &error(3, 0)[..10];
        assert!(read_answer(truncated, 3, &mut seen).is_none());
        let mut lying = error(3, 0);
        lying[0] = 200;
        assert!(matches!(read_answer(&lying, 3, &mut seen), Some(Err(_))));
    }
}

/// Against the real kernel, in a throw-away network namespace, through
/// [`Nft::has_table`](super::nft::Nft::has_table) with an executor that
/// refuses every command: the answers come from netlink, no `nft` runs.
#[cfg(all(test, feature = "netns"))]
mod kernel_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::IpFamily;
    use crate::conformance::netns::{Netns, check_tool, privileged_or_skip_with, run_tool};
    use crate::exec::nft::Nft;
    use crate::exec::{Command, Executor, Output};

    /// Fails every command it is asked to run, counting them.
    #[derive(Default)]
    struct Refusing(AtomicUsize);

    #[async_trait::async_trait]
    impl Executor for Refusing {
        async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(std::io::Error::other(format!("no command may run: {cmd}")))
        }

        fn has_program(&self, _: &str) -> bool {
            false
        }
    }

    /// Runs `nft args…` (inside the namespace of the calling thread).
    fn nft(args: &[&str]) {
        run_tool("nft", args, "").unwrap();
    }

    #[test]
    fn tables_are_found_over_netlink_without_running_nft() {
        let test = "tables_are_found_over_netlink_without_running_nft";
        if !privileged_or_skip_with(test, || check_tool("nft", &["--version"], "nftables")) {
            return;
        }
        Netns::new()
            .unwrap()
            .block_on(|| async {
                let refusing = Arc::new(Refusing::default());
                let driver = Nft::with_executor(refusing.clone());
                let exists = |family, name: &'static str| {
                    let driver = driver.clone();
                    async move { driver.has_table(family, name).await.unwrap() }
                };
                assert!(!exists(IpFamily::V6, "kube-proxy").await, "absent table");
                nft(&["add", "table", "ip6", "kube-proxy"]);
                assert!(exists(IpFamily::V6, "kube-proxy").await, "table just added");
                let listed = |family, name| super::table_listed(family, name).unwrap();
                assert!(listed(IpFamily::V6, "kube-proxy"), "dump: table just added");
                assert!(!listed(IpFamily::V4, "kube-proxy"), "dump: other family");
                assert!(!listed(IpFamily::V6, "kube-prox"), "dump: other name");
                assert!(!exists(IpFamily::V4, "kube-proxy").await, "other family");
                assert!(!exists(IpFamily::V6, "kube-prox").await, "other name");
                nft(&["add", "table", "ip", "kube-proxy"]);
                assert!(exists(IpFamily::V4, "kube-proxy").await, "ip table added");
                nft(&["delete", "table", "ip6", "kube-proxy"]);
                assert!(!exists(IpFamily::V6, "kube-proxy").await, "table deleted");
                assert_eq!(refusing.0.load(Ordering::SeqCst), 0, "no command ran");
            })
            .unwrap();
    }
}
