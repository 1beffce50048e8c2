//! Validation, following upstream's
//! `pkg/proxy/apis/config/validation/validation.go`, with field paths in
//! v1alpha1 form (`iptables.masqueradeBit`, `nodePortAddresses[1]`).

use super::detect_local::parse_cluster_cidrs;
use super::duration::Duration;
use super::mode::{LocalMode, ProxyMode};
use super::net::{parse_cidr, parse_ip, split_host_port};
use super::node_port_addresses::NodePortAddresses;
use super::types::{API_VERSION, KIND, KubeProxyConfiguration};
use crate::error::Error;

/// The IPVS schedulers upstream accepts (`""` means `rr`).
pub const IPVS_SCHEDULERS: [&str; 11] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh",
];

/// The log formats upstream's kube-proxy registers.
const LOG_FORMATS: [&str; 2] = ["text", "json"];

/// Collects `(field, reason)` pairs.
#[derive(Default)]
struct Errors(Vec<Error>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Error::config(field, reason));
    }

    fn check(&mut self, ok: bool, field: impl Into<String>, reason: impl Into<String>) {
        if !ok {
            self.add(field, reason);
        }
    }

    fn non_negative(&mut self, d: Duration, field: &str) {
        self.check(
            !d.is_negative(),
            field,
            format!("{d} must be greater than or equal to 0"),
        );
    }

    fn masquerade_bit(&mut self, bit: Option<i32>, field: &str) {
        if let Some(bit) = bit {
            self.check(
                (0..=31).contains(&bit),
                field,
                format!("{bit} must be within the range [0, 31]"),
            );
        }
    }

    /// `syncPeriod` > 0, `minSyncPeriod` >= 0 and <= `syncPeriod` of `section`.
    fn periods(&mut self, section: &str, sync: Duration, min: Duration) {
        self.check(
            sync.as_nanos() > 0,
            format!("{section}.syncPeriod"),
            format!("{sync} must be greater than 0"),
        );
        self.non_negative(min, &format!("{section}.minSyncPeriod"));
        // Only compared when both are otherwise valid, to report one error.
        self.check(
            sync.as_nanos() <= 0 || min.is_negative() || min <= sync,
            format!("{section}.syncPeriod"),
            format!("{sync} must be greater than or equal to {section}.minSyncPeriod ({min})"),
        );
    }

    /// Upstream's `validateHostPort`: `IP:port` with a port in [1, 65535].
    fn host_port(&mut self, value: &str, field: &str) {
        let Ok((host, port)) = split_host_port(value) else {
            self.add(field, format!("\"{value}\" must be IP:port"));
            return;
        };
        self.check(
            parse_ip(host).is_some(),
            field,
            format!("\"{host}\" must be a valid IP"),
        );
        let port_ok = port.parse::<i64>().is_ok_and(|p| (1..=65535).contains(&p));
        self.check(port_ok, field, format!("\"{port}\" must be a valid port"));
    }
}

/// Upstream's `utilnet.ParsePortRange`: empty, `port`, `low-high` or
/// `low+offset`, within [0, 65535].
fn valid_port_range(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() {
        return true;
    }
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let bounds = match (value.find('-'), value.find('+')) {
        (None, None) => num(value).map(|p| (p, p)),
        (Some(i), None) => num(&value[..i]).zip(num(&value[i + 1..])),
        (None, Some(i)) => num(&value[..i])
            .zip(num(&value[i + 1..]))
            .map(|(low, off)| (low, low.saturating_add(off))),
        (Some(_), Some(_)) => None,
    };
    bounds.is_some_and(|(low, high)| low <= high && high <= 65535)
}

/// `major.minor`, e.g. `1.36`.
fn valid_minor_version(value: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    value
        .split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

impl KubeProxyConfiguration {
    /// Every validation error, each an [`Error::Config`] naming its field;
    /// empty when the configuration is valid. See [`validate`](Self::validate).
    pub fn validation_errors(&self) -> Vec<Error> {
        let mut errs = Errors::default();
        let mode = self.effective_mode();

        errs.check(
            self.api_version == API_VERSION,
            "apiVersion",
            format!("\"{}\" must be {API_VERSION}", self.api_version),
        );
        errs.check(
            self.kind == KIND,
            "kind",
            format!("\"{}\" must be {KIND}", self.kind),
        );

        // Mode, and the settings of the active mode's section.
        errs.check(
            mode != ProxyMode::Kernelspace || cfg!(windows),
            "mode",
            "kernelspace is only supported on Windows; valid values: iptables, ipvs, nftables, userspace",
        );
        errs.masquerade_bit(self.iptables.masquerade_bit, "iptables.masqueradeBit");
        let (sync, min) = self.periods();
        errs.periods(self.active_section(), sync, min);
        match mode {
            ProxyMode::Ipvs => self.validate_ipvs(&mut errs),
            ProxyMode::Nftables => {
                errs.masquerade_bit(self.nftables.masquerade_bit, "nftables.masqueradeBit")
            }
            ProxyMode::Userspace => {
                let idle = self.userspace.udp_idle_timeout;
                errs.check(
                    idle.as_nanos() > 0,
                    "userspace.udpIdleTimeout",
                    format!("{idle} must be greater than 0"),
                );
                if let Some(max) = self.userspace.max_udp_sessions {
                    errs.check(
                        max > 0,
                        "userspace.maxUDPSessions",
                        format!("{max} must be greater than 0"),
                    );
                }
            }
            ProxyMode::Iptables | ProxyMode::Kernelspace => {}
        }

        self.validate_conntrack(&mut errs);
        if let Some(adj) = self.oom_score_adj {
            errs.check(
                (-1000..=1000).contains(&adj),
                "oomScoreAdj",
                format!("{adj} must be within the range [-1000, 1000]"),
            );
        }

        let client = &self.client_connection;
        errs.check(
            client.burst >= 0,
            "clientConnection.burst",
            format!("{} must be greater than or equal to 0", client.burst),
        );
        errs.check(
            client.qps.is_finite(),
            "clientConnection.qps",
            format!("{} must be a finite number", client.qps),
        );

        let period = self.config_sync_period;
        errs.check(
            period.as_nanos() > 0,
            "configSyncPeriod",
            format!("{period} must be greater than 0"),
        );

        errs.check(
            parse_ip(&self.bind_address).is_some(),
            "bindAddress",
            format!(
                "\"{}\" is not a valid textual representation of an IP address",
                self.bind_address
            ),
        );
        // Upstream also rejects an empty metricsBindAddress; here empty
        // disables either server.
        if !self.healthz_bind_address.is_empty() {
            errs.host_port(&self.healthz_bind_address, "healthzBindAddress");
        }
        if !self.metrics_bind_address.is_empty() {
            errs.host_port(&self.metrics_bind_address, "metricsBindAddress");
        }

        errs.check(
            valid_port_range(&self.port_range),
            "portRange",
            format!(
                "\"{}\" must be a valid port range (e.g. 300-2000)",
                self.port_range
            ),
        );
        for (i, entry) in self.node_port_addresses.iter().flatten().enumerate() {
            if let Err(Error::Config { reason, .. }) = NodePortAddresses::parse(&[entry]) {
                errs.add(format!("nodePortAddresses[{i}]"), reason);
            }
        }
        let version = &self.show_hidden_metrics_for_version;
        errs.check(
            version.is_empty() || valid_minor_version(version),
            "showHiddenMetricsForVersion",
            format!("\"{version}\" must be empty or a major.minor version such as 1.36"),
        );

        self.validate_detect_local(&mut errs);
        self.validate_logging(&mut errs);
        errs.0
    }

    /// Validates the configuration as upstream does, returning every
    /// problem at once: one [`Error::Config`] whose `field` is the first
    /// offending field and whose `reason` also lists the others
    /// (`field: reason; …`). Use [`validation_errors`](Self::validation_errors)
    /// for them one by one.
    ///
    /// Call it after [`apply_defaults`](Self::apply_defaults) and after any
    /// flag overrides.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = self.validation_errors().into_iter();
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let rest: Vec<String> = errors
            .map(|e| e.to_string().replacen("invalid configuration: ", "", 1))
            .collect();
        if rest.is_empty() {
            return Err(first);
        }
        match first {
            Error::Config { field, reason } => Err(Error::Config {
                field,
                reason: format!("{reason}; and {} more: {}", rest.len(), rest.join("; ")),
            }),
            other => Err(other),
        }
    }

    fn validate_ipvs(&self, errs: &mut Errors) {
        let ipvs = &self.ipvs;
        errs.non_negative(ipvs.tcp_timeout, "ipvs.tcpTimeout");
        errs.non_negative(ipvs.tcp_fin_timeout, "ipvs.tcpFinTimeout");
        errs.non_negative(ipvs.udp_timeout, "ipvs.udpTimeout");
        errs.check(
            ipvs.scheduler.is_empty() || IPVS_SCHEDULERS.contains(&ipvs.scheduler.as_str()),
            "ipvs.scheduler",
            format!(
                "\"{}\" must be one of {}, or empty for the default (rr)",
                ipvs.scheduler,
                IPVS_SCHEDULERS.join(", ")
            ),
        );
        for (i, cidr) in ipvs.exclude_cidrs.iter().flatten().enumerate() {
            errs.check(
                parse_cidr(cidr).is_some(),
                format!("ipvs.excludeCIDRs[{i}]"),
                format!("\"{cidr}\" must be a valid CIDR"),
            );
        }
    }

    fn validate_conntrack(&self, errs: &mut Errors) {
        let ct = &self.conntrack;
        for (value, field) in [
            (ct.max_per_core, "conntrack.maxPerCore"),
            (ct.min, "conntrack.min"),
        ] {
            if let Some(v) = value {
                errs.check(
                    v >= 0,
                    field,
                    format!("{v} must be greater than or equal to 0"),
                );
            }
        }
        for (value, field) in [
            (
                ct.tcp_established_timeout,
                "conntrack.tcpEstablishedTimeout",
            ),
            (ct.tcp_close_wait_timeout, "conntrack.tcpCloseWaitTimeout"),
            (Some(ct.udp_timeout), "conntrack.udpTimeout"),
            (Some(ct.udp_stream_timeout), "conntrack.udpStreamTimeout"),
        ] {
            if let Some(d) = value {
                errs.non_negative(d, field);
            }
        }
    }

    fn validate_detect_local(&self, errs: &mut Errors) {
        if let Err(reason) = parse_cluster_cidrs(&self.cluster_cidr) {
            errs.add("clusterCIDR", reason);
        }
        match self.effective_detect_local_mode() {
            LocalMode::BridgeInterface => errs.check(
                !self.detect_local.bridge_interface.is_empty(),
                "detectLocal.bridgeInterface",
                "must not be empty when detectLocalMode is BridgeInterface",
            ),
            LocalMode::InterfaceNamePrefix => errs.check(
                !self.detect_local.interface_name_prefix.is_empty(),
                "detectLocal.interfaceNamePrefix",
                "must not be empty when detectLocalMode is InterfaceNamePrefix",
            ),
            LocalMode::ClusterCidr | LocalMode::NodeCidr => {}
        }
        // Both end up in rule text (`-i NAME`, `iifname "NAME"`): whatever
        // the mode, a set name must be one the kernel could have.
        for (name, field) in [
            (
                &self.detect_local.bridge_interface,
                "detectLocal.bridgeInterface",
            ),
            (
                &self.detect_local.interface_name_prefix,
                "detectLocal.interfaceNamePrefix",
            ),
        ] {
            if let Err(reason) = check_interface_name(name) {
                errs.add(field, format!("{name:?} {reason}"));
            }
        }
    }

    /// component-base's `logsapi.Validate`, without feature gates.
    fn validate_logging(&self, errs: &mut Errors) {
        let logging = &self.logging;
        errs.check(
            LOG_FORMATS.contains(&logging.format.as_str()),
            "logging.format",
            format!(
                "\"{}\" is an unsupported log format; supported: {}",
                logging.format,
                LOG_FORMATS.join(", ")
            ),
        );
        let max = i32::MAX as u32;
        errs.check(
            logging.verbosity <= max,
            "logging.verbosity",
            format!("{} must be <= {max}", logging.verbosity),
        );
        errs.check(
            logging.vmodule.is_empty() || logging.format == "text",
            "logging.vmodule",
            "only supported for the text log format",
        );
        for (i, item) in logging.vmodule.iter().enumerate() {
            let field = format!("logging.vmodule[{i}]");
            errs.check(
                !item.file_pattern.is_empty(),
                field.clone(),
                "file pattern must not be empty",
            );
            errs.check(
                !item.file_pattern.contains(['=', ',']),
                field.clone(),
                format!(
                    "file pattern \"{}\" must not contain an equal sign or comma",
                    item.file_pattern
                ),
            );
            errs.check(
                item.verbosity <= max,
                field,
                format!("{} must be <= {max}", item.verbosity),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        for ok in ["", "0", "300-2000", "300+1700", "65535", " 10-20 ", "5-5"] {
            assert!(valid_port_range(ok), "{ok:?}");
        }
        for bad in [
            "x", "20-10", "1-65536", "65536", "1+65535", "-5", "1-2-3", "1-2+3", "a-b", "1-", "+1",
        ] {
            assert!(!valid_port_range(bad), "{bad:?}");
        }
    }

    #[test]
    fn minor_versions() {
        assert!(valid_minor_version("1.36"));
        assert!(!valid_minor_version("1.36.0"));
        assert!(!valid_minor_version("v1.36"));
        assert!(!valid_minor_version("1."));
    }
}

/// Linux's limit on interface names (`IFNAMSIZ` less the NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// Whether `name` (empty: unset) could name a Linux interface, as the
/// kernel's `dev_valid_name` decides, less the quotes and backslashes that
/// no real interface uses and that rule text cannot hold.
fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Ok(());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "is longer than {MAX_INTERFACE_NAME} bytes, the limit of Linux interface names"
        ));
    }
    if name == "." || name == ".." {
        return Err("is not an interface name".to_string());
    }
    match name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '"' | '\\' | '\'') || c.is_whitespace() || c.is_control())
    {
        Some(c) => Err(format!("holds {c:?}, which no interface name may hold")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod interface_name_tests {
    use super::check_interface_name;

    #[test]
    fn kernel_valid_names_pass_and_others_are_refused() {
        for ok in ["", "cbr0", "veth", "br-1a2b3c4d5e6f", "eth0.100", "cali+"] {
            assert_eq!(check_interface_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "a-name-of-16byte",
            ".",
            "..",
            "eth/0",
            "eth:0",
            "eth 0",
            "br\"0",
            "br\\0",
            "br\n",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad:?}");
        }
    }
}
