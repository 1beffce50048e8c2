//! Against the real kernel, in a throw-away network namespace: the chain
//! names dumped over netlink ([`crate::exec::nft_netlink::chain_names`])
//! are exactly the chains `iptables-nft-save` prints, per table and family,
//! single chains are looked up by name ([`crate::exec::nft_netlink::chain_exists`]),
//! and variant detection with our canary in place runs no nft save.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;

use crate::IpFamily;
use crate::conformance::netns::{Netns, check_tool, privileged_or_skip_with, run_tool};
use crate::exec::iptables::{Iptables, Variant, save};
use crate::exec::nft_netlink::{chain_exists, chain_names};
use crate::exec::{Command, CommandLimits, Executor, Output, SystemExecutor};

/// Runs `program args…` with `stdin` in the calling thread's namespace;
/// its standard output.
fn run(program: &str, args: &[&str], stdin: &str) -> String {
    run_tool(program, args, stdin).unwrap()
}

#[test]
fn chain_names_over_netlink_are_the_chains_iptables_nft_saves() {
    let test = "chain_names_over_netlink_are_the_chains_iptables_nft_saves";
    if !privileged_or_skip_with(test, || {
        check_tool("iptables-nft-restore", &["--version"], "iptables")
    }) {
        return;
    }
    Netns::new().unwrap().block_on(|| async {
        let nat = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAA - [0:0]\n:KUBE-SEP-BBBB - [0:0]\n\
                   -A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.0.0.1/32 -j KUBE-SVC-AAAA\n\
                   -A KUBE-SVC-AAAA -j KUBE-SEP-BBBB\nCOMMIT\n\
                   *filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n";
        run("iptables-nft-restore", &["--noflush"], nat);
        run("ip6tables-nft-restore", &["--noflush"], "*nat\n:KUBE-SVC-SIX - [0:0]\nCOMMIT\n");
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
                    tools.chains(table).await.unwrap().into_iter().collect();
                assert_eq!(driven, want, "{family:?} {table} through the driver");
            }
            assert!(chain_names(family, "mangle").unwrap().is_empty(), "no mangle table");
            // Several tables at once (the IPVS cleanup's question).
            let tools =
                Iptables::new(SystemExecutor::new(CommandLimits::default()), family, Variant::Nft);
            let both = tools.chains_of(&["nat", "filter"]).await.unwrap();
            let pair = |t: &str, c: &str| both.contains(&(t.to_string(), c.to_string()));
            match family {
                IpFamily::V4 => assert!(pair("nat", "KUBE-SVC-AAAA") && pair("filter", "KUBE-FORWARD")),
                IpFamily::V6 => assert!(pair("nat", "KUBE-SVC-SIX") && !pair("nat", "KUBE-SVC-AAAA")),
            }
        }
        let v4: BTreeSet<String> = chain_names(IpFamily::V4, "nat").unwrap().into_iter().collect();
        assert!(v4.contains("KUBE-SVC-AAAA") && !v4.contains("KUBE-SVC-SIX"));

        // Our canary in IPv4's mangle table decides the IPv6 backend's
        // variant without any nft save (both variants installed).
        run("iptables-nft-restore", &["--noflush"], "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n");
        // Chains looked up one by one: present, absent, absent table.
        assert!(chain_exists(IpFamily::V4, "mangle", "KUBE-PROXY-CANARY").unwrap());
        assert!(chain_exists(IpFamily::V4, "nat", "KUBE-SVC-AAAA").unwrap());
        assert!(!chain_exists(IpFamily::V4, "mangle", "KUBE-IPTABLES-HINT").unwrap());
        assert!(!chain_exists(IpFamily::V4, "nat", "KUBE-SVC-SIX").unwrap());
        assert!(!chain_exists(IpFamily::V6, "mangle", "KUBE-PROXY-CANARY").unwrap());
        let recording = Recording::default();
        if recording.has_program("ip6tables-legacy-restore") {
            let tools = Iptables::detect(&recording, IpFamily::V6).await.unwrap();
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
