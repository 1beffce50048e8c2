//! The command line: upstream kube-proxy's flags plus `--manifests` and
//! `--dry-run`.
//!
//! Flags that set a configuration field are `Option`s, so that
//! [`crate::options`] knows which were given: with `--config`, upstream
//! ignores them (except `--hostname-override` and the logging flags).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use proxy_core::ProxyMode;
use proxy_core::config::{Duration, LocalMode};

fn duration(text: &str) -> Result<Duration, String> {
    text.parse()
}

fn proxy_mode(text: &str) -> Result<ProxyMode, String> {
    text.parse::<ProxyMode>().map_err(|e| e.to_string())
}

fn local_mode(text: &str) -> Result<LocalMode, String> {
    text.parse::<LocalMode>().map_err(|e| e.to_string())
}

fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean \"{text}\"")),
    }
}

fn feature_gates(text: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut gates = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("missing bool value for {entry}"))?;
        gates.insert(
            name.trim().to_string(),
            boolean(value.trim()).map_err(|e| format!("{name}: {e}"))?,
        );
    }
    Ok(gates)
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// kube-proxy's command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "kube-proxy",
    version,
    about = "The Kubernetes network proxy: programs Services on this node with iptables, nftables, ipvs or a userspace proxy.",
    after_help = "Inspection commands (they change nothing and need no running kube-proxy):\n  kube-proxy trace --from IP --to IP:PORT [--proto tcp]   where a new connection goes, hop by hop\n  kube-proxy diff [--manifests DIR]                      live rules vs what the Services want (exit 0 equal, 1 different)"
)]
pub struct Flags {
    // ---- not configuration fields ----
    /// The path to the configuration file (KubeProxyConfiguration). With it,
    /// most other flags are ignored; --hostname-override and the logging
    /// flags still apply.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Write the configuration (flags merged with defaults) to this file and exit.
    #[arg(long, value_name = "PATH")]
    pub write_config_to: Option<PathBuf>,
    /// Remove the rules of every mode, for both IP families, and exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub cleanup: Option<bool>,
    /// Do the privileged set-up (sysctls, mode initialisation) and exit, so
    /// the long-running container needs only CAP_NET_ADMIN.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub init_only: Option<bool>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// Read Services and EndpointSlices from this YAML file or directory
    /// instead of the API server (watched for changes).
    #[arg(long, value_name = "PATH")]
    pub manifests: Option<PathBuf>,
    /// Print the ruleset the mode would install for the current state, per
    /// IP family, and exit. Needs no root and changes nothing.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub dry_run: Option<bool>,

    // ---- logging (applied even with --config) ----
    /// Log level verbosity (0: info; 2-3: debug; 4+: trace; 6+: also libraries).
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u32>,
    /// Comma-separated pattern=N settings for file-filtered logging: N applies
    /// to the Rust source files whose base name (without .rs) matches the
    /// pattern (`*` and `?` allowed), with -v's level mapping.
    #[arg(long, value_name = "PATTERN=N,...")]
    pub vmodule: Option<String>,
    /// Sets the log format: "text" (default) or "json".
    #[arg(long, value_name = "FORMAT")]
    pub logging_format: Option<String>,

    // ---- configuration fields ----
    /// A set of key=value pairs that describe feature gates.
    #[arg(long, value_name = "KEY=BOOL,...", value_parser = feature_gates)]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// Path to a kubeconfig file with authorization information (the master location can be overridden by --master).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<String>,
    /// Content type of requests sent to the API server (JSON is always used).
    #[arg(long, value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    /// QPS to use while talking with the API server.
    #[arg(long, value_name = "QPS")]
    pub kube_api_qps: Option<f32>,
    /// Burst to use while talking with the API server.
    #[arg(long, value_name = "N")]
    pub kube_api_burst: Option<i32>,
    /// If non-empty, use this string as identification instead of the actual hostname.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Overrides kube-proxy's idea of the primary node IP; 0.0.0.0 / :: pick from the Node.
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<String>,
    /// ip:port of the health check server (empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// ip:port of the metrics server (empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// Exit if the health or metrics server cannot bind its port.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub bind_address_hard_fail: Option<bool>,
    /// Enable profiling via web interface host:port/debug/pprof/.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub profiling: Option<bool>,
    /// The previous version for which you want to show hidden metrics.
    #[arg(long, value_name = "VERSION")]
    pub show_hidden_metrics_for_version: Option<String>,
    /// Which proxy mode to use: iptables, ipvs, nftables or userspace.
    #[arg(long, value_name = "MODE", value_parser = proxy_mode)]
    pub proxy_mode: Option<ProxyMode>,
    /// The bit of the fwmark space to mark packets requiring SNAT, in [0, 31].
    #[arg(long, value_name = "BIT")]
    pub iptables_masquerade_bit: Option<i32>,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub masquerade_all: Option<bool>,
    /// Accept NodePort connections on localhost (iptables, IPv4).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub iptables_localhost_nodeports: Option<bool>,
    /// The maximum interval of how often iptables rules are refreshed (e.g. '5s', '1m', '2h22m').
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub iptables_sync_period: Option<Duration>,
    /// The minimum period between iptables rule resyncs.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub iptables_min_sync_period: Option<Duration>,
    /// The maximum interval of how often ipvs rules are refreshed.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ipvs_sync_period: Option<Duration>,
    /// The minimum period between ipvs rule resyncs.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ipvs_min_sync_period: Option<Duration>,
    /// The ipvs scheduler type.
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// CIDRs the ipvs proxier should not touch when cleaning up IPVS rules.
    #[arg(long, value_name = "CIDR,...")]
    pub ipvs_exclude_cidrs: Option<String>,
    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub ipvs_strict_arp: Option<bool>,
    /// The timeout for idle IPVS TCP connections, 0 to leave as is.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// The timeout for IPVS TCP connections after receiving a FIN packet.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// The timeout for IPVS UDP packets.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ipvs_udp_timeout: Option<Duration>,
    /// How local traffic is detected: ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix.
    #[arg(long, value_name = "MODE", value_parser = local_mode)]
    pub detect_local_mode: Option<LocalMode>,
    /// The bridge interface name (detect-local-mode BridgeInterface).
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// The interface name prefix (detect-local-mode InterfaceNamePrefix).
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// The CIDR range of the pods in the cluster (a comma-separated dual-stack pair is allowed).
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,
    /// CIDRs or "primary" selecting the node IPs that serve NodePorts.
    #[arg(long, value_name = "CIDR|primary,...")]
    pub nodeport_addresses: Option<String>,
    /// The oom-score-adj value for kube-proxy, in [-1000, 1000].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Maximum number of NAT connections to track per CPU core (0 leaves the limit alone).
    #[arg(long, value_name = "N")]
    pub conntrack_max_per_core: Option<i32>,
    /// Minimum number of conntrack entries to allocate.
    #[arg(long, value_name = "N")]
    pub conntrack_min: Option<i32>,
    /// Idle timeout for established TCP connections (0 leaves as is).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// NAT timeout for TCP connections in CLOSE_WAIT.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Enable liberal mode for tracking TCP packets (nf_conntrack_tcp_be_liberal=1).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = boolean)]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Idle timeout for UNREPLIED UDP connections (0 leaves as is).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub conntrack_udp_timeout: Option<Duration>,
    /// Idle timeout for ASSURED UDP connections (0 leaves as is).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// How often configuration from the apiserver is refreshed.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub config_sync_period: Option<Duration>,
    /// Deprecated: the port of the health server (0 disables); use --healthz-bind-address.
    #[arg(long, value_name = "PORT", hide = true)]
    pub healthz_port: Option<u16>,
    /// Deprecated: the port of the metrics server (0 disables); use --metrics-bind-address.
    #[arg(long, value_name = "PORT", hide = true)]
    pub metrics_port: Option<u16>,
}

/// Splits a comma-separated flag value.
pub(crate) fn split_list(text: &str) -> Vec<String> {
    list(text)
}
