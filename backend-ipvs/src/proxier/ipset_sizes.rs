//! How many entries each ipset holds, read over `NETLINK_NETFILTER`
//! (`ipset list -t` without the command): one dump of the set headers
//! (`IPSET_CMD_LIST` with `IPSET_FLAG_LIST_HEADER`), whose
//! `IPSET_ATTR_DATA` carries the kernel's element count
//! (`IPSET_ATTR_ELEMENTS`). For the periodic verify, which runs no command.

use std::collections::HashMap;
use std::io;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use proxy_core::exec::netlink_datagram::recv_datagram;

/// `NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_LIST`.
const LIST: u16 = (6 << 8) | 7;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_REQUEST: u16 = 0x1 | 0x300;
/// `NLMSG_ERROR`, `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `IPSET_ATTR_PROTOCOL`, `_SETNAME`, `_FLAGS`, `_DATA`, `_ELEMENTS`.
const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_FLAGS: u16 = 6;
const ATTR_DATA: u16 = 7;
const ATTR_ELEMENTS: u16 = 24;
/// `IPSET_PROTOCOL_MIN`: every kernel since 3.x answers it.
const PROTOCOL: u8 = 6;
/// `IPSET_FLAG_LIST_HEADER`: headers only, no members.
const FLAG_LIST_HEADER: u32 = 1 << 2;
/// `NLA_F_NET_BYTEORDER`; the kind bits of an attribute type.
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `AF_INET` (the dump lists every family's sets whatever this says).
const AF_INET: u8 = 2;

/// One attribute, padded to 4 bytes.
fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The dump request with sequence number `sequence`.
fn request(sequence: u32) -> Vec<u8> {
    let mut body = vec![AF_INET, 0, 0, 0]; // nfgenmsg: family, version, res_id
    attribute(&mut body, ATTR_PROTOCOL, &[PROTOCOL]);
    attribute(
        &mut body,
        ATTR_FLAGS | NLA_F_NET_BYTEORDER,
        &FLAG_LIST_HEADER.to_be_bytes(),
    );
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&LIST.to_ne_bytes());
    out.extend_from_slice(&DUMP_REQUEST.to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

/// The attributes of `bytes` as `(kind, value)`.
fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > bytes.len() {
            break;
        }
        out.push((kind, &bytes[4..len]));
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    out
}

/// The set name and element count of one `IPSET_CMD_LIST` answer's
/// attributes (after the `nfgenmsg`).
fn parse_set(body: &[u8]) -> Option<(String, u32)> {
    let attrs = attributes(body);
    let name = attrs.iter().find(|(k, _)| *k == ATTR_SETNAME)?.1;
    let name = String::from_utf8_lossy(name.split(|b| *b == 0).next()?).into_owned();
    let data = attrs.iter().find(|(k, _)| *k == ATTR_DATA)?.1;
    let elements = attributes(data)
        .into_iter()
        .find(|(k, _)| *k == ATTR_ELEMENTS)?
        .1;
    let elements = u32::from_be_bytes(elements.get(..4)?.try_into().ok()?);
    Some((name, elements))
}

/// The datagrams' messages of sequence `sequence` into `sizes`; whether the
/// dump is done.
fn absorb(datagram: &[u8], sequence: u32, sizes: &mut HashMap<String, u32>) -> io::Result<bool> {
    let mut bytes = datagram;
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            ));
        }
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let seq = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let body = &bytes[16..len];
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
        if seq != sequence {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code == 0 {
                    return Ok(true);
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            LIST => {
                if let Some((name, elements)) = body.get(4..).and_then(parse_set) {
                    sizes.insert(name, elements);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Every ipset of the calling thread's network namespace with its number
/// of entries.
pub(crate) fn set_sizes() -> io::Result<HashMap<String, u32>> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let sequence = 1;
    socket.send(&request(sequence), 0)?;
    let mut sizes = HashMap::new();
    let mut datagram = Vec::new();
    loop {
        recv_datagram(&socket, &mut datagram)?;
        if absorb(&datagram, sequence, &mut sizes)? {
            return Ok(sizes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `LIST` answer for set `name` with `elements` entries.
    fn answer(sequence: u32, name: &str, elements: u32) -> Vec<u8> {
        let mut data = Vec::new();
        attribute(&mut data, 18 | NLA_F_NET_BYTEORDER, &1024u32.to_be_bytes());
        attribute(
            &mut data,
            ATTR_ELEMENTS | NLA_F_NET_BYTEORDER,
            &elements.to_be_bytes(),
        );
        let mut body = vec![AF_INET, 0, 0, 0];
        attribute(&mut body, ATTR_PROTOCOL, &[PROTOCOL]);
        let mut set_name = name.as_bytes().to_vec();
        set_name.push(0);
        attribute(&mut body, ATTR_SETNAME, &set_name);
        attribute(&mut body, 3, b"hash:ip,port\0");
        attribute(&mut body, ATTR_DATA | 0x8000, &data);
        let mut out = Vec::new();
        out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&LIST.to_ne_bytes());
        out.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
        out.extend_from_slice(&sequence.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The kernel's answer, in a throw-away namespace (root, `ipset`).
    #[test]
    fn the_kernel_reports_each_sets_entries() {
        use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
        if !privileged_or_skip_with("the_kernel_reports_each_sets_entries", || {
            check_tool("ipset", &["--version"], "ipset")
        }) {
            return;
        }
        let ns = Netns::new().unwrap();
        let script = "create T-HASH hash:ip,port family inet\n\
                      add T-HASH 10.96.0.1,tcp:80\nadd T-HASH 10.96.0.2,udp:53\n\
                      create T-PORTS bitmap:port range 0-65535\nadd T-PORTS 30080\n\
                      create T-EMPTY hash:ip family inet\n";
        let out = ns
            .command("ipset")
            .arg("restore")
            .output_with_input(script.as_bytes())
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sizes = ns.run(set_sizes).unwrap().unwrap();
        assert_eq!(
            sizes,
            HashMap::from([
                ("T-HASH".to_string(), 2),
                ("T-PORTS".to_string(), 1),
                ("T-EMPTY".to_string(), 0)
            ])
        );
        assert_eq!(
            set_sizes().map(|s| s.contains_key("T-HASH")).ok(),
            Some(false),
            "per namespace"
        );
    }

    #[test]
    fn the_request_is_a_header_dump_of_every_set() {
        let bytes = request(9);
        assert_eq!(bytes.len(), 16 + 4 + 8 + 8);
        assert_eq!(&bytes[4..6], &LIST.to_ne_bytes());
        assert_eq!(&bytes[6..8], &0x301u16.to_ne_bytes());
        assert_eq!(&bytes[8..12], &9u32.to_ne_bytes());
        assert_eq!(
            attributes(&bytes[20..]),
            [(ATTR_PROTOCOL, &[6u8][..]), (ATTR_FLAGS, &[0, 0, 0, 4][..])]
        );
    }

    #[test]
    fn answers_give_each_sets_element_count_until_done() {
        let mut datagram = answer(1, "KUBE-CLUSTER-IP", 10_000);
        datagram.extend(answer(1, "KUBE-LOOP-BACK", 0));
        datagram.extend(answer(2, "OTHER-DUMP", 5));
        let mut sizes = HashMap::new();
        assert!(!absorb(&datagram, 1, &mut sizes).unwrap());
        assert_eq!(
            sizes,
            HashMap::from([
                ("KUBE-CLUSTER-IP".to_string(), 10_000),
                ("KUBE-LOOP-BACK".to_string(), 0)
            ])
        );
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(absorb(&done, 1, &mut sizes).unwrap());
        let mut error = done.clone();
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[16..20].copy_from_slice(&(-93i32).to_ne_bytes());
        assert_eq!(
            absorb(&error, 1, &mut sizes).unwrap_err().raw_os_error(),
            Some(93)
        );
    }
}
