use std::sync::Arc;

use ipnet::IpNet;

use super::{CommandLimits, SyncProgress};
use crate::config::{DetectLocal, KubeProxyConfiguration};
use crate::error::Error;
use crate::model::{IpFamily, NodeInfo};

/// How a backend tells traffic from local pods apart, for one family
/// (upstream's `LocalTrafficDetector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTrafficDetector {
    /// Not configured: upstream's no-op detector. ClusterIP traffic is then
    /// masqueraded only with `masqueradeAll`.
    None,
    /// Source address inside the pod CIDR (`ClusterCIDR` and `NodeCIDR` modes).
    Cidr(IpNet),
    /// Arrives on this bridge (`BridgeInterface` mode).
    BridgeInterface(String),
    /// Arrives on an interface with this name prefix (`InterfaceNamePrefix`).
    InterfaceNamePrefix(String),
}

impl LocalTrafficDetector {
    /// Whether a detector is configured.
    pub fn is_some(&self) -> bool {
        !matches!(self, LocalTrafficDetector::None)
    }
}

/// Everything a backend needs to know besides the [`NodeView`](crate::NodeView),
/// derived once from the configuration and the node, for one family.
#[derive(Debug, Clone)]
pub struct BackendContext {
    /// The family the backend serves.
    pub family: IpFamily,
    /// The node.
    pub node: Arc<NodeInfo>,
    /// The whole configuration, for mode-specific settings.
    pub config: Arc<KubeProxyConfiguration>,
    /// The masquerade mark, `1 << masqueradeBit` (`0x4000` by default).
    pub masquerade_mark: u32,
    /// `masqueradeAll`: masquerade every ClusterIP packet.
    pub masquerade_all: bool,
    /// The local-traffic detector for this family.
    pub local_detector: LocalTrafficDetector,
    /// Where node ports are served: `None` means every local address of the
    /// family; otherwise only addresses in these networks (`primary` is
    /// resolved to the node's primary IP).
    pub node_port_cidrs: Option<Vec<IpNet>>,
    /// iptables `localhostNodePorts` (IPv4 only).
    pub localhost_node_ports: bool,
    /// How long an external command may run (the default: 30 s), and who
    /// counts the ones killed for running longer. The runtime sets it from
    /// `RuntimeOptions::commands` (feature `runtime`).
    pub commands: CommandLimits,
    /// Where a backend that programs a sync in steps reports the service
    /// ports done so far (see [`SyncProgress`]); the runtime reads it.
    pub progress: Arc<SyncProgress>,
}

impl BackendContext {
    /// Derives the context of `family` from `config` and `node`.
    pub fn new(
        config: Arc<KubeProxyConfiguration>,
        node: Arc<NodeInfo>,
        family: IpFamily,
    ) -> Result<Self, Error> {
        let bit = config.masquerade_bit();
        if bit > 31 {
            return Err(Error::config(
                "iptables.masqueradeBit",
                format!("{bit} is not in [0, 31]"),
            ));
        }
        let local_detector = match config.detect_local()? {
            DetectLocal::ClusterCidr(cidrs) => cidrs
                .into_iter()
                .find(|n| IpFamily::of_net(n) == family)
                .map_or(LocalTrafficDetector::None, LocalTrafficDetector::Cidr),
            DetectLocal::NodeCidr => node
                .pod_cidr(family)
                .map_or(LocalTrafficDetector::None, LocalTrafficDetector::Cidr),
            DetectLocal::BridgeInterface(name) => LocalTrafficDetector::BridgeInterface(name),
            DetectLocal::InterfaceNamePrefix(prefix) => {
                LocalTrafficDetector::InterfaceNamePrefix(prefix)
            }
            DetectLocal::None => LocalTrafficDetector::None,
        };
        let npa = config.node_port_addresses()?;
        let node_port_cidrs = npa.networks_for(family, node.primary_ip(family));
        Ok(BackendContext {
            family,
            masquerade_mark: 1u32 << bit,
            masquerade_all: config.masquerade_all(),
            // Upstream: IPv4 only, and only when node ports are served on 127.0.0.1.
            localhost_node_ports: config.localhost_node_ports()
                && family == IpFamily::V4
                && npa.contains_loopback(family),
            local_detector,
            node_port_cidrs,
            node,
            config,
            commands: CommandLimits::default(),
            progress: Arc::default(),
        })
    }

    /// The same context with `commands` as the limits of external commands.
    pub fn with_commands(mut self, commands: CommandLimits) -> Self {
        self.commands = commands;
        self
    }

    /// The context of the default configuration, for tests and examples.
    pub fn for_tests(family: IpFamily, node: Arc<NodeInfo>) -> Self {
        BackendContext {
            family,
            node,
            config: Arc::new(KubeProxyConfiguration::default()),
            masquerade_mark: 0x4000,
            masquerade_all: false,
            local_detector: LocalTrafficDetector::None,
            node_port_cidrs: None,
            localhost_node_ports: family == IpFamily::V4,
            commands: CommandLimits::default(),
            progress: Arc::default(),
        }
    }
}
