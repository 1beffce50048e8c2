//! From flags and `--config` to the effective configuration, with
//! upstream's precedence.
//!
//! - Without `--config`: upstream's defaults, then every flag given.
//! - With `--config`: the file (defaulted), then only `--hostname-override`
//!   and the logging flags (`-v`, `--vmodule`, `--logging-format`); every
//!   other configuration flag is ignored, as upstream does, and named in a
//!   warning. Flags that are not configuration fields (`--master`,
//!   `--cleanup`, `--manifests`, …) always apply.
//! - Then the platform defaults (`mode` → iptables, …) and validation.

use std::path::PathBuf;

use proxy_core::ProxyMode;
use proxy_core::config::{Duration, KubeProxyConfiguration};

use crate::config_watch::ConfigFile;
use crate::flags::{Flags, split_list};
use crate::logging::LogFormat;

/// A usage problem: bad flags or configuration. The binary prints it on one
/// line and exits with 64 (`EX_USAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the configuration to a file.
    WriteConfig(PathBuf),
    /// Remove every mode's rules.
    Cleanup,
    /// Privileged set-up only.
    InitOnly,
    /// Print the rules of the current state.
    DryRun,
    /// Run the proxy.
    Run,
}

/// The resolved options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The effective configuration (validated, platform defaults applied).
    pub config: KubeProxyConfiguration,
    /// The configuration as written by `--write-config-to` (before platform defaults).
    pub config_to_write: KubeProxyConfiguration,
    /// The action.
    pub action: Action,
    /// `--master`.
    pub master: Option<String>,
    /// `--manifests`.
    pub manifests: Option<PathBuf>,
    /// Configuration flags ignored because of `--config`.
    pub ignored_flags: Vec<&'static str>,
    /// The `--config` file as it was loaded, to notice when it changes.
    pub config_file: Option<ConfigFile>,
    /// The log format (`logging.format`).
    pub log_format: LogFormat,
}

/// Sets `field` from `flag` and records the flag's name.
macro_rules! set {
    ($given:ident, $flag:expr, $name:literal, |$v:ident| $apply:expr) => {
        if let Some($v) = $flag.clone() {
            $given.push($name);
            $apply;
        }
    };
}

/// Applies the configuration flags to `config`; returns the names of the
/// flags given.
fn apply_config_flags(flags: &Flags, config: &mut KubeProxyConfiguration) -> Vec<&'static str> {
    let mut given = Vec::new();
    let c = config;
    set!(given, flags.feature_gates, "--feature-gates", |v| c
        .feature_gates =
        v);
    set!(given, flags.kubeconfig, "--kubeconfig", |v| c
        .client_connection
        .kubeconfig =
        v);
    set!(
        given,
        flags.kube_api_content_type,
        "--kube-api-content-type",
        |v| c.client_connection.content_type = v
    );
    set!(given, flags.kube_api_qps, "--kube-api-qps", |v| c
        .client_connection
        .qps =
        v);
    set!(given, flags.kube_api_burst, "--kube-api-burst", |v| c
        .client_connection
        .burst =
        v);
    set!(given, flags.bind_address, "--bind-address", |v| c
        .bind_address =
        v);
    set!(
        given,
        flags.healthz_bind_address,
        "--healthz-bind-address",
        |v| c.healthz_bind_address = v
    );
    set!(
        given,
        flags.metrics_bind_address,
        "--metrics-bind-address",
        |v| c.metrics_bind_address = v
    );
    set!(
        given,
        flags.bind_address_hard_fail,
        "--bind-address-hard-fail",
        |v| c.bind_address_hard_fail = v
    );
    set!(given, flags.profiling, "--profiling", |v| c
        .enable_profiling =
        v);
    set!(
        given,
        flags.show_hidden_metrics_for_version,
        "--show-hidden-metrics-for-version",
        |v| c.show_hidden_metrics_for_version = v
    );
    set!(given, flags.proxy_mode, "--proxy-mode", |v| c.mode =
        Some(v));
    set!(
        given,
        flags.iptables_masquerade_bit,
        "--iptables-masquerade-bit",
        |v| {
            c.iptables.masquerade_bit = Some(v);
            c.nftables.masquerade_bit = Some(v);
        }
    );
    set!(given, flags.masquerade_all, "--masquerade-all", |v| {
        c.iptables.masquerade_all = v;
        c.nftables.masquerade_all = v;
    });
    set!(
        given,
        flags.iptables_localhost_nodeports,
        "--iptables-localhost-nodeports",
        |v| c.iptables.localhost_node_ports = Some(v)
    );
    set!(
        given,
        flags.iptables_sync_period,
        "--iptables-sync-period",
        |v| c.iptables.sync_period = v
    );
    set!(
        given,
        flags.iptables_min_sync_period,
        "--iptables-min-sync-period",
        |v| c.iptables.min_sync_period = v
    );
    set!(given, flags.ipvs_sync_period, "--ipvs-sync-period", |v| c
        .ipvs
        .sync_period =
        v);
    set!(
        given,
        flags.ipvs_min_sync_period,
        "--ipvs-min-sync-period",
        |v| c.ipvs.min_sync_period = v
    );
    set!(given, flags.ipvs_scheduler, "--ipvs-scheduler", |v| c
        .ipvs
        .scheduler =
        v);
    set!(
        given,
        flags.ipvs_exclude_cidrs,
        "--ipvs-exclude-cidrs",
        |v| c.ipvs.exclude_cidrs = Some(split_list(&v))
    );
    set!(given, flags.ipvs_strict_arp, "--ipvs-strict-arp", |v| c
        .ipvs
        .strict_arp =
        v);
    set!(given, flags.ipvs_tcp_timeout, "--ipvs-tcp-timeout", |v| c
        .ipvs
        .tcp_timeout =
        v);
    set!(
        given,
        flags.ipvs_tcpfin_timeout,
        "--ipvs-tcpfin-timeout",
        |v| c.ipvs.tcp_fin_timeout = v
    );
    set!(given, flags.ipvs_udp_timeout, "--ipvs-udp-timeout", |v| c
        .ipvs
        .udp_timeout =
        v);
    set!(given, flags.detect_local_mode, "--detect-local-mode", |v| {
        c.detect_local_mode = Some(v)
    });
    set!(
        given,
        flags.pod_bridge_interface,
        "--pod-bridge-interface",
        |v| c.detect_local.bridge_interface = v
    );
    set!(
        given,
        flags.pod_interface_name_prefix,
        "--pod-interface-name-prefix",
        |v| c.detect_local.interface_name_prefix = v
    );
    set!(given, flags.cluster_cidr, "--cluster-cidr", |v| c
        .cluster_cidr =
        v);
    set!(
        given,
        flags.nodeport_addresses,
        "--nodeport-addresses",
        |v| c.node_port_addresses = Some(split_list(&v))
    );
    set!(given, flags.oom_score_adj, "--oom-score-adj", |v| c
        .oom_score_adj =
        Some(v));
    set!(
        given,
        flags.conntrack_max_per_core,
        "--conntrack-max-per-core",
        |v| c.conntrack.max_per_core = Some(v)
    );
    set!(given, flags.conntrack_min, "--conntrack-min", |v| c
        .conntrack
        .min =
        Some(v));
    set!(
        given,
        flags.conntrack_tcp_timeout_established,
        "--conntrack-tcp-timeout-established",
        |v| c.conntrack.tcp_established_timeout = Some(v)
    );
    set!(
        given,
        flags.conntrack_tcp_timeout_close_wait,
        "--conntrack-tcp-timeout-close-wait",
        |v| c.conntrack.tcp_close_wait_timeout = Some(v)
    );
    set!(
        given,
        flags.conntrack_tcp_be_liberal,
        "--conntrack-tcp-be-liberal",
        |v| c.conntrack.tcp_be_liberal = v
    );
    set!(
        given,
        flags.conntrack_udp_timeout,
        "--conntrack-udp-timeout",
        |v| c.conntrack.udp_timeout = v
    );
    set!(
        given,
        flags.conntrack_udp_timeout_stream,
        "--conntrack-udp-timeout-stream",
        |v| c.conntrack.udp_stream_timeout = v
    );
    set!(
        given,
        flags.config_sync_period,
        "--config-sync-period",
        |v| c.config_sync_period = v
    );
    if let Some(port) = flags.healthz_port {
        given.push("--healthz-port");
        c.healthz_bind_address = with_port(&c.healthz_bind_address, port);
    }
    if let Some(port) = flags.metrics_port {
        given.push("--metrics-port");
        c.metrics_bind_address = with_port(&c.metrics_bind_address, port);
    }
    given
}

/// Upstream's handling of the deprecated port-only flags: 0 disables the
/// server, any other port replaces the address's port.
fn with_port(address: &str, port: u16) -> String {
    if port == 0 {
        return String::new();
    }
    let host = match address.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host,
        _ if address.is_empty() => "0.0.0.0",
        _ => address,
    };
    format!("{host}:{port}")
}

/// The logging flags, applied even with `--config`.
fn apply_logging_flags(
    flags: &Flags,
    config: &mut KubeProxyConfiguration,
) -> Result<(), UsageError> {
    if let Some(v) = flags.verbosity {
        config.logging.verbosity = v;
    }
    if let Some(format) = &flags.logging_format {
        if LogFormat::from_name(format).is_none() {
            return Err(UsageError(format!(
                "invalid flag --logging-format: \"{format}\" is not supported; supported: {}",
                LogFormat::NAMES.join(", ")
            )));
        }
        config.logging.format = format.clone();
    }
    if let Some(vmodule) = &flags.vmodule {
        let mut items = Vec::new();
        for entry in split_list(vmodule) {
            let parsed = entry.split_once('=').and_then(|(pattern, level)| {
                Some((pattern.to_string(), level.parse::<u32>().ok()?))
            });
            let Some((file_pattern, verbosity)) = parsed else {
                return Err(UsageError(format!(
                    "invalid flag --vmodule: \"{entry}\" is not pattern=N"
                )));
            };
            items.push(proxy_core::config::VModuleItem {
                file_pattern,
                verbosity,
            });
        }
        config.logging.vmodule = items;
    }
    Ok(())
}

/// The node name upstream would use: the override, else the host name,
/// trimmed and lowercased.
pub fn node_name(config: &KubeProxyConfiguration) -> Result<String, UsageError> {
    let name = if config.hostname_override.trim().is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| UsageError(format!("cannot read the host name: {e}")))?
    } else {
        config.hostname_override.clone()
    };
    let name = name.trim().to_lowercase();
    if name.is_empty() {
        return Err(UsageError(
            "empty hostname; set --hostname-override".to_string(),
        ));
    }
    Ok(name)
}

impl Options {
    /// Resolves `flags` (and the `--config` file they name).
    pub fn resolve(flags: &Flags) -> Result<Options, UsageError> {
        let (mut config, ignored_flags, config_file) = match &flags.config {
            Some(path) => {
                // Read before loading: a change in between then shows as a
                // change of the file, never goes unnoticed.
                let file = ConfigFile::read(path)
                    .map_err(|e| UsageError(format!("reading {}: {e}", path.display())))?;
                let config =
                    KubeProxyConfiguration::load(path).map_err(|e| UsageError(e.to_string()))?;
                let mut scratch = KubeProxyConfiguration::default();
                let ignored = apply_config_flags(flags, &mut scratch);
                (config, ignored, Some(file))
            }
            None => {
                let mut config = KubeProxyConfiguration::default();
                apply_config_flags(flags, &mut config);
                (config, Vec::new(), None)
            }
        };
        apply_logging_flags(flags, &mut config)?;
        if let Some(name) = &flags.hostname_override {
            config.hostname_override = name.trim().to_string();
        }
        let config_to_write = config.clone();
        config.apply_defaults();
        let errors = config.validation_errors();
        if !errors.is_empty() {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(UsageError(text.join("; ")));
        }
        let log_format = LogFormat::from_name(&config.logging.format).ok_or_else(|| {
            UsageError(format!(
                "invalid configuration: logging.format: \"{}\" is not supported; supported: {}",
                config.logging.format,
                LogFormat::NAMES.join(", ")
            ))
        })?;
        if config.effective_mode() == ProxyMode::Kernelspace {
            return Err(UsageError(
                "invalid configuration: mode: kernelspace is the Windows mode; valid on Linux: iptables, ipvs, nftables, userspace"
                    .to_string(),
            ));
        }
        let chosen = [
            flags.write_config_to.is_some(),
            flags.cleanup == Some(true),
            flags.init_only == Some(true),
            flags.dry_run == Some(true),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err(UsageError(
                "--write-config-to, --cleanup, --init-only and --dry-run exclude each other"
                    .to_string(),
            ));
        }
        let action = if let Some(path) = &flags.write_config_to {
            Action::WriteConfig(path.clone())
        } else if flags.cleanup == Some(true) {
            Action::Cleanup
        } else if flags.init_only == Some(true) {
            Action::InitOnly
        } else if flags.dry_run == Some(true) {
            Action::DryRun
        } else {
            Action::Run
        };
        Ok(Options {
            config,
            config_to_write,
            action,
            master: flags.master.clone(),
            manifests: flags.manifests.clone(),
            ignored_flags,
            config_file,
            log_format,
        })
    }

    /// `syncPeriod` of the active mode, for logs.
    pub fn sync_period(&self) -> Duration {
        Duration::from(self.config.sync_period())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(args: &[&str]) -> Result<Options, UsageError> {
        let flags =
            Flags::try_parse_from(std::iter::once("kube-proxy").chain(args.iter().copied()))
                .unwrap();
        Options::resolve(&flags)
    }

    #[test]
    fn flags_set_fields_without_config() {
        let o = resolve(&[
            "--proxy-mode=nftables",
            "--masquerade-all",
            "--iptables-sync-period=10s",
            "-v=3",
        ])
        .unwrap();
        assert_eq!(o.config.effective_mode(), ProxyMode::Nftables);
        assert!(o.config.nftables.masquerade_all);
        assert_eq!(o.config.iptables.sync_period.to_string(), "10s");
        assert_eq!(o.config.logging.verbosity, 3);
        assert_eq!(o.config_to_write.mode, Some(ProxyMode::Nftables));
        assert!(o.ignored_flags.is_empty());
        assert_eq!(o.action, Action::Run);
    }

    #[test]
    fn deprecated_port_flags() {
        assert_eq!(with_port("0.0.0.0:10256", 0), "");
        assert_eq!(with_port("0.0.0.0:10256", 9999), "0.0.0.0:9999");
        assert_eq!(with_port("[::]:10256", 1), "[::]:1");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let error = resolve(&["--iptables-masquerade-bit=40"]).unwrap_err().0;
        assert!(error.contains("masqueradeBit"), "{error}");
        let error = resolve(&["--cleanup", "--dry-run"]).unwrap_err().0;
        assert!(error.contains("exclude"), "{error}");
    }
}
