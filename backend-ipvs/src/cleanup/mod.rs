//! Removing what upstream's IPVS mode leaves behind, in upstream's order
//! (`pkg/proxy/ipvs/cleanup.go`, `cleanupLeftovers`):
//!
//! 1. flush the IPVS virtual servers ([`virtual_servers`]);
//! 2. delete the `kube-ipvs0` link ([`dummy_device`]);
//! 3. remove the iptables jumps and chains ([`iptables`]);
//! 4. destroy the ipsets ([`ipsets`]), once no rule references them.
//!
//! Every step first looks at what exists and acts only on that, and takes
//! "not found" as done, so the cleanup is idempotent and a host that never
//! ran the IPVS mode sees no change and no error. A failing step does not
//! stop the next ones; the failures are returned together.

mod dummy_device;
mod ipsets;
mod iptables;
mod virtual_servers;

use proxy_core::IpFamily;

use crate::error::IpvsError;
use crate::host::Host;

/// Runs the four steps for `family`. Steps 1 and 2 are not per family
/// (one IPVS table, one link): the first call does them, later calls find
/// nothing left.
pub(crate) async fn cleanup_leftovers(host: &dyn Host, family: IpFamily) -> Result<(), IpvsError> {
    let mut failures = Vec::new();
    failures.extend(virtual_servers::flush(host).await.err());
    failures.extend(dummy_device::delete(host).await.err());
    failures.extend(iptables::remove_chains(host, family).await);
    failures.extend(ipsets::destroy(host, family).await);
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(IpvsError::Several(failures)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const IP_VS: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
        Prot LocalAddress:Port Scheduler Flags\n\
        \x20 -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
        TCP  0A600001:0050 rr\n";
    const DEV: &str = "Inter-|   Receive\n face |bytes\n    lo: 0 0\nkube-ipvs0: 0 0\n";
    const SAVE: &str = "*nat\n:POSTROUTING ACCEPT [0:0]\n:KUBE-POSTROUTING - [0:0]\nCOMMIT\n";
    const TOOLS: [&str; 5] = [
        "ipvsadm",
        "ip",
        "iptables-nft",
        "iptables-nft-save",
        "ipset",
    ];

    fn host_after_ipvs_mode() -> FakeHost {
        FakeHost::new()
            .with_programs(&TOOLS)
            .with_proc_net("ip_vs", IP_VS)
            .with_proc_net("dev", DEV)
            .respond("iptables-nft-save", FakeHost::ok(SAVE))
            .default_for(
                "iptables-nft -w 5 -W 100000 -t nat -D",
                FakeHost::fail(
                    1,
                    "iptables: Bad rule (does a matching rule exist in that chain?).",
                ),
            )
            .respond("ipset list -n", FakeHost::ok("KUBE-LOOP-BACK\nOTHER\n"))
    }

    #[tokio::test]
    async fn the_steps_run_in_upstream_order() {
        let host = host_after_ipvs_mode();
        cleanup_leftovers(&host, IpFamily::V4).await.unwrap();
        assert_eq!(
            host.commands(),
            [
                "ipvsadm -C",
                "ip link del kube-ipvs0",
                "iptables-nft-save",
                "iptables-nft -w 5 -W 100000 -t nat -D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
                "iptables-nft -w 5 -W 100000 -t nat -F KUBE-POSTROUTING",
                "iptables-nft -w 5 -W 100000 -t nat -X KUBE-POSTROUTING",
                "ipset list -n",
                "ipset destroy KUBE-LOOP-BACK",
            ]
        );
    }

    #[tokio::test]
    async fn a_host_that_never_ran_ipvs_sees_only_lookups_and_no_error() {
        let host = FakeHost::new()
            .with_programs(&TOOLS)
            .with_proc_net("dev", "    lo: 0 0\n  eth0: 0 0\n")
            .respond(
                "iptables-nft-save",
                FakeHost::ok("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"),
            )
            .respond("ipset list -n", FakeHost::ok(""));
        cleanup_leftovers(&host, IpFamily::V4).await.unwrap();
        assert_eq!(host.commands(), ["iptables-nft-save", "ipset list -n"]);
    }

    #[tokio::test]
    async fn failures_do_not_stop_later_steps_and_are_all_reported() {
        let host = host_after_ipvs_mode()
            .respond("ipvsadm -C", FakeHost::fail(1, "Permission denied"))
            .respond(
                "ipset destroy KUBE-LOOP-BACK",
                FakeHost::fail(
                    1,
                    "Set cannot be destroyed: it is in use by a kernel component",
                ),
            );
        let error = cleanup_leftovers(&host, IpFamily::V4).await.unwrap_err();
        let IpvsError::Several(failures) = &error else {
            panic!("expected several failures, got {error}");
        };
        assert_eq!(failures.len(), 2);
        assert!(
            host.commands()
                .contains(&"ip link del kube-ipvs0".to_string())
        );
        assert!(
            error
                .to_string()
                .starts_with("2 cleanup steps failed: `ipvsadm -C` failed")
        );
    }
}
