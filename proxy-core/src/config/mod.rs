//! Upstream's `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`:
//! types, defaults, loading, validation and typed accessors.
//!
//! ```text
//! let mut config = KubeProxyConfiguration::load("/etc/kube-proxy/config.yaml")?; // + SetDefaults
//! // ... flag overrides ...
//! config.apply_defaults();   // platformApplyDefaults: mode, nodePortAddresses, detectLocalMode
//! config.validate()?;        // upstream's validation, all errors at once
//! let mode = config.effective_mode();
//! ```
//!
//! Differences from upstream, all deliberate:
//!
//! - A `userspace` section (`syncPeriod`, `minSyncPeriod`, `udpIdleTimeout`)
//!   configures our userspace mode; upstream has no such section.
//! - `ProxyMode::Userspace` is a valid mode on Linux.
//! - Field paths in errors are the v1alpha1 JSON paths
//!   (`iptables.masqueradeBit`), not upstream's internal Go names.
//! - An empty `metricsBindAddress` disables the metrics server instead of
//!   failing validation; `featureGates` names are not checked; only the
//!   format of `showHiddenMetricsForVersion` is checked.
//! - `clusterCIDR` entries are trimmed of whitespace.
//! - `nodePortAddresses` accepts the newer keywords `localhost` and `all`,
//!   combined freely with CIDRs and `primary`.

mod accessors;
mod component_base;
mod defaults;
mod detect_local;
mod duration;
mod fields;
mod load;
mod mode;
mod net;
mod node_port_addresses;
mod sections;
mod types;
mod validate;

pub use accessors::DEFAULT_IPVS_SCHEDULER;
pub use component_base::{
    ClientConnectionConfiguration, FormatOptions, LoggingConfiguration, OutputRoutingOptions,
    VModuleItem,
};
pub use defaults::{
    DEFAULT_HEALTHZ_PORT, DEFAULT_MASQUERADE_BIT, DEFAULT_METRICS_PORT, DEFAULT_OOM_SCORE_ADJ,
};
pub use detect_local::DetectLocal;
pub use duration::Duration;
pub use mode::{LocalMode, ProxyMode};
pub use node_port_addresses::NodePortAddresses;
pub use sections::{
    ConntrackConfiguration, DetectLocalConfiguration, IptablesConfiguration, IpvsConfiguration,
    NftablesConfiguration, UserspaceConfiguration, WinkernelConfiguration,
};
pub use types::{API_VERSION, KIND, KubeProxyConfiguration};
pub use validate::IPVS_SCHEDULERS;
