//! [`Scenario`]: one data file of the suite, parsed and validated.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use serde::Deserialize;

use crate::backend::{BackendContext, Capability, LocalTrafficDetector};
use crate::config::{API_VERSION, KIND, KubeProxyConfiguration, ProxyMode};
use crate::error::Error;
use crate::model::{IpFamily, NodeInfo, Protocol, ServiceKey};
use crate::topology::ServiceTopology;
use crate::view::NodeView;

use super::address_plan;
use super::oracle::{self, Destination};
use super::packet::{Origin, Outcome, Packet};
use super::tier::Tier;

/// One packet of a scenario with the outcome upstream gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioPacket {
    /// The packet.
    pub packet: Packet,
    /// What upstream iptables-mode kube-proxy does with it.
    pub expect: Outcome,
    /// Where upstream's other modes differ on purpose (nftables rejects a
    /// known ClusterIP on a port it does not serve; it has no localhost
    /// node ports): the outcome in that mode.
    pub expect_in_mode: BTreeMap<ProxyMode, Outcome>,
    /// The tiers that send it; `None` means every tier.
    pub tiers: Option<Vec<Tier>>,
}

impl ScenarioPacket {
    /// The outcome upstream's `mode` gives the packet.
    pub fn expected_in(&self, mode: ProxyMode) -> &Outcome {
        self.expect_in_mode.get(&mode).unwrap_or(&self.expect)
    }

    /// Whether `tier` sends this packet.
    pub fn runs_in(&self, tier: Tier) -> bool {
        self.tiers.as_ref().is_none_or(|t| t.contains(&tier))
    }
}

/// A parsed scenario: the world (node, configuration, Services,
/// EndpointSlices) and the packets to send through it.
///
/// The file format (YAML):
///
/// ```yaml
/// name: nodeport-local                 # unique; the file is named <name>.yaml
/// description: >                       # what upstream behaviour it pins down
///   externalTrafficPolicy Local ...
/// family: IPv4                         # IPv4 (default) or IPv6
/// requires: [session_affinity]         # extra Capability names (snake_case);
///                                      # the obvious ones are inferred
/// node:                                # optional; defaults to the address plan's node-a
///   name: node-a
///   labels: {topology.kubernetes.io/zone: zone-a}
///   addresses: [10.0.0.1, fd00::1]
///   podCIDRs: [10.244.1.0/24, fd00:244:1::/64]
/// config:                              # a partial KubeProxyConfiguration
///   clusterCIDR: 10.244.0.0/16,fd00:244::/32
/// objects:                             # plain Kubernetes Services and EndpointSlices
///   - apiVersion: v1
///     kind: Service
///     ...
/// packets:
///   - origin: external                 # host | local_pod | external
///     source: 203.0.113.10
///     protocol: TCP                    # TCP (default) | UDP | SCTP
///     destination: 10.0.0.1
///     port: 30080
///     expect:                          # or: dropped | rejected | not_matched
///       forwarded: {endpoints: ["10.244.1.10:8080"], masqueraded: false}
///     expect_in_mode:                  # optional: where upstream's modes differ
///       nftables: rejected
///     tiers: [fake]                    # optional, with a comment saying why
/// ```
///
/// The topology, [`BackendContext`] and [`NodeView`] are built once, when
/// the file is loaded; a file with an invalid object or configuration does
/// not load.
#[derive(Debug, Clone)]
pub struct Scenario {
    name: String,
    description: String,
    family: IpFamily,
    requires: Vec<Capability>,
    context: BackendContext,
    objects: Vec<serde_json::Value>,
    topology: ServiceTopology,
    view: NodeView,
    packets: Vec<ScenarioPacket>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    family: FamilyName,
    #[serde(default)]
    requires: Vec<Capability>,
    #[serde(default)]
    node: NodeSpec,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    objects: Vec<serde_json::Value>,
    packets: Vec<PacketSpec>,
}

#[derive(Deserialize, Default, Clone, Copy)]
enum FamilyName {
    #[default]
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct NodeSpec {
    name: String,
    labels: BTreeMap<String, String>,
    addresses: Vec<IpAddr>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Vec<IpNet>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        let node = address_plan::node();
        NodeSpec {
            name: node.name,
            labels: node.labels,
            addresses: node.addresses,
            pod_cidrs: node.pod_cidrs,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PacketSpec {
    origin: Origin,
    source: IpAddr,
    #[serde(default = "tcp")]
    protocol: Protocol,
    destination: IpAddr,
    port: u16,
    expect: Outcome,
    #[serde(default)]
    expect_in_mode: BTreeMap<ProxyMode, Outcome>,
    #[serde(default)]
    tiers: Option<Vec<Tier>>,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

fn parse_error(file: &str, reason: impl Into<String>) -> Error {
    Error::Parse {
        what: format!("conformance scenario {file}"),
        reason: reason.into(),
    }
}

/// The configuration of a scenario: upstream's defaults, the file's
/// overrides, then the platform defaults (mode iptables), validated.
fn configuration(
    file: &str,
    overrides: Option<serde_json::Value>,
) -> Result<KubeProxyConfiguration, Error> {
    let mut doc = match overrides {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(parse_error(file, "config: must be a mapping")),
    };
    doc.entry("apiVersion")
        .or_insert_with(|| API_VERSION.into());
    doc.entry("kind").or_insert_with(|| KIND.into());
    // JSON is YAML: let the configuration module parse and default it.
    let text = serde_json::Value::Object(doc).to_string();
    let mut config = KubeProxyConfiguration::from_yaml(&text)?;
    config.apply_defaults();
    config.validate()?;
    Ok(config)
}

fn apply_object(
    file: &str,
    index: usize,
    object: serde_json::Value,
    topology: &mut ServiceTopology,
) -> Result<(), Error> {
    let kind = object
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    let applied = match kind.as_str() {
        "Service" => {
            let svc: corev1::Service = serde_json::from_value(object)
                .map_err(|e| parse_error(file, format!("objects[{index}] (Service): {e}")))?;
            topology.apply_service(&svc)
        }
        "EndpointSlice" => {
            let slice: discoveryv1::EndpointSlice = serde_json::from_value(object)
                .map_err(|e| parse_error(file, format!("objects[{index}] (EndpointSlice): {e}")))?;
            topology.apply_endpoint_slice(&slice)
        }
        other => {
            return Err(parse_error(
                file,
                format!("objects[{index}]: kind {other:?} is not Service or EndpointSlice"),
            ));
        }
    };
    match applied.errors.into_iter().next() {
        // A scenario describes a valid world; an invalid field is a typo.
        Some(e) => Err(parse_error(file, format!("objects[{index}]: {e}"))),
        None => Ok(()),
    }
}

impl Scenario {
    /// Parses a scenario file; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<Scenario, Error> {
        let raw: ScenarioFile = serde_saphyr::from_str(text)
            .map_err(|e| parse_error(file, e.without_snippet().to_string()))?;
        let family = match raw.family {
            FamilyName::V4 => IpFamily::V4,
            FamilyName::V6 => IpFamily::V6,
        };
        let node = Arc::new(NodeInfo {
            name: raw.node.name,
            labels: raw.node.labels,
            addresses: raw.node.addresses,
            pod_cidrs: raw.node.pod_cidrs,
        });
        let config = Arc::new(configuration(file, raw.config)?);
        let context = BackendContext::new(config, node.clone(), family)?;
        let mut topology = ServiceTopology::new();
        for (i, object) in raw.objects.iter().cloned().enumerate() {
            apply_object(file, i, object, &mut topology)?;
        }
        let view = NodeView::build(&topology, node, family);
        let packets = raw
            .packets
            .into_iter()
            .map(|p| ScenarioPacket {
                packet: Packet {
                    origin: p.origin,
                    source: p.source,
                    protocol: p.protocol,
                    destination: p.destination,
                    port: p.port,
                },
                expect: p.expect,
                expect_in_mode: p.expect_in_mode,
                tiers: p.tiers,
            })
            .collect();
        Ok(Scenario {
            name: raw.name,
            description: raw.description.trim().to_string(),
            family,
            requires: raw.requires,
            context,
            objects: raw.objects,
            topology,
            view,
            packets,
        })
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What upstream behaviour it pins down.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The IP family of its backend.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The node under test.
    pub fn node(&self) -> &Arc<NodeInfo> {
        &self.context.node
    }

    /// The configuration (defaults plus the scenario's overrides).
    pub fn config(&self) -> &Arc<KubeProxyConfiguration> {
        &self.context.config
    }

    /// The context to build the backend with.
    pub fn context(&self) -> &BackendContext {
        &self.context
    }

    /// The Services and EndpointSlices.
    pub fn topology(&self) -> &ServiceTopology {
        &self.topology
    }

    /// The Services and EndpointSlices as the file gives them (plain
    /// Kubernetes objects, in file order): what a manifest directory or an
    /// API server would hold for this scenario.
    pub fn objects(&self) -> &[serde_json::Value] {
        &self.objects
    }

    /// The scenario's node as the Node object a cluster would hold: name,
    /// labels (its zone), `spec.podCIDRs` and `status.addresses`
    /// (InternalIPs, in order: the first of each family is its primary IP).
    /// What a manifest directory or an API server holds besides
    /// [`Scenario::objects`].
    pub fn node_object(&self) -> serde_json::Value {
        let node = self.node();
        let addresses: Vec<serde_json::Value> = node
            .addresses
            .iter()
            .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip.to_string()}))
            .collect();
        let pod_cidrs: Vec<String> = node.pod_cidrs.iter().map(ToString::to_string).collect();
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": node.labels},
            "spec": {"podCIDRs": pod_cidrs},
            "status": {"addresses": addresses},
        })
    }

    /// Whether the service port `packet` reaches has ClientIP affinity
    /// (real connections from one client then all reach one endpoint).
    pub fn has_affinity(&self, packet: &Packet) -> bool {
        oracle::trace(self.view(), self.context(), packet)
            .service_port
            .and_then(|name| self.view().get(&name).cloned())
            .is_some_and(|v| v.port.session_affinity.is_some())
    }

    /// The node view the backend is synced to.
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    /// Every service the view holds a port of.
    pub fn services(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.view.iter().map(|(n, _)| n.service.clone()).collect();
        keys.dedup();
        keys
    }

    /// The packets with their expected outcomes.
    pub fn packets(&self) -> &[ScenarioPacket] {
        &self.packets
    }

    /// The capabilities the file lists under `requires`.
    pub fn declared_requirements(&self) -> &[Capability] {
        &self.requires
    }

    /// Every capability a backend needs to run all of this scenario: the
    /// [scenario-wide](Self::scenario_requirements) ones plus those of every
    /// packet.
    pub fn requirements(&self) -> Vec<Capability> {
        let mut caps = self.scenario_requirements();
        for p in &self.packets {
            for c in self.packet_requirements(p) {
                if !caps.contains(&c) {
                    caps.push(c);
                }
            }
        }
        caps
    }

    /// What a backend needs to run the scenario at all: the declared
    /// capabilities and the IP family.
    pub fn scenario_requirements(&self) -> Vec<Capability> {
        let mut caps = self.requires.clone();
        if self.family == IpFamily::V6 && !caps.contains(&Capability::Ipv6) {
            caps.push(Capability::Ipv6);
        }
        caps
    }

    /// What a backend needs to send `packet` (beyond the scenario's own
    /// requirements): SCTP, the kind of address it is captured on, source
    /// ranges, session affinity, a `rejected` expectation, an outcome that
    /// depends on local-traffic detection.
    pub fn packet_requirements(&self, packet: &ScenarioPacket) -> Vec<Capability> {
        let mut caps = Vec::new();
        let mut add = |c: Capability| {
            if !caps.contains(&c) {
                caps.push(c);
            }
        };
        let p = packet;
        if p.packet.protocol == Protocol::Sctp {
            add(Capability::Sctp);
        }
        if p.expect == Outcome::Rejected {
            add(Capability::Reject);
        }
        let trace = oracle::trace(&self.view, &self.context, &p.packet);
        let port = trace.service_port.as_ref().and_then(|n| self.view.get(n));
        match trace.destination {
            Some(Destination::ClusterIp) => add(Capability::ClusterIp),
            Some(Destination::NodePort) => add(Capability::NodePort),
            Some(Destination::ExternalIp) => add(Capability::ExternalIp),
            Some(Destination::LoadBalancerIp) => {
                add(Capability::ExternalIp);
                if port.is_some_and(|p| !p.port.load_balancer_source_ranges.is_empty()) {
                    add(Capability::SourceRanges);
                }
            }
            None => {}
        }
        if port.is_some_and(|p| p.port.session_affinity.is_some()) {
            add(Capability::SessionAffinity);
        }
        if trace.used_detector {
            let mut undetected = self.context.clone();
            undetected.local_detector = LocalTrafficDetector::None;
            if oracle::expected(&self.view, &undetected, &p.packet) != trace.outcome {
                add(Capability::DetectLocal);
            }
        }
        caps
    }
}
