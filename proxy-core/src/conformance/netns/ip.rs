//! Configuring a namespace: `ip -batch` scripts and sysctls.

use std::fmt::Write as _;
use std::io;

use crate::backend::BackendError;

use super::Netns;

/// An `ip -batch -` script: one `ip` process for many commands.
///
/// Commands run in order and the first failure stops the script. Global
/// options such as `-6` cannot appear on a line, so IPv6 policy rules go
/// in a script made with [`IpBatch::ipv6`].
#[derive(Debug, Default)]
pub(crate) struct IpBatch {
    ipv6: bool,
    script: String,
}

impl IpBatch {
    /// An empty script.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An empty script run as `ip -6 -batch -` (for `rule` lines).
    pub(crate) fn ipv6() -> Self {
        IpBatch {
            ipv6: true,
            script: String::new(),
        }
    }

    /// Appends one command line (without the leading `ip`).
    pub(crate) fn line(&mut self, args: std::fmt::Arguments<'_>) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = self.script.write_fmt(args);
        self.script.push('\n');
        self
    }

    /// Whether the script has no command.
    pub(crate) fn is_empty(&self) -> bool {
        self.script.is_empty()
    }

    /// Runs the script inside `ns`; `what` names the namespace in errors.
    pub(crate) fn run(&self, ns: &Netns, what: &str) -> Result<(), BackendError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut command = ns.command("ip");
        if self.ipv6 {
            command.arg("-6");
        }
        let output = command
            .args(["-batch", "-"])
            .output_with_input(self.script.as_bytes())
            .map_err(|e| {
                BackendError::unsupported(format!("cannot run `ip -batch` in the {what} namespace"))
                    .with_source(e)
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(BackendError::dataplane(format!(
                "`ip -batch` in the {what} namespace failed ({}): {}\nscript:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.script
            )))
        }
    }
}

/// Appends a formatted line to an [`IpBatch`].
macro_rules! ip_line {
    ($batch:expr, $($fmt:tt)*) => {
        $batch.line(format_args!($($fmt)*))
    };
}
pub(crate) use ip_line;

/// Writes sysctls (`net.ipv4.ip_forward` style keys) inside `ns`, through
/// `/proc/sys` of a thread in the namespace.
pub(crate) fn set_sysctls(
    ns: &Netns,
    what: &str,
    settings: &[(&str, &str)],
) -> Result<(), BackendError> {
    ns.run(|| -> io::Result<()> {
        for (key, value) in settings {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value)
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        }
        Ok(())
    })
    .and_then(|r| r)
    .map_err(|e| {
        BackendError::unsupported(format!("cannot set sysctls in the {what} namespace"))
            .with_source(e)
    })
}

/// Sysctls every namespace of the topology gets before any interface is
/// added: no reverse-path filter (IPv4 `conf/all` may be inherited from the
/// root namespace), no duplicate address detection (addresses are usable at
/// once), and no ICMP rate limit (a REJECT must answer every time).
pub(crate) const BASELINE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv4.icmp_ratelimit", "0"),
    ("net.ipv6.icmp.ratelimit", "0"),
];

/// Sysctls of the node namespace, on top of [`BASELINE_SYSCTLS`] (see the
/// README for why each one matters).
pub(crate) const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.conf.all.route_localnet", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
];
