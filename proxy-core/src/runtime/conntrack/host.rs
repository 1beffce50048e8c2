//! [`HostConntrack`]: netlink first, the `conntrack` tool when netlink fails.

use std::io;

use crate::backend::CommandLimits;
use crate::model::IpFamily;

use super::cli::CliConntrack;
use super::entry::ConntrackEntry;
use super::netlink::NetlinkConntrack;
use super::table::ConntrackTable;

/// The host's conntrack table: [`NetlinkConntrack`], falling back to
/// [`CliConntrack`] for a whole round (a list and its deletes) when the
/// netlink dump fails.
#[derive(Debug, Default)]
pub struct HostConntrack {
    netlink: NetlinkConntrack,
    cli: CliConntrack,
    using_cli: bool,
}

impl HostConntrack {
    /// Netlink with the `conntrack` tool on `PATH` as fallback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Netlink, with the `conntrack` tool killed when a run outlives `limits`.
    pub fn with_limits(limits: CommandLimits) -> Self {
        HostConntrack {
            cli: CliConntrack::new().with_limits(limits),
            ..Self::default()
        }
    }
}

impl ConntrackTable for HostConntrack {
    fn list(&mut self, family: IpFamily) -> io::Result<Vec<ConntrackEntry>> {
        match self.netlink.list(family) {
            Ok(entries) => {
                self.using_cli = false;
                Ok(entries)
            }
            Err(error) => {
                tracing::warn!(%family, %error, "listing conntrack entries over netlink failed; trying the conntrack tool");
                self.netlink = NetlinkConntrack::new();
                self.using_cli = true;
                self.cli.list(family)
            }
        }
    }

    fn delete(&mut self, entry: &ConntrackEntry) -> io::Result<()> {
        if self.using_cli {
            self.cli.delete(entry)
        } else {
            self.netlink.delete(entry)
        }
    }
}
