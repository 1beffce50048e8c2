//! The top-level `KubeProxyConfiguration` document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::component_base::{ClientConnectionConfiguration, LoggingConfiguration};
use super::duration::Duration;
use super::fields;
use super::mode::{LocalMode, ProxyMode};
use super::sections::{
    ConntrackConfiguration, DetectLocalConfiguration, IptablesConfiguration, IpvsConfiguration,
    NftablesConfiguration, UserspaceConfiguration, WinkernelConfiguration,
};

/// The `apiVersion` of the configuration file.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The `kind` of the configuration file.
pub const KIND: &str = "KubeProxyConfiguration";

/// Upstream's `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`,
/// field for field, plus our [`userspace`](Self::userspace) section.
///
/// Field names are upstream's camelCase JSON names; fields are declared in
/// the alphabetical order upstream writes them in, so that
/// [`to_yaml`](Self::to_yaml) of the defaults reproduces
/// `kube-proxy --write-config-to` (plus the `userspace` section).
///
/// [`Default`] is upstream's defaulted configuration
/// (`SetDefaults_KubeProxyConfiguration`); the platform defaults that
/// depend on the mode are applied by [`apply_defaults`](Self::apply_defaults)
/// and read through the typed accessors (`effective_mode`, `detect_local`,
/// `node_port_addresses`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default = "KubeProxyConfiguration::zero",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub struct KubeProxyConfiguration {
    /// `apiVersion`: always [`API_VERSION`].
    pub api_version: String,
    /// `bindAddress`: the node's primary IP override (default `0.0.0.0`);
    /// its family picks the healthz and metrics defaults.
    pub bind_address: String,
    /// `bindAddressHardFail`: exit if the healthz or metrics server cannot bind.
    pub bind_address_hard_fail: bool,
    /// `clientConnection`: how to reach the API server.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub client_connection: ClientConnectionConfiguration,
    /// `clusterCIDR`: the pods' CIDR, or a comma-separated dual-stack pair;
    /// used by `detectLocalMode: ClusterCIDR` (see
    /// [`cluster_cidrs`](Self::cluster_cidrs)).
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// `configSyncPeriod`: the informers' resync period (default 15m).
    #[serde(deserialize_with = "fields::config_sync_period")]
    pub config_sync_period: Duration,
    /// `conntrack`: conntrack sysctls.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub conntrack: ConntrackConfiguration,
    /// `detectLocal`: settings of the interface-based local-traffic modes.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub detect_local: DetectLocalConfiguration,
    /// `detectLocalMode`: how local pod traffic is detected; `None` (the
    /// empty string) means `ClusterCIDR`.
    #[serde(
        deserialize_with = "fields::detect_local_mode",
        serialize_with = "fields::empty_if_none"
    )]
    pub detect_local_mode: Option<LocalMode>,
    /// `enableProfiling`: serve `/debug/pprof` on the metrics server.
    pub enable_profiling: bool,
    /// `featureGates`: feature gate overrides (omitted when empty).
    #[serde(
        deserialize_with = "fields::null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub feature_gates: BTreeMap<String, bool>,
    /// `healthzBindAddress`: `ip:port` of the health server (default
    /// `0.0.0.0:10256`, `[::]:10256` for an IPv6 `bindAddress`); empty
    /// disables it. A bare IP gets port 10256.
    pub healthz_bind_address: String,
    /// `hostnameOverride`: the node name to use instead of the hostname.
    pub hostname_override: String,
    /// `iptables`: the iptables section (also ipvs's masquerade settings).
    #[serde(deserialize_with = "fields::null_as_default")]
    pub iptables: IptablesConfiguration,
    /// `ipvs`: the ipvs section.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub ipvs: IpvsConfiguration,
    /// `kind`: always [`KIND`].
    pub kind: String,
    /// `logging`: component-base logging options.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub logging: LoggingConfiguration,
    /// `metricsBindAddress`: `ip:port` of the metrics server (default
    /// `127.0.0.1:10249`, `[::1]:10249` for an IPv6 `bindAddress`); empty
    /// disables it. A bare IP gets port 10249.
    pub metrics_bind_address: String,
    /// `mode`: the proxy mode; `None` (the empty string) means the platform
    /// default, iptables (see [`effective_mode`](Self::effective_mode)).
    #[serde(
        deserialize_with = "fields::mode",
        serialize_with = "fields::empty_if_none"
    )]
    pub mode: Option<ProxyMode>,
    /// `nftables`: the nftables section.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub nftables: NftablesConfiguration,
    /// `nodePortAddresses`: CIDRs and keywords (`primary`, `localhost`,
    /// `all`) selecting the node IPs that serve NodePorts; `None`/empty means
    /// all local IPs, except in nftables mode where it means `primary` (see
    /// [`node_port_addresses`](Self::node_port_addresses)).
    pub node_port_addresses: Option<Vec<String>>,
    /// `oomScoreAdj`: the process's OOM score adjustment, in [-1000, 1000]
    /// (default -999).
    pub oom_score_adj: Option<i32>,
    /// `portRange`: unused upstream leftover of userspace mode
    /// (`"begin-end"`, `"begin+offset"` or a single port); validated only.
    pub port_range: String,
    /// `showHiddenMetricsForVersion`: a `major.minor` version whose hidden
    /// metrics are shown.
    pub show_hidden_metrics_for_version: String,
    /// `userspace`: **ours**, the userspace mode's settings; upstream has no
    /// such section.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub userspace: UserspaceConfiguration,
    /// `windowsRunAsService`: Windows service integration (omitted when false).
    #[serde(skip_serializing_if = "fields::is_false")]
    pub windows_run_as_service: bool,
    /// `winkernel`: Windows HNS settings.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub winkernel: WinkernelConfiguration,
}

impl KubeProxyConfiguration {
    /// Every field at Go's zero value: what a document's missing fields
    /// start as, before upstream's defaulting runs.
    pub(super) fn zero() -> Self {
        KubeProxyConfiguration {
            api_version: String::new(),
            bind_address: String::new(),
            bind_address_hard_fail: false,
            client_connection: ClientConnectionConfiguration::default(),
            cluster_cidr: String::new(),
            config_sync_period: Duration::ZERO,
            conntrack: ConntrackConfiguration::default(),
            detect_local: DetectLocalConfiguration::default(),
            detect_local_mode: None,
            enable_profiling: false,
            feature_gates: BTreeMap::new(),
            healthz_bind_address: String::new(),
            hostname_override: String::new(),
            iptables: IptablesConfiguration::default(),
            ipvs: IpvsConfiguration::default(),
            kind: String::new(),
            logging: LoggingConfiguration::default(),
            metrics_bind_address: String::new(),
            mode: None,
            nftables: NftablesConfiguration::default(),
            node_port_addresses: None,
            oom_score_adj: None,
            port_range: String::new(),
            show_hidden_metrics_for_version: String::new(),
            userspace: UserspaceConfiguration::default(),
            windows_run_as_service: false,
            winkernel: WinkernelConfiguration::default(),
        }
    }
}
