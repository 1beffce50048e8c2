//! Step 1: flush the IPVS virtual servers (upstream's `ipvs.Flush()`).

use tracing::{debug, info};

use crate::error::IpvsError;
use crate::host::{Command, Host, run_checked};

/// Flushes every IPVS virtual server of the namespace, as upstream does:
/// all of them, not only kube-proxy's (IPVS has no owner tag).
///
/// Nothing happens when `/proc/net/ip_vs` is absent (the `ip_vs` module is
/// not loaded, so no virtual server can exist; unlike upstream, which runs
/// `modprobe ip_vs` first, this never loads a module) or lists no virtual
/// server. The flush uses `ipvsadm -C`; without `ipvsadm` the virtual
/// servers stay and the error says so.
pub(crate) async fn flush(host: &dyn Host) -> Result<(), IpvsError> {
    let table = host
        .read_proc_net("ip_vs")
        .map_err(|source| IpvsError::ReadProc {
            name: "ip_vs".into(),
            source,
        })?;
    let Some(table) = table else {
        debug!("no /proc/net/ip_vs: the kernel has no IPVS loaded, nothing to flush");
        return Ok(());
    };
    let count = count_virtual_servers(&table);
    if count == 0 {
        debug!("no IPVS virtual servers to flush");
        return Ok(());
    }
    if !host.has_program("ipvsadm") {
        return Err(IpvsError::MissingTool {
            what: format!("{count} IPVS virtual server(s)"),
            program: "ipvsadm".into(),
        });
    }
    run_checked(host, Command::new("ipvsadm", ["-C"])).await?;
    info!(count, "flushed the IPVS virtual servers");
    Ok(())
}

/// The number of virtual servers in `/proc/net/ip_vs`: the lines that start
/// with a protocol (`TCP  0A600001:0050 rr`, `FWM  00000001 rr`), not the
/// header lines and not the indented real servers (`  -> …`).
pub(crate) fn count_virtual_servers(table: &str) -> usize {
    table
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|first| !matches!(*first, "IP" | "Prot"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const EMPTY: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
        Prot LocalAddress:Port Scheduler Flags\n\
        \x20 -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n";

    fn with_servers() -> String {
        format!(
            "{EMPTY}TCP  0A600001:0050 rr\n\
             \x20 -> 0AF40105:1F90      Masq    1      0          0\n\
             UDP  [fd00:0096:0000:0000:0000:0000:0000:000a]:0035 rr\n\
             FWM  00000001 rr\n"
        )
    }

    #[test]
    fn counts_virtual_servers_of_every_kind_but_not_real_servers_or_headers() {
        assert_eq!(count_virtual_servers(EMPTY), 0);
        assert_eq!(count_virtual_servers(&with_servers()), 3);
    }

    #[tokio::test]
    async fn without_ipvs_in_the_kernel_nothing_runs() {
        let host = FakeHost::new().with_programs(&["ipvsadm"]);
        flush(&host).await.unwrap();
        assert!(host.commands().is_empty());
    }

    #[tokio::test]
    async fn an_empty_ipvs_table_is_not_flushed() {
        let host = FakeHost::new()
            .with_programs(&["ipvsadm"])
            .with_proc_net("ip_vs", EMPTY);
        flush(&host).await.unwrap();
        assert!(host.commands().is_empty());
    }

    #[tokio::test]
    async fn virtual_servers_are_flushed_with_ipvsadm() {
        let host = FakeHost::new()
            .with_programs(&["ipvsadm"])
            .with_proc_net("ip_vs", &with_servers());
        flush(&host).await.unwrap();
        assert_eq!(host.commands(), ["ipvsadm -C"]);
    }

    #[tokio::test]
    async fn without_ipvsadm_the_error_says_what_is_left() {
        let host = FakeHost::new().with_proc_net("ip_vs", &with_servers());
        let error = flush(&host).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "3 IPVS virtual server(s) left in place: `ipvsadm` is not installed"
        );
        assert!(host.commands().is_empty());
    }

    #[tokio::test]
    async fn a_failing_flush_is_an_error() {
        let host = FakeHost::new()
            .with_programs(&["ipvsadm"])
            .with_proc_net("ip_vs", &with_servers())
            .respond("ipvsadm -C", FakeHost::fail(2, "Memory allocation problem"));
        let error = flush(&host).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "`ipvsadm -C` failed (exit code 2): Memory allocation problem"
        );
    }
}
