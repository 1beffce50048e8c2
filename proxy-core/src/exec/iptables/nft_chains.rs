//! The chain names of an iptables-nft table, asked of the kernel over
//! netlink (one `NFT_MSG_GETCHAIN` dump) instead of `iptables-nft-save`.
//!
//! iptables-nft keeps each iptables table as an nf_tables table of the same
//! name (`ip nat`, `ip6 filter`, …) and each iptables chain as a chain of
//! it. `iptables-nft-save -t nat` decodes every rule to print the chain
//! names: beside 10k Services × 10 endpoints (220k chains) it ran for
//! 331 s and 180 MiB before it crashed; the dump below returns the names
//! in tens of milliseconds and spawns nothing.

use std::io;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};

use crate::IpFamily;

/// nfnetlink subsystem of nf_tables.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// A chain, as the kernel describes it in a dump.
const NFT_MSG_NEWCHAIN: u16 = 3;
/// The chain request.
const NFT_MSG_GETCHAIN: u16 = 4;
/// The chain's table (string).
const NFTA_CHAIN_TABLE: u16 = 1;
/// The chain's name (string).
const NFTA_CHAIN_NAME: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// The ruleset changed while the kernel was dumping it.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFNETLINK_V0: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// nlmsghdr + nfgenmsg.
const HEADERS: usize = 16 + 4;
/// A dump interrupted by concurrent changes is asked again this many times.
const ATTEMPTS: usize = 3;

/// The names of the chains of nf_tables table `table` of `family` (the
/// iptables-nft table of that name), in the network namespace of the
/// calling thread; empty when the table does not exist. Unlike
/// `iptables-save`, built-in chains (`PREROUTING`, …) are named only once
/// they exist: iptables-nft creates them when first used. An error when
/// netlink is unavailable or the kernel refuses (`EPERM` without
/// `CAP_NET_ADMIN`).
pub fn chain_names(family: IpFamily, table: &str) -> io::Result<Vec<String>> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut last = None;
    for sequence in 1..=ATTEMPTS as u32 {
        socket.send(&dump_request(family, sequence), 0)?;
        let mut dump = Dump::new(table, sequence);
        loop {
            let (datagram, _) = socket.recv_from_full()?;
            if dump.read(&datagram)? {
                break;
            }
        }
        if !dump.interrupted {
            return Ok(dump.names);
        }
        last = Some(dump.names);
    }
    // Still changing after three dumps: the last one is as good as a save
    // taken at the same moment would have been.
    Ok(last.unwrap_or_default())
}

/// The `NFT_MSG_GETCHAIN` dump request for every chain of `family` (the
/// kernel does not filter chain dumps by table: [`Dump`] does).
pub fn dump_request(family: IpFamily, sequence: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADERS);
    out.extend_from_slice(&(HEADERS as u32).to_ne_bytes());
    out.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN).to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.push(match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    });
    out.push(NFNETLINK_V0);
    out.extend_from_slice(&0u16.to_be_bytes()); // res_id
    out
}

/// The answers to one dump request, read datagram by datagram.
#[derive(Debug)]
pub struct Dump<'a> {
    table: &'a str,
    sequence: u32,
    /// Chains of the table, in the kernel's order.
    pub names: Vec<String>,
    /// Whether the kernel said the ruleset changed during the dump.
    pub interrupted: bool,
}

impl<'a> Dump<'a> {
    /// A dump of the chains of `table`, answering request `sequence`.
    pub fn new(table: &'a str, sequence: u32) -> Self {
        Dump {
            table,
            sequence,
            names: Vec::new(),
            interrupted: false,
        }
    }

    /// Reads one datagram; `Ok(true)` once the dump is complete.
    pub fn read(&mut self, mut datagram: &[u8]) -> io::Result<bool> {
        while datagram.len() >= 16 {
            let len = u32_at(datagram, 0) as usize;
            if len < 16 || len > datagram.len() {
                return Err(invalid("truncated netlink answer"));
            }
            let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
            let flags = u16::from_ne_bytes([datagram[6], datagram[7]]);
            let message = &datagram[..len];
            if u32_at(datagram, 8) == self.sequence {
                self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match kind {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR => {
                        let code = message
                            .get(16..20)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .ok_or_else(|| invalid("netlink error message without a code"))?;
                        if code == 0 {
                            return Ok(true);
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    k if k == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN => {
                        let (table, name) = chain_of(message.get(HEADERS..).unwrap_or_default());
                        if let (Some(table), Some(name)) = (table, name)
                            && table == self.table
                        {
                            self.names.push(name);
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

/// The table and name attributes of a chain message's attributes.
fn chain_of(mut attributes: &[u8]) -> (Option<String>, Option<String>) {
    let (mut table, mut name) = (None, None);
    while attributes.len() >= 4 {
        let len = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if len < 4 || len > attributes.len() {
            break;
        }
        let value = || {
            let bytes = &attributes[4..len];
            let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
            String::from_utf8_lossy(bytes).into_owned()
        };
        match kind {
            NFTA_CHAIN_TABLE => table = Some(value()),
            NFTA_CHAIN_NAME => name = Some(value()),
            _ => {}
        }
        attributes = &attributes[len.next_multiple_of(4).min(attributes.len())..];
    }
    (table, name)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &str) -> Vec<u8> {
        let len = 4 + value.len() + 1;
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value.as_bytes());
        out.push(0);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    fn message(kind: u16, flags: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let len = HEADERS + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&sequence.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    fn chain(table: &str, name: &str, sequence: u32, flags: u16) -> Vec<u8> {
        let mut payload = attribute(NFTA_CHAIN_TABLE, table);
        payload.extend(attribute(NFTA_CHAIN_NAME, name));
        message(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN,
            flags,
            sequence,
            &payload,
        )
    }

    #[test]
    fn the_request_dumps_the_chains_of_one_family() {
        let request = dump_request(IpFamily::V6, 7);
        assert_eq!(request.len(), HEADERS);
        assert_eq!(u32_at(&request, 0) as usize, HEADERS);
        assert_eq!(
            u16::from_ne_bytes([request[4], request[5]]),
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN
        );
        assert_eq!(
            u16::from_ne_bytes([request[6], request[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(u32_at(&request, 8), 7);
        assert_eq!(request[16], NFPROTO_IPV6);
    }

    #[test]
    fn only_the_asked_tables_chains_are_kept_until_done() {
        let mut dump = Dump::new("nat", 2);
        let mut first = chain("nat", "PREROUTING", 2, 0);
        first.extend(chain("filter", "INPUT", 2, 0));
        first.extend(chain("nat", "KUBE-OLD", 1, 0)); // an earlier request's
        assert!(!unwrap(dump.read(&first)));
        let mut second = chain("nat", "KUBE-SVC-X", 2, NLM_F_DUMP_INTR);
        second.extend(message(NLMSG_DONE, 0, 2, &[]));
        assert!(unwrap(dump.read(&second)));
        assert_eq!(dump.names, ["PREROUTING", "KUBE-SVC-X"]);
        assert!(dump.interrupted);
    }

    #[test]
    fn a_refusal_is_the_kernels_errno_and_garbage_an_error() {
        let mut dump = Dump::new("nat", 1);
        let refused = message(NLMSG_ERROR, 0, 1, &[]);
        let mut refused = refused[..16].to_vec();
        refused.extend_from_slice(&(-1i32).to_ne_bytes()); // EPERM
        refused[0..4].copy_from_slice(&(20u32).to_ne_bytes());
        let error = dump.read(&refused).err();
        assert_eq!(error.and_then(|e| e.raw_os_error()), Some(1));
        let mut truncated = chain("nat", "X", 1, 0);
        truncated[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(Dump::new("nat", 1).read(&truncated).is_err());
    }

    fn unwrap<T>(result: io::Result<T>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Against the real kernel, in a throw-away network namespace: the dump
/// names exactly the chains `iptables-nft-save` prints, per table and
/// family.
#[cfg(all(test, feature = "netns"))]
mod kernel_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use std::collections::BTreeSet;

    use super::chain_names;
    use crate::IpFamily;
    use crate::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
    use crate::exec::iptables::{Iptables, Variant, save};
    use crate::exec::{Command, CommandLimits, Executor, Output, SystemExecutor};

    fn run(program: &str, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program} {args:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn chain_names_over_netlink_are_the_chains_iptables_nft_saves() {
        let test = "chain_names_over_netlink_are_the_chains_iptables_nft_saves";
        if !privileged_or_skip_with(test, || {
            check_tool("iptables-nft-restore", &["--version"], "iptables")
        }) {
            return;
        }
        let ns = Netns::new().unwrap();
        ns.run(|| {
            let nat = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAA - [0:0]\n:KUBE-SEP-BBBB - [0:0]\n\
                       -A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.0.0.1/32 -j KUBE-SVC-AAAA\n\
                       -A KUBE-SVC-AAAA -j KUBE-SEP-BBBB\nCOMMIT\n\
                       *filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n";
            run("iptables-nft-restore", &["--noflush"], nat);
            run("ip6tables-nft-restore", &["--noflush"], "*nat\n:KUBE-SVC-SIX - [0:0]\nCOMMIT\n");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            for (family, save_program) in [
                (IpFamily::V4, "iptables-nft-save"),
                (IpFamily::V6, "ip6tables-nft-save"),
            ] {
                for table in ["nat", "filter"] {
                    let saved = run(save_program, &["-t", table], "");
                    let saved: BTreeSet<String> = save::chains(&saved).into_iter().collect();
                    let dumped: BTreeSet<String> =
                        chain_names(family, table).unwrap().into_iter().collect();
                    assert!(dumped.is_subset(&saved), "{family:?} {table}: {dumped:?}");
                    // Built-in chains exist (and are dumped) once used;
                    // iptables-save prints them all.
                    let want: BTreeSet<String> = saved
                        .into_iter()
                        .filter(|c| c.starts_with("KUBE-") || dumped.contains(c))
                        .collect();
                    assert_eq!(dumped, want, "{family:?} {table}");
                    let tools =
                        Iptables::new(SystemExecutor::new(CommandLimits::default()), family, Variant::Nft);
                    let driven: BTreeSet<String> =
                        runtime.block_on(tools.chains(table)).unwrap().into_iter().collect();
                    assert_eq!(driven, want, "{family:?} {table} through the driver");
                }
                assert!(chain_names(family, "mangle").unwrap().is_empty(), "no mangle table");
            }
            let v4: BTreeSet<String> = chain_names(IpFamily::V4, "nat").unwrap().into_iter().collect();
            assert!(v4.contains("KUBE-SVC-AAAA") && !v4.contains("KUBE-SVC-SIX"));

            // Our canary in IPv4's mangle table decides the IPv6 backend's
            // variant without any nft save (both variants installed).
            run("iptables-nft-restore", &["--noflush"], "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n");
            let recording = Recording::default();
            if recording.has_program("ip6tables-legacy-restore") {
                let tools = runtime.block_on(Iptables::detect(&recording, IpFamily::V6)).unwrap();
                assert_eq!(tools.variant(), Variant::Nft);
                let ran = recording.ran.lock().unwrap().clone();
                assert!(!ran.iter().any(|c| c.contains("nft-save")), "no nft save: {ran:?}");
            } else {
                eprintln!("{test}: variant detection part skipped: ip6tables-legacy-restore is not installed (one variant: nothing to detect)");
            }
        })
        .unwrap();
    }

    /// The real executor, recording the command lines it runs.
    #[derive(Default)]
    struct Recording {
        inner: SystemExecutor,
        ran: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Executor for Recording {
        async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
            self.ran.lock().unwrap().push(cmd.to_string());
            self.inner.run(cmd).await
        }

        fn has_program(&self, program: &str) -> bool {
            self.inner.has_program(program)
        }

        fn reads_kernel(&self) -> bool {
            self.inner.reads_kernel()
        }
    }
}
