//! Step 2: delete the `kube-ipvs0` link.

use tracing::{debug, info};

use crate::error::IpvsError;
use crate::host::{Applied, Command, Host, run_idempotent};
use crate::layout::DUMMY_DEVICE;

/// What `ip link del` prints for a missing link.
const NOT_FOUND: [&str; 1] = ["Cannot find device"];

/// Deletes the `kube-ipvs0` link (whatever its type, as upstream does),
/// which also unbinds every service address upstream put on it.
///
/// The link is looked up in `/proc/net/dev` first, so a namespace without
/// it sees no command at all.
pub(crate) async fn delete(host: &dyn Host) -> Result<(), IpvsError> {
    let interfaces = host
        .read_proc_net("dev")
        .map_err(|source| IpvsError::ReadProc {
            name: "dev".into(),
            source,
        })?;
    // Without /proc/net/dev, try the delete and let `ip` tell.
    let known_to_exist = match &interfaces {
        Some(dev) => {
            if !interface_names(dev).any(|name| name == DUMMY_DEVICE) {
                debug!(device = DUMMY_DEVICE, "no such link, nothing to delete");
                return Ok(());
            }
            true
        }
        None => false,
    };
    if !host.has_program("ip") {
        if known_to_exist {
            return Err(IpvsError::MissingTool {
                what: format!("the {DUMMY_DEVICE} link"),
                program: "ip".into(),
            });
        }
        return Ok(());
    }
    let command = Command::new("ip", ["link", "del", DUMMY_DEVICE]);
    if run_idempotent(host, command, &NOT_FOUND).await? == Applied::Done {
        info!(device = DUMMY_DEVICE, "deleted the IPVS dummy link");
    }
    Ok(())
}

/// The interface names of a `/proc/net/dev` table (`  eth0: 1234 …`; two
/// header lines, whose first fields hold `|`).
pub(crate) fn interface_names(dev: &str) -> impl Iterator<Item = &str> {
    dev.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.is_empty() && !name.contains('|'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const HEADER: &str = "Inter-|   Receive                            |  Transmit\n \
        face |bytes    packets errs drop fifo frame|bytes    packets\n";

    fn dev(names: &[&str]) -> String {
        let mut table = HEADER.to_string();
        for name in names {
            table.push_str(&format!("{name:>6}:       0       0    0    0\n"));
        }
        table
    }

    #[test]
    fn reads_interface_names_and_skips_headers() {
        let table = dev(&["lo", "eth0", "kube-ipvs0"]);
        assert_eq!(
            interface_names(&table).collect::<Vec<_>>(),
            ["lo", "eth0", "kube-ipvs0"]
        );
    }

    #[tokio::test]
    async fn an_existing_link_is_deleted() {
        let host = FakeHost::new()
            .with_programs(&["ip"])
            .with_proc_net("dev", &dev(&["lo", "kube-ipvs0"]));
        delete(&host).await.unwrap();
        assert_eq!(host.commands(), ["ip link del kube-ipvs0"]);
    }

    #[tokio::test]
    async fn a_missing_link_runs_nothing() {
        let host = FakeHost::new()
            .with_programs(&["ip"])
            .with_proc_net("dev", &dev(&["lo", "kube-ipvs1"]));
        delete(&host).await.unwrap();
        assert!(host.commands().is_empty());
    }

    #[tokio::test]
    async fn a_link_gone_before_the_delete_is_not_an_error() {
        let host = FakeHost::new()
            .with_programs(&["ip"])
            .with_proc_net("dev", &dev(&["kube-ipvs0"]))
            .respond(
                "ip link del kube-ipvs0",
                FakeHost::fail(1, "Cannot find device \"kube-ipvs0\""),
            );
        delete(&host).await.unwrap();
        assert_eq!(host.commands(), ["ip link del kube-ipvs0"]);
    }

    #[tokio::test]
    async fn an_existing_link_without_ip_is_reported() {
        let host = FakeHost::new().with_proc_net("dev", &dev(&["kube-ipvs0"]));
        let error = delete(&host).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the kube-ipvs0 link left in place: `ip` is not installed"
        );
    }
}
